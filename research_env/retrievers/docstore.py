"""The documents behind an index, stored once beside it and memory-mapped on load.

Every retriever that saves an index (BM25, dense) saves its documents the same way: one
UTF-8 blob plus two small offset tables. Record ``i`` is ``blob[starts[i]:starts[i+1]]``:
the id's bytes (``id_lengths[i]`` long) followed by the contents. Slicing and decoding is
several times cheaper than parsing a JSON line, which matters because every hit
materialises a document; and a memory-mapped blob is shared by every process serving
the same index, paged in on demand.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from research_env.data.types import Document

__all__ = ["STORE_FILES", "DocumentStore", "InMemoryDocuments", "MappedDocuments", "as_store"]

_BLOB_FILE = "corpus.blob"
_STARTS_FILE = "corpus.starts.npy"
_ID_LENGTHS_FILE = "corpus.id_lengths.npy"
STORE_FILES = (_BLOB_FILE, _STARTS_FILE, _ID_LENGTHS_FILE)


class DocumentStore(Protocol):
    """Read-only documents by position; ``take`` fetches a batch at once."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Document: ...

    def take(self, indices: np.ndarray) -> list[Document]: ...


class InMemoryDocuments:
    """The documents an index was just built from, behind the store interface."""

    def __init__(self, documents: Sequence[Document]) -> None:
        self._documents = list(documents)

    def __len__(self) -> int:
        return len(self._documents)

    def __getitem__(self, index: int) -> Document:
        return self._documents[index]

    def take(self, indices: np.ndarray) -> list[Document]:
        documents = self._documents
        return [documents[i] for i in indices.tolist()]


def as_store(documents: DocumentStore | Sequence[Document]) -> DocumentStore:
    """A store as is; a plain sequence of documents wrapped in :class:`InMemoryDocuments`."""
    if isinstance(documents, Sequence):
        return InMemoryDocuments(documents)
    return documents


class MappedDocuments:
    """Documents saved by :meth:`write`; with ``use_mmap`` the blob is memory-mapped,
    otherwise it is read into memory once. The tables (12 bytes per document) are read."""

    def __init__(self, directory: Path, use_mmap: bool = True) -> None:
        self._starts = np.load(directory / _STARTS_FILE)
        self._id_lengths = np.load(directory / _ID_LENGTHS_FILE)
        self._blob: bytes | mmap.mmap
        with open(directory / _BLOB_FILE, "rb") as handle:
            if use_mmap and os.fstat(handle.fileno()).st_size > 0:
                self._blob = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            else:
                self._blob = handle.read()

    def __len__(self) -> int:
        return len(self._id_lengths)

    def __getitem__(self, index: int) -> Document:
        return self.take(np.array([index]))[0]

    def take(self, indices: np.ndarray) -> list[Document]:
        """Documents at ``indices``; the table lookups are vectorised over the batch."""
        starts = self._starts[indices].tolist()
        ends = self._starts[indices + 1].tolist()
        id_lengths = self._id_lengths[indices].tolist()
        blob = self._blob
        documents = []
        for start, end, id_length in zip(starts, ends, id_lengths, strict=True):
            record = blob[start:end]
            documents.append(Document(record[:id_length].decode(), record[id_length:].decode()))
        return documents

    @staticmethod
    def write(documents: DocumentStore, directory: Path) -> None:
        """Save ``documents`` into ``directory`` (which must exist) for :class:`MappedDocuments`."""
        starts = np.empty(len(documents) + 1, dtype=np.int64)
        id_lengths = np.empty(len(documents), dtype=np.int32)
        position = 0
        with open(directory / _BLOB_FILE, "wb") as handle:
            for i in range(len(documents)):
                document = documents[i]
                doc_id, contents = document.id.encode(), document.contents.encode()
                starts[i], id_lengths[i] = position, len(doc_id)
                handle.write(doc_id)
                handle.write(contents)
                position += len(doc_id) + len(contents)
        starts[-1] = position
        np.save(directory / _STARTS_FILE, starts)
        np.save(directory / _ID_LENGTHS_FILE, id_lengths)
