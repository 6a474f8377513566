"""The index: SQLite as the source of truth (documents, chunks, BM25 terms, vectors), the vector search derived
from it (FAISS or Milvus), and the embedders that make the vectors."""
