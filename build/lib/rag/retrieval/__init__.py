"""Retrieval: hybrid search (dense, chunk and document BM25, wording) fused, deduplicated, optionally reranked."""
