"""The peer pipeline the benchmark compares against: LangChain's FAISS vector store.

It is set up the way Chinese LangChain projects (Langchain-Chatchat and its descendants) ship it: a recursive
splitter over Chinese punctuation with 750-character chunks and 150 overlap, ``FAISS.from_documents``, and
``save_local`` / ``load_local`` around every change. The embedder is ours, wrapped, so both sides embed with the
same model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from langchain_community.vectorstores import FAISS
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_text_splitters import RecursiveCharacterTextSplitter

from rag.index.embeddings import Embedder

CHUNK_SIZE = 750
CHUNK_OVERLAP = 150
SEPARATORS = ["\n\n", "\n", "。", "！", "？", "；", "，", " ", ""]


class WrappedEmbeddings(Embeddings):
    """Our embedder behind LangChain's interface, in batches of ``batch_size``."""

    def __init__(self, embedder: Embedder, batch_size: int = 32) -> None:
        self.embedder = embedder
        self.batch_size = batch_size

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for i in range(0, len(texts), self.batch_size):
            out.extend(self.embedder.embed_passages(texts[i : i + self.batch_size]).tolist())
        return out

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.embed_queries([text])[0].tolist()


def splitter() -> RecursiveCharacterTextSplitter:
    """The peer's splitter: 750/150 characters on Chinese punctuation, punctuation kept with its sentence."""
    return RecursiveCharacterTextSplitter(chunk_size=CHUNK_SIZE, chunk_overlap=CHUNK_OVERLAP, separators=SEPARATORS,
                                          keep_separator="end")


def split(docs: Sequence[tuple[str, str]]) -> list[Document]:
    """``(doc_id, text)`` pairs → LangChain documents carrying ``doc_id`` in their metadata."""
    return splitter().create_documents([t for _, t in docs], metadatas=[{"doc_id": d} for d, _ in docs])


def build(docs: Sequence[tuple[str, str]], embeddings: Embeddings, folder: Path) -> FAISS:
    """Split, embed, index and save: the peer's whole ingest."""
    store = FAISS.from_documents(split(docs), embeddings)
    store.save_local(str(folder))
    return store


def load(folder: Path, embeddings: Embeddings) -> FAISS:
    """A peer index :func:`build` saved before."""
    return FAISS.load_local(str(folder), embeddings, allow_dangerous_deserialization=True)


def add_document(folder: Path, embeddings: Embeddings, doc: tuple[str, str]) -> None:
    """The peer's way to add one document: load everything, add, save everything."""
    store = FAISS.load_local(str(folder), embeddings, allow_dangerous_deserialization=True)
    store.add_documents(split([doc]))
    store.save_local(str(folder))


def add_embedded(folder: Path, embeddings: Embeddings, texts: list[str], vectors: list[list[float]],
                 doc_id: str) -> None:
    """Like :func:`add_document` with the vectors computed beforehand (the index update alone)."""
    store = FAISS.load_local(str(folder), embeddings, allow_dangerous_deserialization=True)
    store.add_embeddings(list(zip(texts, vectors)), metadatas=[{"doc_id": doc_id}] * len(texts))
    store.save_local(str(folder))


def search_doc_ids(store: FAISS, question: str, k: int) -> list[str]:
    """Document ids of the top ``k`` chunks."""
    return [doc.metadata["doc_id"] for doc, _ in store.similarity_search_with_score(question, k=k)]
