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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from research_env.data.errors import DataFormatError
from research_env.data.jsonl import read_corpus_jsonl
from research_env.data.types import Document
from research_env.storage import atomic_directory, file_sha256

__all__ = ["CorpusIndexCache", "IndexFormat"]

logger = logging.getLogger(__name__)

R = TypeVar("R")


@dataclass(frozen=True)
class IndexFormat:
    """A kind of saved index: the metadata file that marks a finished one, and the
    on-disk format version (bumped when the layout or what goes in changes, so old
    caches are rebuilt rather than misread)."""

    meta_file: str
    version: int

    def write_meta(self, directory: Path, **fields: Any) -> None:
        """Write the metadata (last: its presence marks the index finished)."""
        meta = {"format_version": self.version, **fields}
        (directory / self.meta_file).write_text(json.dumps(meta, indent=2) + "\n")

    def read_meta(self, directory: str | os.PathLike[str]) -> dict[str, Any]:
        """The metadata of a saved index, refusing a directory that is none or of another
        format version (rebuilding is then the fix)."""
        directory = Path(directory)
        meta_path = directory / self.meta_file
        if not meta_path.exists():
            raise FileNotFoundError(f"{directory} is not a saved index (no {self.meta_file})")
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        if meta.get("format_version") != self.version:
            raise ValueError(
                f"{directory} has index format {meta.get('format_version')}, this code reads "
                f"{self.version}: rebuild the index (delete the directory)"
            )
        return meta

    def is_saved_in(self, directory: Path) -> bool:
        return (directory / self.meta_file).exists()


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
    """Indexes of corpus files (saved in ``format``), built at most once per corpus
    content and options."""

    def __init__(self, format: IndexFormat) -> None:
        self.format = format
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
            if not self.format.is_saved_in(directory):
                start = time.perf_counter()
                with atomic_directory(directory, if_exists="keep") as staging:
                    build(read_corpus_for_index(corpus_path), staging)
                seconds = time.perf_counter() - start
                logger.info("indexed %s in %.1fs -> %s", corpus_path, seconds, directory)
            loaded = self._loaded[key] = load(directory)
            return loaded
