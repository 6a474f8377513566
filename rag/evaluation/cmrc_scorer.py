"""The CMRC 2018 official answer scorer (F1 and EM), re-implemented for Python 3.

It follows ``squad-style-data/cmrc2018_evaluate.py`` (version "v5 - special") of the CMRC 2018 repository
(github.com/ymcui/cmrc2018), the scorer DRCD results are reported with too, rule for rule:

- **Segmentation** (``mixed_segmentation``): the text is lower-cased and stripped; each Han character in
  U+4E00–U+9FA5 is one token; every other run of characters (Latin, digits, other punctuation, whitespace, Han
  characters outside that block) is split into words by nltk's word tokenizer, so "1621", "70.99" and "40km"
  are one token each.
- **Punctuation**: only the 33 marks of :data:`PUNCTUATION` are dropped. One of them, "……", is two characters
  and the scorer compares single characters, so it never matches: a lone "…" stays, as it does there. ASCII
  ``( ) , . % & < > ! ?`` and Chinese marks outside the list (【】‘ ") stay too. A dropped mark does not end a
  run of non-Han characters ("a-b" is the one token "ab"); a Han character does.
- **F1**: precision and recall of the longest *contiguous* run of tokens the answer and the gold answer share
  (not the bag of shared tokens), the maximum over the gold answers.
- **EM**: the answer equals a gold answer after lower-casing, stripping and dropping the 33 marks (inner
  whitespace counts).
- **Averages**: 100 × the mean over every gold question; a question without a prediction scores 0 and is
  counted as skipped.

The official script calls ``nltk.word_tokenize(s)``, whose sentence splitter needs nltk's downloaded ``punkt``
data; here it is ``nltk.word_tokenize(s, preserve_line=True)``, the same word split without the sentence step,
which needs no data. The two can differ only where punkt would cut a non-Han run into sentences (a period, a
space, more text): each sentence's final period is then split off. nltk's word split itself changed in 3.5: dashes
(U+2012–2015) and runs of dots became tokens of their own, so "2021—2025" is three tokens here and one for the
official script under Python 2 (nltk ≤ 3.4.5). Checked against that script on exported CMRC dev, CRUD and sample
runs: identical F1 and EM but for answers holding such a dash (eval/RESULTS.md).

How it differs from :func:`rag.evaluation.metrics.char_f1` (the character-bag F1, kept as ``char_f1`` in
reports): that one makes every character a token, counts shared characters in any order, drops all punctuation
and folds full-width and Traditional characters, so it scores "40" against "40km" 0.667 where this scores 0.
Folding is available here as an explicit option (:func:`fold_script`), off for the official figure.

Run ``python -m rag.evaluation.cmrc_scorer GOLD.json PREDICTIONS.json`` on files in the official formats
(those ``rag eval qa --export-official`` writes) to get the official script's output line.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..normalize import to_simplified

log = logging.getLogger(__name__)

#: The official scorer's ``sp_char`` list, in its order: the only marks it drops.
PUNCTUATION: tuple[str, ...] = (
    "-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=",
    "，", "。", "：", "？", "！", "“", "”", "；", "’", "《", "》", "……", "·", "、",
    "「", "」", "（", "）", "－", "～", "『", "』",
)
_PUNCTUATION = frozenset(PUNCTUATION)  # single characters are looked up; "……" can never be one
_HAN = re.compile("[\u4e00-\u9fa5]")

# Full-width Latin letters and digits and the ideographic space → half-width. Full-width punctuation is left
# alone: the official list names （ ） ， ： ！ ？ and drops them, where their ASCII forms would stay.
_WIDTH = {code: code - 0xFEE0 for code in (*range(0xFF10, 0xFF1A), *range(0xFF21, 0xFF3B), *range(0xFF41, 0xFF5B))}
_WIDTH[0x3000] = 0x20


def _word_split(text: str) -> list[str]:
    """nltk's Treebank-style word split of one non-Han run (imported late: nltk takes a moment to load)."""
    from nltk import word_tokenize

    return word_tokenize(text, preserve_line=True)


def mixed_segmentation(text: str, drop_punctuation: bool = False) -> list[str]:
    """The official tokens of ``text``: lower-cased and stripped, one token per Han character (U+4E00–U+9FA5)
    and per listed mark, nltk words for every other run; with ``drop_punctuation`` the listed marks are skipped
    (without ending the run they stand in)."""
    tokens: list[str] = []
    run = ""
    for char in text.lower().strip():
        if drop_punctuation and char in _PUNCTUATION:
            continue
        if _HAN.match(char) or char in _PUNCTUATION:
            if run:
                tokens.extend(_word_split(run))
                run = ""
            tokens.append(char)
        else:
            run += char
    if run:
        tokens.extend(_word_split(run))
    return tokens


def remove_punctuation(text: str) -> str:
    """``text`` lower-cased and stripped, the listed marks dropped: the form EM compares."""
    return "".join(char for char in text.lower().strip() if char not in _PUNCTUATION)


def longest_common_run(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest contiguous run of tokens that ``a`` and ``b`` share (longest common substring)."""
    best = 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            if x == y:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def fold_script(text: str) -> str:
    """Traditional → Simplified (OpenCC t2s) and full-width letters and digits → half-width: the option that lets
    an answer in the other script match its gold answer. Full-width punctuation is kept, so the official list
    still drops it."""
    return to_simplified(text.translate(_WIDTH))


def f1_score(prediction: str, golds: Iterable[str]) -> float:
    """Official F1 (0–1) of one answer: the longest common run of tokens against each gold answer, the best one.
    No gold answer gives 0 (the official script cannot score such a question at all)."""
    predicted = mixed_segmentation(prediction, drop_punctuation=True)
    best = 0.0
    for gold in golds:
        reference = mixed_segmentation(gold, drop_punctuation=True)
        common = longest_common_run(reference, predicted)
        if common:
            precision, recall = common / len(predicted), common / len(reference)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def em_score(prediction: str, golds: Iterable[str]) -> float:
    """Official EM (0 or 1): the answer equals a gold answer once both are lower-cased, stripped and the listed
    marks are dropped."""
    predicted = remove_punctuation(prediction)
    return float(any(remove_punctuation(gold) == predicted for gold in golds))


@dataclass
class OfficialScores:
    """What the official script prints: F1 and EM in percent over ``total`` questions, ``skipped`` of them without
    a prediction (scored 0)."""

    f1: float
    em: float
    total: int
    skipped: int

    def line(self, prediction_file: str) -> dict[str, Any]:
        """The official script's output object, numbers as its three-decimal strings."""
        return {"AVERAGE": f"{(self.em + self.f1) / 2:.3f}", "F1": f"{self.f1:.3f}", "EM": f"{self.em:.3f}",
                "TOTAL": self.total, "SKIP": self.skipped, "FILE": prediction_file}


def gold_questions(ground_truth: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """``(id, gold answers)`` of every question of a SQuAD-style ground-truth object (``data`` → ``paragraphs`` →
    ``qas``), ids stripped as the official script strips them."""
    return [(str(qa["id"]).strip(), [str(a["text"]) for a in qa["answers"]])
            for article in ground_truth["data"] for paragraph in article["paragraphs"] for qa in paragraph["qas"]]


def score(ground_truth: Mapping[str, Any], predictions: Mapping[str, Any], fold: bool = False) -> OfficialScores:
    """Official F1 and EM of ``predictions`` (``{id: answer}``) against ``ground_truth``; ``fold`` applies
    :func:`fold_script` to both sides first (not part of the official scorer)."""
    questions = gold_questions(ground_truth)
    f1 = em = 0.0
    skipped = 0
    for qid, golds in questions:
        if qid not in predictions:
            log.warning("no prediction for question %s (scored 0)", qid)
            skipped += 1
            continue
        answer = str(predictions[qid])
        if fold:
            answer, golds = fold_script(answer), [fold_script(g) for g in golds]
        f1 += f1_score(answer, golds)
        em += em_score(answer, golds)
    total = len(questions)
    return OfficialScores(f1=100 * f1 / total if total else 0.0, em=100 * em / total if total else 0.0,
                          total=total, skipped=skipped)


def ground_truth_object(questions: Iterable[tuple[str, str, Sequence[str]]]) -> dict[str, Any]:
    """A ground-truth object in the format the official script reads, from ``(id, question, gold answers)``:
    one article, one paragraph (the script reads no context), the questions in order."""
    qas = [{"id": qid, "question": question, "answers": [{"text": text} for text in answers]}
           for qid, question, answers in questions]
    return {"version": "rag-zh export", "data": [{"title": "", "paragraphs": [{"context": "", "qas": qas}]}]}


def write_official_files(out_dir: Path, questions: Sequence[tuple[str, str, Sequence[str]]],
                         predictions: Mapping[str, str]) -> tuple[Path, Path]:
    """Write ``ground_truth.json`` and ``predictions.json`` into ``out_dir`` for the official script; returns
    their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    gold_path, prediction_path = out_dir / "ground_truth.json", out_dir / "predictions.json"
    gold_path.write_text(json.dumps(ground_truth_object(questions), ensure_ascii=False, indent=1), encoding="utf-8")
    prediction_path.write_text(json.dumps(dict(predictions), ensure_ascii=False, indent=1), encoding="utf-8")
    return gold_path, prediction_path


def main(argv: Sequence[str] | None = None) -> int:
    """Score official-format files and print the official script's output line (JSON)."""
    parser = argparse.ArgumentParser(prog="python -m rag.evaluation.cmrc_scorer",
                                     description="CMRC 2018 official F1/EM of a prediction file ({id: answer}) "
                                     "against a SQuAD-style ground-truth file.")
    parser.add_argument("dataset_file", help="ground truth ({\"data\": [{\"paragraphs\": [{\"qas\": ...}]}]})")
    parser.add_argument("prediction_file", help="predictions ({id: answer})")
    parser.add_argument("--fold-script", action="store_true",
                        help="fold Traditional to Simplified and full-width letters/digits first (not official)")
    args = parser.parse_args(argv)
    try:
        ground_truth = json.loads(Path(args.dataset_file).read_text(encoding="utf-8"))
        predictions = json.loads(Path(args.prediction_file).read_text(encoding="utf-8"))
        result = score(ground_truth, predictions, fold=args.fold_script)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"cmrc_scorer: error: {exc!r}", file=sys.stderr)
        return 2
    print(json.dumps(result.line(args.prediction_file), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
