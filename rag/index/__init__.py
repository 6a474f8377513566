"""The index: a database as the source of truth (documents, chunks, BM25 terms, vectors), the vector search derived
from it (FAISS or Milvus), and the embedders that make the vectors.

:mod:`.store` says what a store does (:class:`~rag.index.store.IndexStore`) and which one opens a folder; the
stores are :mod:`.sqlite_store` (``index.sqlite``, its schema and upgrades in :mod:`.schema`) and :mod:`.postgres`,
both over the SQL of :mod:`.sql_store`, with :mod:`.maintenance` (check, copy); :mod:`.records` are the rows they
take and give, :mod:`.errors` what goes wrong."""
