"""In-process BM25 retrieval on top of ``bm25s``, batch-first and memory-mapped.

Why this shape:

* ``bm25s`` precomputes every (term, document) BM25 score into a sparse matrix, so a
  query is a sum over a few posting lists plus a top-k: hundreds of times faster than
  ``rank_bm25``. Its numba backend answers a whole batch of queries in one compiled call;
  the numpy backend is 45-100x slower on the same batches (benchmarks/RESULTS.md), so
  numba is the default.
* The text analysis (lowercase, ``\\w\\w+`` words, English stopwords, Snowball stemming via
  PyStemmer) is ours rather than ``bm25s.tokenize``'s: queries come from a policy that
  can write anything, and bm25s's tokenizer either grows its vocabulary with every
  unseen query word or needs a placeholder token for empty queries. Ours is stateless
  at query time, so one index can serve many threads and processes unchanged.
* The saved index (bm25s's ``.npy`` score matrix) and the corpus (the document store of
  :mod:`research_env.retrievers.docstore`, shared with the dense index) are
  memory-mapped on load: loading is fast at any size and
  processes that load the same directory share one copy of the pages.
* Numba compiles the retrieval kernel on first use (5-10 s on a 2-core CPU). We pay
  that at build/load time with one warm-up query, and turn on numba's on-disk cache for
  bm25s's serial kernel so later processes load machine code instead (well under 1 s).

``bm25_for_corpus`` adds a disk cache keyed by the corpus file's content hash and an
in-process cache, so the many env instances of one process share one index.

Why one file of ~410 lines: it is one idea, the BM25 retriever with its index and the
two scoring backends it chooses between.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import bm25s
import Stemmer
from bm25s.stopwords import STOPWORDS_EN

from research_env.data.types import Document
from research_env.retrievers.base import SearchHit
from research_env.retrievers.docstore import DocumentStore, InMemoryDocuments, MappedDocuments
from research_env.retrievers.index_dir import CorpusIndexCache, IndexFormat
from research_env.storage import cache_root

__all__ = ["BM25Retriever", "bm25_for_corpus", "clear_bm25_cache"]

logger = logging.getLogger(__name__)

Backend = Literal["auto", "numba", "numpy"]

# Bump when the on-disk layout, the text analysis or the corpus checks change: old caches
# are then rebuilt. 3: corpora read with the dataset reader's checks (an index built by
# an older version may hold duplicate ids or records it now refuses).
INDEX_FORMAT = IndexFormat("research_env_bm25.json", version=3)

# A policy sometimes pastes its whole reasoning into <search>; cap the work per query.
DEFAULT_MAX_QUERY_TERMS = 64
_MAX_QUERY_CHARS = 8_192

_WORD_PATTERN = re.compile(r"(?u)\b\w\w+\b")


class TextAnalyzer:
    """Turns text into index terms: lowercase, ``\\w\\w+`` words, no stopwords, stems.

    Documents and queries go through the same steps, so a query word matches every
    inflection sharing its Snowball stem ("rivers" finds "river").
    """

    def __init__(self, language: str = "english") -> None:
        self.language = language
        self._stopwords = frozenset(STOPWORDS_EN)
        # PyStemmer objects are not thread-safe: one per thread.
        self._local = threading.local()

    @property
    def _stemmer(self) -> Stemmer.Stemmer:
        stemmer = getattr(self._local, "stemmer", None)
        if stemmer is None:
            stemmer = self._local.stemmer = Stemmer.Stemmer(self.language)
        return stemmer

    def words(self, text: str) -> list[str]:
        """Lowercased non-stopword words of ``text``, unstemmed."""
        return [w for w in _WORD_PATTERN.findall(text.lower()) if w not in self._stopwords]

    def terms(self, text: str) -> list[str]:
        """Stemmed index terms of ``text``, in order, duplicates kept."""
        return self._stemmer.stemWords(self.words(text))

    def index_corpus(self, texts: Iterable[str]) -> tuple[list[list[int]], dict[str, int]]:
        """Term ids per text and the ``stem -> id`` vocabulary (ids dense from 0).

        Each distinct surface word is stemmed once; the id lists share the vocabulary's
        int objects, which keeps a million-passage corpus affordable in memory.
        """
        vocabulary: dict[str, int] = {}
        word_ids: dict[str, int] = {}
        stopwords = self._stopwords
        stem = self._stemmer.stemWord
        corpus_ids: list[list[int]] = []
        for text in texts:
            ids = []
            for word in _WORD_PATTERN.findall(text.lower()):
                term_id = word_ids.get(word)
                if term_id is None:
                    if word in stopwords:
                        continue
                    term_id = vocabulary.setdefault(stem(word), len(vocabulary))
                    word_ids[word] = term_id
                ids.append(term_id)
            corpus_ids.append(ids)
        return corpus_ids, vocabulary


def _resolve_backend(backend: str) -> str:
    if backend == "auto":
        return "numba" if bm25s.NUMBA_AVAILABLE else "numpy"
    if backend not in ("numba", "numpy"):
        raise ValueError(f"backend must be 'auto', 'numba' or 'numpy', not {backend!r}")
    if backend == "numba" and not bm25s.NUMBA_AVAILABLE:
        raise ImportError("backend='numba' needs the numba package")
    return backend


_numba_cache_lock = threading.Lock()
_numba_cache_enabled = False


def _enable_numba_disk_cache() -> None:
    """Let numba persist bm25s's serial retrieval kernel (bm25s does not ask for it).

    Only the serial kernel: bm25s compiles its serial and parallel kernels from one
    Python function, and numba's cache keys entries by function, not by the ``parallel``
    flag, so caching both would let one load the other's machine code. Failure (say, a
    read-only install and no writable cache directory) just means compiling each time.
    """
    global _numba_cache_enabled
    with _numba_cache_lock:
        if _numba_cache_enabled or os.environ.get("RESEARCH_ENV_NUMBA_CACHE", "1") == "0":
            return
        _numba_cache_enabled = True
        try:
            from bm25s.numba import retrieve_utils

            retrieve_utils._retrieve_internal_jitted_serial.enable_caching()
        except Exception as error:  # numba raises RuntimeError when no cache dir is usable
            logger.info("numba on-disk cache unavailable, kernels compile per process: %s", error)


class BM25Retriever:
    """BM25 (Lucene variant, k1=1.5, b=0.75) over a fixed corpus; implements ``Retriever``.

    Create with :meth:`build` (from documents) or :meth:`load` (from a :meth:`save`
    directory); :func:`bm25_for_corpus` does either, cached. Then::

        hits = retriever.search(["who founded the city", "river through paris"], k=5)

    returns one list per query of at most ``k`` :class:`SearchHit`, best first. Only
    documents sharing at least one term with the query are returned, so a query made
    only of stopwords or unknown words (or an empty one) gets ``[]``. Queries longer
    than ``max_query_terms`` terms are truncated.

    Arguments (of ``build``/``load``):
        backend: ``"auto"`` (numba when installed, the default), ``"numba"`` or
            ``"numpy"``. Numba is 45-100x faster per query on 10k-100k passages.
        n_threads: numba threads per ``search`` call. The default 1 runs the serial,
            GIL-free kernel, which is safe to call from many threads at once; values > 1
            use numba's parallel kernel (a process-wide thread pool) and are best left to
            a single calling thread.
        warmup: run one query at construction so the numba compile (seconds when cold,
            a fraction of a second from numba's disk cache) is not paid by the first
            env step. The time taken is in ``warmup_seconds``.
        max_query_terms: terms kept per query (default 64).
    """

    def __init__(
        self,
        model: bm25s.BM25,
        documents: DocumentStore,
        analyzer: TextAnalyzer,
        *,
        n_threads: int = 1,
        max_query_terms: int = DEFAULT_MAX_QUERY_TERMS,
        warmup: bool = True,
    ) -> None:
        """Low-level: use :meth:`build`, :meth:`load` or :func:`bm25_for_corpus`."""
        if n_threads < 1:
            raise ValueError(f"n_threads must be >= 1, not {n_threads}")
        self._model = model
        self._documents = documents
        self._analyzer = analyzer
        self._vocabulary: dict[str, int] = model.vocab_dict
        self._num_docs = int(model.scores["num_docs"])
        self.n_threads = n_threads
        self.max_query_terms = max_query_terms
        self.warmup_seconds = 0.0
        if model.backend == "numba":
            _enable_numba_disk_cache()
        if warmup:
            self.warmup()

    # ----------------------------------------------------------------- construction
    @classmethod
    def build(
        cls,
        documents: Sequence[Document],
        *,
        backend: Backend = "auto",
        n_threads: int = 1,
        show_progress: bool = False,
        warmup: bool = True,
        max_query_terms: int = DEFAULT_MAX_QUERY_TERMS,
    ) -> BM25Retriever:
        """Index ``documents`` (title and text both searchable) in memory."""
        documents = list(documents)
        if not documents:
            raise ValueError("cannot build a BM25 index over an empty corpus")
        analyzer = TextAnalyzer()
        corpus_ids, vocabulary = analyzer.index_corpus(d.contents for d in documents)
        if not vocabulary:
            # bm25s needs at least one term: give the first document one that no query
            # can produce (the analyzer never emits a control character).
            vocabulary = {"\x00": 0}
            corpus_ids[0].append(0)
        # auto_compile=False: bm25s's numba retrieval kernels are module-level and used
        # either way; auto_compile would only add a numba CSC builder whose compile time
        # exceeds what it saves over numpy's argsort at these sizes.
        model = bm25s.BM25(backend=_resolve_backend(backend), auto_compile=False)
        model.index((corpus_ids, vocabulary), create_empty_token=False, show_progress=show_progress)
        return cls(
            model,
            InMemoryDocuments(documents),
            analyzer,
            n_threads=n_threads,
            max_query_terms=max_query_terms,
            warmup=warmup,
        )

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write the index and the corpus to ``directory`` (created if missing)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._model.save(directory, corpus=None, show_progress=False)
        MappedDocuments.write(self._documents, directory)
        INDEX_FORMAT.write_meta(
            directory,
            num_documents=self._num_docs,
            analyzer={"language": self._analyzer.language, "stopwords": "bm25s:en"},
            bm25s_version=bm25s.__version__,
        )

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        *,
        mmap: bool = True,
        backend: Backend = "auto",
        n_threads: int = 1,
        warmup: bool = True,
        max_query_terms: int = DEFAULT_MAX_QUERY_TERMS,
    ) -> BM25Retriever:
        """Open a :meth:`save` directory; with ``mmap`` nothing big is read up front."""
        directory = Path(directory)
        meta = INDEX_FORMAT.read_meta(directory)
        model = bm25s.BM25.load(
            directory,
            mmap=mmap,
            load_corpus=False,
            show_progress=False,
            backend=_resolve_backend(backend),
            auto_compile=False,
        )
        analyzer = TextAnalyzer(meta["analyzer"]["language"])
        return cls(
            model,
            MappedDocuments(directory, use_mmap=mmap),
            analyzer,
            n_threads=n_threads,
            max_query_terms=max_query_terms,
            warmup=warmup,
        )

    # ---------------------------------------------------------------------- queries
    @property
    def backend(self) -> str:
        """``"numba"`` or ``"numpy"``: the kernel that scores queries."""
        return str(self._model.backend)

    def __len__(self) -> int:
        return self._num_docs

    def document(self, index: int) -> Document:
        """The document at position ``index`` of the indexed corpus."""
        return self._documents[index]

    def fingerprint(self) -> dict[str, Any]:
        """What changes this retriever's answers (for :mod:`research_env.fingerprint`);
        the backend and threads do not."""
        return {
            "name": "bm25",
            "documents": self._num_docs,
            "k1": 1.5,
            "b": 0.75,
            "analyzer": self._analyzer.language,
            "max_query_terms": self.max_query_terms,
        }

    def query_term_ids(self, query: str) -> list[int]:
        """Vocabulary ids of the query's terms (unknown terms dropped, truncated)."""
        terms = self._analyzer.terms(query[:_MAX_QUERY_CHARS])
        vocabulary = self._vocabulary
        ids = [vocabulary[t] for t in terms if t in vocabulary]
        return ids[: self.max_query_terms]

    def search(self, queries: Sequence[str], k: int) -> list[list[SearchHit]]:
        """Top-``k`` hits for every query, scored in one batched bm25s call."""
        if k < 0:
            raise ValueError(f"k must be >= 0, not {k}")
        results: list[list[SearchHit]] = [[] for _ in queries]
        k = min(k, self._num_docs)
        if k == 0:
            return results
        term_ids = [self.query_term_ids(q) for q in queries]
        answerable = [i for i, ids in enumerate(term_ids) if ids]
        if not answerable:
            return results
        doc_indices, scores = self._model.retrieve(
            [term_ids[i] for i in answerable],
            k=k,
            sorted=True,
            return_as="tuple",
            show_progress=False,
            n_threads=self.n_threads if self.backend == "numba" else 0,
        )
        # Hits are sorted, so dropping zero scores (documents sharing no term with the
        # query: not matches) keeps each row's order in the flattened, row-major take.
        matched = scores > 0.0
        documents = self._documents.take(doc_indices[matched])
        flat_scores = scores[matched].tolist()
        position = 0
        for query_index, count in zip(answerable, matched.sum(axis=1).tolist(), strict=True):
            end = position + count
            results[query_index] = [
                SearchHit(document, score)
                for document, score in zip(
                    documents[position:end], flat_scores[position:end], strict=True
                )
            ]
            position = end
        return results

    def warmup(self) -> float:
        """Compile/load the scoring kernel now; returns (and records) the seconds taken."""
        start = time.perf_counter()
        any_term = next(iter(self._vocabulary.values()))
        self._model.retrieve(
            [[any_term]],
            k=1,
            show_progress=False,
            n_threads=self.n_threads if self.backend == "numba" else 0,
        )
        self.warmup_seconds = time.perf_counter() - start
        return self.warmup_seconds


# ------------------------------------------------------------------ cached construction
_indexes: CorpusIndexCache[BM25Retriever] = CorpusIndexCache(INDEX_FORMAT)


def clear_bm25_cache() -> None:
    """Forget the in-process indexes of :func:`bm25_for_corpus` (the disk cache stays)."""
    _indexes.clear()


def _build_and_save(documents: Sequence[Document], directory: Path) -> None:
    BM25Retriever.build(documents, warmup=False).save(directory)


def bm25_for_corpus(
    corpus_path: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    backend: Backend = "auto",
    n_threads: int = 1,
) -> BM25Retriever:
    """A BM25 index of a FlashRAG jsonl corpus, built at most once per corpus content.

    The corpus is read with the dataset reader's checks (a bad line, a wrong field type
    or a duplicate id is an error naming the file and line). Within a process, calls for
    the same file (same path, size and mtime) return the same object, so 16 env
    instances share one index. On disk the index lives in
    ``cache_dir/bm25/<sha256 of the file>-v<format>`` (``cache_dir`` defaults to the
    library's cache root, :func:`research_env.storage.cache_root`), built in a staging
    directory and renamed into place (see :mod:`research_env.retrievers.index_dir`).
    """
    root = cache_root(cache_dir) / "bm25"
    return _indexes.get(
        corpus_path,
        index_dir=lambda sha: root / f"{sha}-v{INDEX_FORMAT.version}",
        options=(backend, n_threads),
        build=_build_and_save,
        load=lambda directory: BM25Retriever.load(
            directory, mmap=True, backend=backend, n_threads=n_threads
        ),
    )
