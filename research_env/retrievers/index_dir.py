"""An index saved as a directory: its metadata file, and the disk cache that builds it once.

BM25 and dense indexes share this life cycle. A corpus file is read with the dataset
reader's checks (:func:`research_env.data.read_corpus_jsonl`: bad lines, wrong field
types and duplicate ids are errors naming the file and line), indexed into a staging
directory, and renamed into a directory named by the corpus's SHA-256 (plus whatever
else the index depends on): so concurrent processes never see half an index, a copied
corpus reuses its index, and an edited one is rebuilt. In the process, one object per
corpus file and options is kept, so many env instances share one index.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from research_env.data.errors import DataFormatError
from research_env.data.jsonl import read_corpus_jsonl
from research_env.data.types import Document
from research_env.storage import atomic_directory, file_sha256

__all__ = ["CorpusIndexCache", "read_meta", "write_meta"]

logger = logging.getLogger(__name__)

R = TypeVar("R")


def write_meta(directory: Path, meta_file: str, meta: dict[str, Any]) -> None:
    """Write the index's metadata; its presence marks a finished index."""
    (directory / meta_file).write_text(json.dumps(meta, indent=2) + "\n")


def read_meta(directory: str | os.PathLike[str], meta_file: str, version: int) -> dict[str, Any]:
    """The metadata of a saved index, refusing a directory that is none or of another
    on-disk format ``version`` (rebuilding is then the fix)."""
    directory = Path(directory)
    meta_path = directory / meta_file
    if not meta_path.exists():
        raise FileNotFoundError(f"{directory} is not a saved index (no {meta_file})")
    meta: dict[str, Any] = json.loads(meta_path.read_text())
    if meta.get("format_version") != version:
        raise ValueError(
            f"{directory} has index format {meta.get('format_version')}, this code reads "
            f"{version}: rebuild the index (delete the directory)"
        )
    return meta


def read_corpus_for_index(corpus_path: Path) -> list[Document]:
    """The corpus documents, or an error naming the file when there are none."""
    documents = read_corpus_jsonl(corpus_path)
    if not documents:
        raise DataFormatError(
            corpus_path,
            None,
            'no documents: a corpus needs at least one line {"id": ..., "contents": ...}',
        )
    return documents


class CorpusIndexCache(Generic[R]):
    """Indexes of corpus files, built at most once per corpus content and options.

    ``meta_file`` is the file whose presence marks a finished index directory.
    """

    def __init__(self, meta_file: str) -> None:
        self.meta_file = meta_file
        self._loaded: dict[tuple[Hashable, ...], R] = {}
        # Held while building, so other threads wait for the index instead of building
        # a second copy.
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Forget the in-process indexes (the disk cache stays)."""
        with self._lock:
            self._loaded.clear()

    def get(
        self,
        corpus_path: str | os.PathLike[str],
        *,
        index_dir: Callable[[str], Path],
        options: Hashable,
        build: Callable[[Sequence[Document], Path], None],
        load: Callable[[Path], R],
    ) -> R:
        """The index of ``corpus_path``: from this process, from disk, or built.

        ``index_dir(corpus_sha256)`` names the directory; ``options`` is everything
        else that tells two loaded indexes apart; ``build(documents, directory)`` saves
        an index into an empty directory; ``load(directory)`` opens one.
        """
        corpus_path = Path(corpus_path).resolve()
        stat = corpus_path.stat()
        key = (str(corpus_path), stat.st_size, stat.st_mtime_ns, options)
        with self._lock:
            loaded = self._loaded.get(key)
            if loaded is not None:
                return loaded
            directory = index_dir(file_sha256(corpus_path))
            if not (directory / self.meta_file).exists():
                start = time.perf_counter()
                with atomic_directory(directory, if_exists="keep") as staging:
                    build(read_corpus_for_index(corpus_path), staging)
                seconds = time.perf_counter() - start
                logger.info("indexed %s in %.1fs -> %s", corpus_path, seconds, directory)
            loaded = self._loaded[key] = load(directory)
            return loaded
