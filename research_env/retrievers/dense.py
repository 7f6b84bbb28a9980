"""Dense retrieval: a :class:`DenseRetriever` over an encoder and a faiss index, batch-first.

The encoder (:mod:`research_env.retrievers.encoders`: the bundled offline MiniLM by
default) turns the queries of one ``search`` call into L2-normalized vectors in one
batch; the index (:mod:`research_env.retrievers.faiss_index`: exact ``flat``, ``hnsw`` or
compressed ``ivfpq``) finds the nearest passages of all of them in one call. torch,
sentence-transformers and faiss are imported inside functions: importing
``research_env`` must stay free of torch.

A saved index is a directory (faiss index + the shared document store of
:mod:`research_env.retrievers.docstore` + ``research_env_dense.json``).
:meth:`DenseRetriever.load` memory-maps the index and the corpus, so many processes
serving one index share its pages.

:func:`dense_for_corpus` adds a disk cache keyed by the corpus content and the index
configuration, plus an in-process cache, like :func:`~research_env.retrievers.bm25.bm25_for_corpus`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from research_env.data.types import Document
from research_env.retrievers.base import SearchHit
from research_env.retrievers.docstore import DocumentStore, MappedDocuments, as_store
from research_env.retrievers.encoders import DEFAULT_MODEL, Encoder, SentenceEncoder
from research_env.retrievers.faiss_index import (
    INDEX_KINDS,
    IndexKind,
    build_faiss_index,
    read_faiss_index,
)
from research_env.retrievers.index_dir import CorpusIndexCache, IndexFormat
from research_env.storage import cache_root

__all__ = [
    "DenseRetriever",
    "clear_dense_cache",
    "dense_factory",
    "dense_for_corpus",
]

logger = logging.getLogger(__name__)

# Bump when the on-disk layout changes: old caches are then rebuilt.
# 2: documents in the shared blob store (research_env.retrievers.docstore).
INDEX_FORMAT = IndexFormat("research_env_dense.json", version=2)
_INDEX_FILE = "index.faiss"


# ---------------------------------------------------------------------------- retriever
class DenseRetriever:
    """Cosine-similarity retrieval over a fixed corpus; implements ``Retriever``.

    Create with :meth:`build` (encode documents) or :meth:`load` (a :meth:`save`
    directory); :func:`dense_for_corpus` does either, cached on disk. Then::

        hits = retriever.search(["who founded the city", "river through paris"], k=5)

    returns one list per query of at most ``k`` :class:`SearchHit` (score = cosine
    similarity), best first. All queries of a call are encoded in one batch and
    searched in one faiss call.

    Query-time knobs: ``ef_search`` (HNSW beam width) and ``nprobe`` (IVF cells
    visited) can be read and set on the retriever.
    """

    def __init__(
        self,
        index: Any,
        documents: DocumentStore | Sequence[Document],
        encoder: Encoder,
        *,
        kind: IndexKind,
        params: dict[str, Any] | None = None,
    ) -> None:
        """Low-level: use :meth:`build`, :meth:`load` or :func:`dense_for_corpus`."""
        if index.ntotal != len(documents):
            raise ValueError(
                f"the index holds {index.ntotal} vectors but there are {len(documents)} documents"
            )
        if index.d != encoder.dim:
            raise ValueError(
                f"the index has dimension {index.d} but the encoder {encoder.name!r} "
                f"produces {encoder.dim}"
            )
        self.index = index
        self.encoder = encoder
        self.kind = kind
        self.params = dict(params or {})
        self._documents = as_store(documents)

    # ----------------------------------------------------------------- construction
    @classmethod
    def build(
        cls,
        documents: Sequence[Document],
        encoder: Encoder | str | None = None,
        index: IndexKind = "flat",
        *,
        embeddings: np.ndarray | None = None,
        show_progress: bool = True,
        **index_params: Any,
    ) -> DenseRetriever:
        """Encode ``documents`` and index them.

        ``encoder`` is an :class:`Encoder`, a model name/path for :class:`SentenceEncoder`,
        or ``None`` for the bundled MiniLM. ``embeddings`` skips encoding (rows must match
        ``documents``). ``index_params`` go to :func:`build_faiss_index` (``hnsw_m``,
        ``ef_construction``, ``ef_search``, ``nlist``, ``pq_m``, ``pq_nbits``, ``nprobe``).
        """
        documents = list(documents)
        if not documents:
            raise ValueError("cannot build a dense index over an empty corpus")
        if index not in INDEX_KINDS:
            raise ValueError(f"index must be one of {INDEX_KINDS}, not {index!r}")
        if encoder is None or isinstance(encoder, str):
            encoder = SentenceEncoder(encoder)
        if embeddings is None:
            start = time.perf_counter()
            embeddings = encoder.encode_passages(
                [d.contents for d in documents], show_progress=show_progress
            )
            logger.info("encoded %d passages in %.1fs", len(documents), time.perf_counter() - start)
        elif len(embeddings) != len(documents):
            raise ValueError(f"{len(embeddings)} embeddings for {len(documents)} documents")
        faiss_index = build_faiss_index(embeddings, index, **index_params)
        return cls(faiss_index, documents, encoder, kind=index, params=index_params)

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write the index, the corpus and the config to ``directory`` (created if missing)."""
        import faiss

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(directory / _INDEX_FILE))
        MappedDocuments.write(self._documents, directory)
        encoder_config = (
            self.encoder.config()
            if hasattr(self.encoder, "config")
            else {"model": self.encoder.name}
        )
        INDEX_FORMAT.write_meta(
            directory,
            index=self.kind,
            params=self.params,
            dim=int(self.index.d),
            num_documents=int(self.index.ntotal),
            encoder=encoder_config,
            faiss_version=faiss.__version__,
        )

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        encoder: Encoder | None = None,
        *,
        mmap: bool = True,
        device: str = "cpu",
    ) -> DenseRetriever:
        """Open a :meth:`save` directory. The encoder is rebuilt from the saved config
        unless one is given; with ``mmap`` the index and corpus are memory-mapped."""
        directory = Path(directory)
        meta = INDEX_FORMAT.read_meta(directory)
        if encoder is None:
            encoder = SentenceEncoder.from_config(meta["encoder"], device=device)
        index = read_faiss_index(directory / _INDEX_FILE, meta["index"], mmap)
        retriever = cls(
            index,
            MappedDocuments(directory, use_mmap=mmap),
            encoder,
            kind=meta["index"],
            params=meta.get("params", {}),
        )
        if "ef_search" in retriever.params and retriever.kind == "hnsw":
            retriever.ef_search = retriever.params["ef_search"]
        return retriever

    # ---------------------------------------------------------------------- queries
    def __len__(self) -> int:
        return int(self.index.ntotal)

    def document(self, index: int) -> Document:
        """The document at position ``index`` of the indexed corpus."""
        return self._documents[index]

    @property
    def ef_search(self) -> int | None:
        return int(self.index.hnsw.efSearch) if self.kind == "hnsw" else None

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        if self.kind != "hnsw":
            raise ValueError(f"ef_search applies to hnsw indexes, this one is {self.kind!r}")
        self.index.hnsw.efSearch = int(value)

    @property
    def nprobe(self) -> int | None:
        return int(self.index.nprobe) if self.kind == "ivfpq" else None

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if self.kind != "ivfpq":
            raise ValueError(f"nprobe applies to ivfpq indexes, this one is {self.kind!r}")
        self.index.nprobe = int(value)

    def search_vectors(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """faiss search of query vectors: ``(scores, positions)``, ``-1`` = no result."""
        k = min(k, len(self))
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.kind == "hnsw" and self.index.hnsw.efSearch < k:
            # HNSW returns at most efSearch results; widen the beam for big k.
            self.index.hnsw.efSearch = k
        return self.index.search(vectors, k)

    def search(self, queries: Sequence[str], k: int) -> list[list[SearchHit]]:
        """Top-``k`` hits for every query: one encoder batch, one faiss call."""
        if k < 0:
            raise ValueError(f"k must be >= 0, not {k}")
        if not queries or k == 0:
            return [[] for _ in queries]
        scores, positions = self.search_vectors(self.encoder.encode_queries(list(queries)), k)
        found = positions >= 0  # faiss pads rows it cannot fill with -1
        documents = iter(self._documents.take(positions[found]))
        return [
            [SearchHit(next(documents), float(s)) for s in row_scores[row_found].tolist()]
            for row_scores, row_found in zip(scores, found, strict=True)
        ]

    def fingerprint(self) -> dict[str, Any]:
        """What changes this retriever's answers (for :mod:`research_env.fingerprint`)."""
        config = getattr(self.encoder, "config", None)
        encoder = config() if callable(config) else {"name": getattr(self.encoder, "name", "")}
        return {
            "name": "dense",
            "documents": len(self),
            "index": self.kind,
            "params": dict(self.params),
            "ef_search": self.ef_search,
            "nprobe": self.nprobe,
            "encoder": encoder,
        }

    def __repr__(self) -> str:
        return f"DenseRetriever({len(self)} docs, index={self.kind!r}, encoder={self.encoder!r})"


# ------------------------------------------------------------------ cached construction
_indexes: CorpusIndexCache[DenseRetriever] = CorpusIndexCache(INDEX_FORMAT)


def clear_dense_cache() -> None:
    """Forget the in-process indexes of :func:`dense_for_corpus` (the disk cache stays)."""
    _indexes.clear()


def dense_for_corpus(
    corpus_path: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    model: str | None = None,
    index: IndexKind = "flat",
    query_prefix: str | None = None,
    passage_prefix: str | None = None,
    device: str = "cpu",
    batch_size: int = 64,
    num_threads: int | None = None,
    show_progress: bool = True,
    **index_params: Any,
) -> DenseRetriever:
    """A dense index of a FlashRAG jsonl corpus, built at most once per corpus and config.

    The index lives in ``cache_dir/dense-<corpus sha256>-<config hash>`` (default: the
    ``dense`` folder of :func:`research_env.storage.cache_root`), built in a staging
    directory and renamed into place (see :mod:`research_env.retrievers.index_dir`).
    Within a process, calls with the same file (path, size, mtime) and config return the
    same object. The corpus is read with the dataset reader's checks.
    """
    config = {
        "model": DEFAULT_MODEL if model is None else str(model),
        "index": index,
        "params": index_params,
        "query_prefix": query_prefix,
        "passage_prefix": passage_prefix,
    }
    config_key = json.dumps(config, sort_keys=True, default=str)
    config_hash = hashlib.sha256(config_key.encode()).hexdigest()[:12]
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "dense"

    @functools.cache
    def encoder() -> SentenceEncoder:  # only on a miss: an index loaded here has one
        return SentenceEncoder(
            model,
            query_prefix=query_prefix,
            passage_prefix=passage_prefix,
            device=device,
            batch_size=batch_size,
            num_threads=num_threads,
        )

    def build(documents: Sequence[Document], directory: Path) -> None:
        built = DenseRetriever.build(
            documents, encoder(), index, show_progress=show_progress, **index_params
        )
        built.save(directory)

    return _indexes.get(
        corpus_path,
        index_dir=lambda sha: root / f"dense-{sha[:32]}-{config_hash}-v{INDEX_FORMAT.version}",
        options=(config_key, device),
        build=build,
        load=lambda directory: DenseRetriever.load(directory, encoder(), mmap=True),
    )


def dense_factory(
    corpus: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None, **kwargs: Any
) -> DenseRetriever:
    """Registry factory for ``retriever="dense"`` (see ``research_env.sources``).

    ``retriever_kwargs`` such as ``model``, ``index``, ``ef_search`` pass through to
    :func:`dense_for_corpus`; indexes go to ``cache_dir/dense``.
    """
    root = Path(cache_dir) / "dense" if cache_dir is not None else None
    return dense_for_corpus(corpus, root, **kwargs)
