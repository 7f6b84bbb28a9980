"""An LRU query cache in front of any retriever.

RL rollouts repeat queries a lot: a GRPO group plays the same question several times,
and the first search of an episode is often the question itself. Caching ``(query, k)``
turns those repeats into dictionary lookups, which matters most when the inner
retriever is a remote server or a dense encoder.

Batch-aware: a ``search`` call looks every query up, sends only the distinct misses to
the inner retriever in one call, and stores their answers.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from research_env.retrievers.base import Retriever, SearchHit

__all__ = ["BatchQueryCache", "CachedRetriever"]


class BatchQueryCache:
    """The part every query cache shares: counters, and a batch ``search`` that answers
    known queries from the store and sends the distinct misses to ``inner`` in one call.

    Subclasses say how the store is read and written: ``_lookup(queries, k)`` returns the
    stored hits of those of ``queries`` it knows (called under ``self._lock``), and
    ``_store(k, fetched)`` keeps the inner retriever's answers (called without the lock).

    Accounting, per query of every ``search`` call: a query found in the store, or a
    repeat of a query already missing earlier in the same call, is a hit (the inner
    retriever is not asked for it); every other query is a miss. ``hits``, ``misses``
    and ``hit_rate`` (``hits / (hits + misses)``, 0 before any query) report it.
    """

    def __init__(self, inner: Retriever) -> None:
        self.inner = inner
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def _lookup(self, queries: list[str], k: int) -> dict[str, list[SearchHit]]:
        raise NotImplementedError

    def _store(self, k: int, fetched: dict[str, list[SearchHit]]) -> None:
        raise NotImplementedError

    def search(self, queries: Sequence[str], k: int) -> list[list[SearchHit]]:
        """Stored hits for known queries; one inner call for the distinct misses."""
        if k < 0:
            raise ValueError(f"k must be >= 0, not {k}")
        queries = list(queries)
        results: list[list[SearchHit] | None] = [None] * len(queries)
        missing: dict[str, list[int]] = {}  # distinct missed query -> its positions
        with self._lock:
            stored = self._lookup(queries, k)
            for position, query in enumerate(queries):
                if query in stored:
                    results[position] = list(stored[query])
                    self.hits += 1
                elif query in missing:
                    missing[query].append(position)
                    self.hits += 1
                else:
                    missing[query] = [position]
                    self.misses += 1
        if missing:
            fetched = self.inner.search(list(missing), k)
            if len(fetched) != len(missing):
                raise RuntimeError(
                    f"{type(self.inner).__name__}.search returned {len(fetched)} hit lists "
                    f"for {len(missing)} queries"
                )
            answers = {q: list(h) for q, h in zip(missing, fetched, strict=True)}
            self._store(k, answers)
            for query, positions in missing.items():
                for position in positions:
                    results[position] = list(answers[query])
        return [r if r is not None else [] for r in results]


class CachedRetriever(BatchQueryCache):
    """Wraps ``inner`` with an LRU cache of ``(query, k) -> hits``; implements ``Retriever``.

    Arguments:
        inner: the retriever answering cache misses.
        maxsize: most entries kept (default 100,000); the least recently used go first.

    Hits and misses are counted as :class:`BatchQueryCache` says.

    Safe to share between threads; the lock is not held while the inner retriever runs,
    so two threads missing the same query at once may both fetch it (both count as
    misses).
    """

    def __init__(self, inner: Retriever, maxsize: int = 100_000) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, not {maxsize}")
        super().__init__(inner)
        self.maxsize = maxsize
        self._entries: OrderedDict[tuple[str, int], list[SearchHit]] = OrderedDict()

    def stats(self) -> dict[str, Any]:
        """Counters for logging: hits, misses, hit_rate, size, maxsize."""
        with self._lock:
            return {
                "hits": self.hits,
                "misses": self.misses,
                "hit_rate": self.hit_rate,
                "size": len(self._entries),
                "maxsize": self.maxsize,
            }

    def fingerprint(self) -> dict[str, Any]:
        """The inner retriever's: a cache does not change the answers."""
        from research_env.fingerprint import describe_retriever

        return describe_retriever(self.inner)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0

    def _lookup(self, queries: list[str], k: int) -> dict[str, list[SearchHit]]:
        found: dict[str, list[SearchHit]] = {}
        for query in queries:
            cached = self._entries.get((query, k))
            if cached is not None:
                self._entries.move_to_end((query, k))
                found[query] = cached
        return found

    def _store(self, k: int, fetched: dict[str, list[SearchHit]]) -> None:
        with self._lock:
            for query, hits in fetched.items():
                self._entries[(query, k)] = hits
                self._entries.move_to_end((query, k))
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def __repr__(self) -> str:
        return f"CachedRetriever({self.inner!r}, maxsize={self.maxsize})"
