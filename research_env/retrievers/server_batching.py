"""The micro-batching queue: concurrent requests' queries answered by one search call.

Why: an RL trainer's rollout workers each send one query per request, but a batch costs
less per query: one encoder forward pass for all queries (dense), one thread hand-off and
one numba call (BM25). At 64 concurrent clients it doubles the server's throughput
(``benchmarks/server_load.py``). Every request's queries go on an asyncio queue; one
consumer takes everything waiting (up to ``max_batch`` queries, optionally after a
``batch_wait_ms`` gathering window) and answers it with a single ``retriever.search``
call in a worker thread. While that call runs, new requests queue up, so batches grow
with load and a lone client waits for nothing. Identical queries in a batch are searched
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from research_env.retrievers.base import Retriever, SearchHit
from research_env.retrievers.server_limits import RequestError

__all__ = ["BatchStats", "MicroBatcher"]

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    queries: list[str]
    k: int
    future: asyncio.Future[list[list[SearchHit]]]


@dataclass
class BatchStats:
    """Counters for ``/health`` and the load benchmark."""

    requests: int = 0
    queries: int = 0
    batches: int = 0
    searched_queries: int = 0  # after de-duplication within batches
    largest_batch: int = 0
    errors: int = 0
    started: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        mean = self.queries / self.batches if self.batches else 0.0
        return {
            "requests": self.requests,
            "queries": self.queries,
            "batches": self.batches,
            "mean_batch_queries": round(mean, 2),
            "largest_batch_queries": self.largest_batch,
            "searched_queries": self.searched_queries,
            "errors": self.errors,
            "uptime_seconds": round(time.time() - self.started, 1),
        }


class MicroBatcher:
    """Gathers concurrent requests' queries into single ``retriever.search`` calls.

    Arguments:
        retriever: answers the batches (called from one worker thread).
        max_batch: most queries per retriever call (a single larger request is
            searched whole).
        batch_wait_ms: after the first request of a batch arrives, wait this long for
            more (0 = take only what is already queued; batches still form while the
            previous one is being searched).
        max_pending_queries: queue bound; beyond it :meth:`search` raises
            :class:`RequestError` 503.

    Use inside a running event loop: ``await start()``, ``await search(...)``,
    ``await stop()``.
    """

    def __init__(
        self,
        retriever: Retriever,
        *,
        max_batch: int = 256,
        batch_wait_ms: float = 0.0,
        max_pending_queries: int = 100_000,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, not {max_batch}")
        if batch_wait_ms < 0:
            raise ValueError(f"batch_wait_ms must be >= 0, not {batch_wait_ms}")
        self.retriever = retriever
        self.max_batch = max_batch
        self.batch_wait = batch_wait_ms / 1000.0
        self.max_pending_queries = max_pending_queries
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Pending] | None = None
        self._pending_queries = 0
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="retriever")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def search(self, queries: list[str], k: int) -> list[list[SearchHit]]:
        """The hits for ``queries``, searched together with other waiting requests."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not awaited")
        if self._pending_queries + len(queries) > self.max_pending_queries:
            raise RequestError(
                503,
                f"server overloaded: {self._pending_queries} queries already waiting "
                f"(limit {self.max_pending_queries}); retry later",
            )
        future: asyncio.Future[list[list[SearchHit]]] = asyncio.get_running_loop().create_future()
        self._pending_queries += len(queries)
        self._queue.put_nowait(_Pending(queries, k, future))
        return await future

    def _drain(self, batch: list[_Pending], size: int) -> int:
        assert self._queue is not None
        while size < self.max_batch and not self._queue.empty():
            item = self._queue.get_nowait()
            batch.append(item)
            size += len(item.queries)
        return size

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            first = await self._queue.get()
            batch = [first]
            size = self._drain(batch, len(first.queries))
            if size < self.max_batch and self.batch_wait > 0:
                await asyncio.sleep(self.batch_wait)
                size = self._drain(batch, size)
            self._pending_queries -= size
            await self._execute(batch, size)

    async def _execute(self, batch: list[_Pending], size: int) -> None:
        distinct = list(dict.fromkeys(q for item in batch for q in item.queries))
        k = max(item.k for item in batch)
        stats = self.stats
        stats.requests += len(batch)
        stats.queries += size
        stats.batches += 1
        stats.searched_queries += len(distinct)
        stats.largest_batch = max(stats.largest_batch, size)
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self.retriever.search, distinct, k)
        except Exception as error:  # the retriever failed: every waiting request learns why
            stats.errors += len(batch)
            logger.exception("retriever failed on a batch of %d queries", len(distinct))
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        by_query = dict(zip(distinct, results, strict=True))
        for item in batch:
            if not item.future.done():  # done = the client went away
                item.future.set_result([by_query[q][: item.k] for q in item.queries])
