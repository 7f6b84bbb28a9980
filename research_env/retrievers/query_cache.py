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

A file that cannot be written (a read-only file or directory: a cache shipped with a
paper, on read-only media) is opened read-only: its hits are served, misses go to the
inner retriever and are not stored, and a warning says so once. A file that is not a
sqlite database, or is damaged, is a :class:`QueryCacheError` naming it; a stored row
that does not decode is a miss (asked again, and replaced when the file is writable).
"""

from __future__ import annotations

import json
import os
import sqlite3
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from research_env.data.types import Document
from research_env.retrievers.base import Retriever, SearchHit
from research_env.retrievers.cache import BatchQueryCache

__all__ = ["PersistentCachedRetriever", "QueryCacheError", "with_query_cache"]

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


def _decode(text: str) -> list[SearchHit] | None:
    """The stored hits, or None when the row does not decode (then it is a miss)."""
    try:
        return [
            SearchHit(Document(str(h["id"]), str(h["contents"])), float(h["score"]))
            for h in json.loads(text)
        ]
    except (ValueError, TypeError, KeyError, RecursionError):
        return None


class QueryCacheError(ValueError):
    """The cache file is not a usable sqlite database; the message names it."""

    def __init__(self, path: Path, error: BaseException) -> None:
        super().__init__(
            f"query cache {path}: {error} (not a readable sqlite database, or a damaged "
            "one); delete it to start a new cache, or point retriever_cache at another file"
        )


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
        self.read_only = False
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection, used under the lock from whichever thread searches.
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as err:
            raise QueryCacheError(self.path, err) from None

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
        try:
            with db:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(_SCHEMA)
            return db
        except sqlite3.OperationalError as err:
            db.close()
            if not _read_only_error(err) or not self.path.is_file():
                raise
        # A read-only file or directory: read it as it is (immutable: no -wal or -shm
        # file needs creating beside it).
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro&immutable=1"
        db = sqlite3.connect(uri, uri=True, timeout=30.0, check_same_thread=False)
        try:
            db.execute("SELECT COUNT(*) FROM hits WHERE 0").fetchall()
        except sqlite3.DatabaseError:
            db.close()
            raise
        self._now_read_only()
        return db

    def _now_read_only(self) -> None:
        self.read_only = True
        warnings.warn(
            f"query cache {self.path} is read-only: its hits are served, misses go to the "
            "retriever and are not stored",
            RuntimeWarning,
            stacklevel=3,
        )

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
            try:
                rows = self._db.execute(
                    f"SELECT query, hits FROM hits WHERE retriever = ? AND k = ? "
                    f"AND query IN ({marks})",
                    (self.key, k, *chunk),
                ).fetchall()
            except sqlite3.DatabaseError as err:
                raise QueryCacheError(self.path, err) from None
            for query, text in rows:
                hits = _decode(text) if isinstance(text, str) else None
                if hits is not None:
                    found[query] = hits
        return found

    def _store(self, k: int, fetched: dict[str, list[SearchHit]]) -> None:
        if self.read_only:
            return
        rows = [(self.key, q, k, _encode(h)) for q, h in fetched.items()]
        with self._lock:
            try:
                with self._db:
                    self._db.executemany("INSERT OR REPLACE INTO hits VALUES (?, ?, ?, ?)", rows)
            except sqlite3.OperationalError as err:
                if not _read_only_error(err):
                    raise QueryCacheError(self.path, err) from None
                self._now_read_only()  # made read-only since it was opened
            except sqlite3.DatabaseError as err:
                raise QueryCacheError(self.path, err) from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"PersistentCachedRetriever({self.inner!r}, path={str(self.path)!r})"


def _read_only_error(err: sqlite3.OperationalError) -> bool:
    text = str(err).lower()
    return "readonly" in text or "read-only" in text or "unable to open" in text


def with_query_cache(retriever: Retriever, path: str | os.PathLike[str]) -> Retriever:
    """``retriever`` behind a :class:`PersistentCachedRetriever` on ``path``, unless it
    already is one on that file (a vector env's sub-envs share the first one's). A
    retriever with its own ``cached_on(path)`` (the simulated search engine caches the
    passages it writes, not the queries) is asked to do it itself."""
    cached_on = getattr(retriever, "cached_on", None)
    if callable(cached_on):
        return cached_on(path)  # type: ignore[no-any-return]
    if isinstance(retriever, PersistentCachedRetriever) and retriever.path == Path(path):
        return retriever
    return PersistentCachedRetriever(retriever, path)
