"""A trained extractive reader: it points at the answer span in the passages, or says none holds it.

The reader is a small encoder with a start/end head (SQuAD style). A question and each passage become windows
``<s> question </s></s> passage piece </s>``; every window yields its best span and the score of "no answer"
(the ``<s>`` position); the answer is the span whose margin over "no answer" is largest, and the reader abstains
when that margin is below the threshold calibrated at training time (``train/train_reader.py``).

Text is read in its matching form (:func:`rag.normalize.normalize`: Simplified, half-width), so a Traditional
question over a Traditional passage reads as the Simplified one; spans map back to the original characters.

Two backends, chosen from :data:`BACKENDS` by what the model directory holds: ``model.onnx`` (onnxruntime; the
reader shipped in ``rag/data/reader``, int8) or a transformers ``AutoModelForQuestionAnswering`` directory
(torch; e.g. a CMRC-fine-tuned RoBERTa a user brings).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..checksums import file_sha256
from ..config import Settings
from ..normalize import normalize
from .extractive import Extraction, question_type
from .sentences import PassageText, ScoredSentence

log = logging.getLogger(__name__)

SHIPPED_READER = Path(__file__).resolve().parent.parent / "data" / "reader"


@dataclass(frozen=True)
class ReaderSettings:
    """How a reader cuts its input and decodes spans (stored in the model's ``reader.json``)."""

    max_length: int = 256
    overlap: int = 64
    max_question_tokens: int = 64
    max_answer_tokens: int = 30
    threshold: float = 0.0  # abstain when the best span's margin over "no answer" is below this
    batch_size: int = 16


@dataclass(frozen=True)
class Window:
    """One model input: the question and a piece of one passage."""

    passage: int
    input_ids: list[int]
    context_start: int  # position of the first passage token in input_ids
    offsets: list[tuple[int, int]]  # character span, in the read text, of each passage token


@dataclass(frozen=True)
class Span:
    """The reader's best answer in one set of passages."""

    passage: int  # index into the passages read
    start: int  # character span in that passage's original text
    end: int
    text: str
    score: float  # start + end logit
    margin: float  # score minus the window's "no answer" score

    def abstains(self, threshold: float) -> bool:
        """Whether the reader would rather say no passage holds the answer."""
        return self.margin < threshold


class Tokenize(Protocol):
    """What windows need of a tokenizer: ids and character offsets, without special tokens."""

    def __call__(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]: ...


@dataclass(frozen=True)
class Specials:
    """The ids of the marker tokens in a model's vocabulary."""

    cls: int
    sep: int
    pad: int
    double_sep: bool = True  # XLM-R and RoBERTa write </s></s> between the pair; BERT one [SEP]


def build_windows(
    question_ids: list[int],
    passages: Sequence[tuple[list[int], list[tuple[int, int]]]],
    specials: Specials,
    settings: ReaderSettings,
) -> list[Window]:
    """Cut each tokenised passage into overlapping windows that fit beside the question."""
    q = question_ids[: settings.max_question_tokens]
    head = [specials.cls, *q, specials.sep] + ([specials.sep] if specials.double_sep else [])
    room = max(8, settings.max_length - len(head) - 1)
    step = max(1, room - settings.overlap)
    windows = []
    for index, (ids, offsets) in enumerate(passages):
        start = 0
        while True:
            end = min(start + room, len(ids))
            windows.append(Window(index, head + ids[start:end] + [specials.sep], len(head), offsets[start:end]))
            if end >= len(ids):
                break
            start += step
    return windows


def token_targets(window: Window, answer_start: int, answer_end: int) -> tuple[int, int]:
    """Training targets: the positions of the answer's first and last tokens, or (0, 0) when the window does not
    hold the whole answer."""
    offsets = window.offsets
    if not offsets or answer_start < offsets[0][0] or answer_end > offsets[-1][1]:
        return 0, 0
    first = last = None
    for i, (a, b) in enumerate(offsets):
        if first is None and b > answer_start:
            first = i
        if a < answer_end:
            last = i
    if first is None or last is None or last < first:
        return 0, 0
    return window.context_start + first, window.context_start + last


def pad_batch(windows: Sequence[Window], pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Input ids and attention mask, padded to the longest window."""
    width = max(len(w.input_ids) for w in windows)
    ids = np.full((len(windows), width), pad, dtype=np.int64)
    mask = np.zeros((len(windows), width), dtype=np.int64)
    for row, window in enumerate(windows):
        ids[row, : len(window.input_ids)] = window.input_ids
        mask[row, : len(window.input_ids)] = 1
    return ids, mask


def best_span(window: Window, start_logits: np.ndarray, end_logits: np.ndarray, max_answer_tokens: int,
              top: int = 20) -> tuple[int, int, float, float] | None:
    """(first, last) passage-token indexes of the best span in one window, its score and its margin over the
    window's "no answer" score."""
    n = len(window.offsets)
    if n == 0:
        return None
    c = window.context_start
    starts = start_logits[c : c + n]
    ends = end_logits[c : c + n]
    null = float(start_logits[0] + end_logits[0])
    best = None
    for i in np.argsort(-starts)[:top]:
        for j in np.argsort(-ends)[:top]:
            if j < i or j - i + 1 > max_answer_tokens:
                continue
            score = float(starts[i] + ends[j])
            if best is None or score > best[2]:
                best = (int(i), int(j), score, score - null)
    return best


class Backend(Protocol):
    """Start and end logits for a padded batch."""

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def _onnx_backend(directory: Path, threads: int) -> Backend:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(directory / "model.onnx"), options, providers=["CPUExecutionProvider"])

    def run(ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        start, end = session.run(["start_logits", "end_logits"], {"input_ids": ids, "attention_mask": mask})
        return start, end

    return run


def _transformers_backend(directory: Path, threads: int) -> Backend:
    import torch
    from transformers import AutoModelForQuestionAnswering

    if threads:
        torch.set_num_threads(threads)
    model = AutoModelForQuestionAnswering.from_pretrained(str(directory)).eval()

    def run(ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
        return out.start_logits.float().numpy(), out.end_logits.float().numpy()

    return run


# What a model directory holds → how to run it.
BACKENDS = {"model.onnx": _onnx_backend, "config.json": _transformers_backend}


class ReaderError(RuntimeError):
    """The reader model is missing, damaged or unusable."""


def verify_checksums(directory: Path) -> None:
    """Check every file listed in ``SHA256SUMS`` (when the directory has one) before anything is loaded."""
    sums = directory / "SHA256SUMS"
    if not sums.exists():
        return
    for line in sums.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        digest, name = line.split(maxsplit=1)
        path = directory / name.strip().lstrip("*")
        if not path.is_file():
            raise ReaderError(f"reader model file missing: {path}")
        if file_sha256(path) != digest:
            raise ReaderError(f"reader model file damaged (sha256 mismatch): {path}")


class Reader:
    """A loaded reader model: ``read(question, passages)`` returns the best :class:`Span` or ``None``."""

    def __init__(self, directory: str | Path | None = None, threads: int = 0) -> None:
        self.directory = Path(directory) if directory else SHIPPED_READER
        if not self.directory.is_dir():
            raise ReaderError(f"no reader model at {self.directory}")
        verify_checksums(self.directory)
        kind = next((name for name in BACKENDS if (self.directory / name).exists()), None)
        if kind is None:
            raise ReaderError(f"{self.directory} holds neither model.onnx nor a transformers config.json")
        config_path = self.directory / "reader.json"
        stored = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
        known = ReaderSettings.__dataclass_fields__
        self.settings = ReaderSettings(**{k: v for k, v in stored.get("settings", {}).items() if k in known})
        self.name = stored.get("name", self.directory.name)
        self._tokenizer, self.specials = _load_tokenizer(self.directory)
        try:
            self._run = BACKENDS[kind](self.directory, threads)
        except Exception as exc:  # a damaged or foreign file: say which, never a traceback
            raise ReaderError(f"cannot load reader model {self.directory}: {exc}") from exc
        self._lock = threading.Lock()

    def tokenize(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Token ids and character offsets of each text, without special tokens."""
        return [(e.ids, e.offsets) for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]

    def logits(self, windows: Sequence[Window]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Start and end logits of each window."""
        out = []
        for i in range(0, len(windows), self.settings.batch_size):
            batch = windows[i : i + self.settings.batch_size]
            ids, mask = pad_batch(batch, self.specials.pad)
            with self._lock:  # one session, many request threads
                start, end = self._run(ids, mask)
            out.extend(zip(start, end, strict=True))
        return out

    def read(self, question: str, passages: Sequence[str]) -> Span | None:
        """The best span across ``passages`` (original text; read in matching form), or ``None`` when no passage
        has text. Whether to abstain is the caller's: compare ``Span.margin`` with ``settings.threshold``."""
        read_texts = []
        for text in passages:
            folded = normalize(text)
            read_texts.append(folded if len(folded) == len(text) else text)  # offsets must map back
        encoded = self.tokenize([normalize(question), *read_texts])
        windows = build_windows(encoded[0][0], encoded[1:], self.specials, self.settings)
        if not windows:
            return None
        return pick_span(windows, self.logits(windows), passages, self.settings.max_answer_tokens)


def pick_span(windows: Sequence[Window], logits: Sequence[tuple[np.ndarray, np.ndarray]], texts: Sequence[str],
              max_answer_tokens: int) -> Span | None:
    """The span with the largest margin over "no answer" across ``windows``, as text of ``texts`` (indexed by
    :attr:`Window.passage`), whitespace trimmed; ``None`` when no window has a non-blank span."""
    best: Span | None = None
    for window, (start, end) in zip(windows, logits, strict=True):
        found = best_span(window, start, end, max_answer_tokens)
        if found is None:
            continue
        first, last, score, margin = found
        if best is not None and margin <= best.margin:
            continue
        a, b = window.offsets[first][0], window.offsets[last][1]
        original = texts[window.passage]
        text = original[a:b].strip()
        if not text:
            continue
        a += len(original[a:b]) - len(original[a:b].lstrip())
        best = Span(window.passage, a, a + len(text), text, score, margin)
    return best


def _load_tokenizer(directory: Path):
    from tokenizers import Tokenizer

    path = directory / "tokenizer.json"
    if not path.exists():
        raise ReaderError(f"{directory} has no tokenizer.json")
    tokenizer = Tokenizer.from_file(str(path))

    def token(*names: str) -> int | None:
        return next((i for n in names if (i := tokenizer.token_to_id(n)) is not None), None)

    cls, sep, pad = token("<s>", "[CLS]"), token("</s>", "[SEP]"), token("<pad>", "[PAD]")
    if cls is None or sep is None:
        raise ReaderError(f"{path}: cannot find the start and separator tokens")
    return tokenizer, Specials(cls, sep, pad if pad is not None else 0, double_sep=token("<s>") is not None)


def read_extraction(reader: Reader, question: str, passages: Sequence[PassageText],
                    ranked: Sequence[ScoredSentence]) -> Extraction | None:
    """The reader's span as an :class:`Extraction`: its evidence is the sentence the span starts in, whose
    coverage of the question (from ``ranked``) the answerer's coverage gate still checks. A span in a sentence
    ``ranked`` left out (a question, an instruction to the reader) covers nothing."""
    span = reader.read(question, [p.text for p in passages])
    if span is None:
        return None
    text = passages[span.passage].text
    sentence = next((s for s in ranked if s.rank == span.passage and s.start <= span.start < s.end), None)
    start, end = (sentence.start, max(sentence.end, span.end)) if sentence else (span.start, span.end)
    return Extraction(answer=span.text, evidence=text[start:end], passage=passages[span.passage].index,
                      answer_start=span.start, answer_end=span.end, evidence_start=start, evidence_end=end,
                      kind=question_type(question)[0], coverage=max(0.0, sentence.coverage) if sentence else 0.0,
                      alignment=1.0, typed=True, margin=span.margin)


def load_reader(settings: Settings) -> Reader | None:
    """The reader ``settings.reader_model`` names: ``builtin`` (the one shipped), a directory, or empty (or
    ``none``) for the hand-written extractor. A reader that cannot be loaded is reported once and the extractor
    used instead."""
    name = settings.reader_model.strip()
    if not name or name.lower() == "none":
        return None
    try:
        return Reader(None if name == "builtin" else name, threads=settings.reader_threads)
    except (ReaderError, ImportError) as exc:
        log.warning("%s; answering with the hand-written extractor", exc)
        return None
