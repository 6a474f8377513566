"""rag-zh: question answering and summarisation over Chinese documents.

Where a question flows: :mod:`rag.loaders` (files) → :mod:`rag.cleaning` → :mod:`rag.chunking` →
:mod:`rag.embeddings` → :mod:`rag.store` (SQLite + FAISS + BM25) by way of :mod:`rag.ingest`; then
:mod:`rag.retrieve` answers searches. :mod:`rag.cli` is the ``rag`` command; :mod:`rag.config` holds settings.
"""

__version__ = "0.1.0"
