"""A persistent query -> documents cache: replay a remote or paid retriever for free.

:class:`PersistentCachedRetriever` wraps any retriever with a sqlite file (stdlib
``sqlite3``) of answers keyed by ``(retriever fingerprint, query, k)``. The fingerprint
(:func:`research_env.fingerprint.describe_retriever`: index type, corpus size, model,
server URL...) is part of the key, so one file can hold several retrievers' answers and a
retriever whose configuration changed never reads another's. Reopening the file in a
later process replays every query asked before without calling the inner retriever:
searches against a web API are paid once, and an evaluation can be rerun offline.

Where :class:`~research_env.retrievers.cache.CachedRetriever` is an in-memory LRU for
one process, this one is on disk and unbounded (delete the file to start over).

    env = MultiHopSearchEnv(retriever="http://host:8000", retriever_cache="runs/q.sqlite")

Hits are stored as JSON (document id, contents, score). sqlite runs in WAL mode with a
busy timeout, so several processes (data-parallel ranks, parallel evaluations) can share
one file; the last writer of a key wins, with the same answer.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from research_env.data.types import Document
from research_env.retrievers.base import Retriever, SearchHit
from research_env.retrievers.cache import BatchQueryCache

__all__ = ["PersistentCachedRetriever", "with_query_cache"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hits (
    retriever TEXT NOT NULL,
    query TEXT NOT NULL,
    k INTEGER NOT NULL,
    hits TEXT NOT NULL,
    PRIMARY KEY (retriever, query, k)
)
"""


def _encode(hits: Sequence[SearchHit]) -> str:
    return json.dumps(
        [{"id": h.document.id, "contents": h.document.contents, "score": h.score} for h in hits],
        ensure_ascii=False,
    )


def _decode(text: str) -> list[SearchHit]:
    return [
        SearchHit(Document(h["id"], h["contents"]), float(h["score"])) for h in json.loads(text)
    ]


class PersistentCachedRetriever(BatchQueryCache):
    """Wraps ``inner`` with an on-disk cache of ``(fingerprint, query, k) -> hits``;
    implements ``Retriever``.

    Arguments:
        inner: the retriever answering cache misses.
        path: the sqlite file (created, with its directory, if missing).

    Hits and misses are counted as :class:`~research_env.retrievers.cache.BatchQueryCache`
    says, for this object's calls (not the file's history); :meth:`stats` adds the
    file's size.
    """

    def __init__(self, inner: Retriever, path: str | os.PathLike[str]) -> None:
        from research_env.fingerprint import describe_retriever, stable_hash

        super().__init__(inner)
        self.path = Path(path)
        self.retriever_fingerprint = describe_retriever(inner)
        self.key = stable_hash(self.retriever_fingerprint)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection, used under the lock from whichever thread searches.
        self._db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
        with self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)

    def fingerprint(self) -> dict[str, Any]:
        """The inner retriever's: a cache does not change the answers."""
        return dict(self.retriever_fingerprint)

    def stats(self) -> dict[str, Any]:
        """Counters for logging: hits, misses, hit_rate, entries (this retriever's, in the file)."""
        with self._lock:
            (entries,) = self._db.execute(
                "SELECT COUNT(*) FROM hits WHERE retriever = ?", (self.key,)
            ).fetchone()
            return {
                "hits": self.hits,
                "misses": self.misses,
                "hit_rate": self.hit_rate,
                "entries": int(entries),
                "path": str(self.path),
            }

    def _lookup(self, queries: list[str], k: int) -> dict[str, list[SearchHit]]:
        found: dict[str, list[SearchHit]] = {}
        ordered = sorted(set(queries))
        for start in range(0, len(ordered), 500):  # stay under sqlite's variable limit
            chunk = ordered[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT query, hits FROM hits WHERE retriever = ? AND k = ? "
                f"AND query IN ({marks})",
                (self.key, k, *chunk),
            ).fetchall()
            found.update((query, _decode(text)) for query, text in rows)
        return found

    def _store(self, k: int, fetched: dict[str, list[SearchHit]]) -> None:
        rows = [(self.key, q, k, _encode(h)) for q, h in fetched.items()]
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO hits VALUES (?, ?, ?, ?)", rows)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"PersistentCachedRetriever({self.inner!r}, path={str(self.path)!r})"


def with_query_cache(retriever: Retriever, path: str | os.PathLike[str]) -> Retriever:
    """``retriever`` behind a :class:`PersistentCachedRetriever` on ``path``, unless it
    already is one on that file (a vector env's sub-envs share the first one's)."""
    if isinstance(retriever, PersistentCachedRetriever) and retriever.path == Path(path):
        return retriever
    return PersistentCachedRetriever(retriever, path)
