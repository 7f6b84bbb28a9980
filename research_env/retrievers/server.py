"""An HTTP retrieval server for any ``Retriever``, speaking the protocols RL stacks use.

Endpoints (all answer from the one retriever the server wraps):

* ``POST /retrieve`` - Search-R1: ``{"queries": [...], "topk": k, "return_scores": b}``
  -> ``{"result": [[{"document": {"id", "contents"}, "score"}, ...], ...]}`` (without
  scores each item is the document). Also accepted on the same path:

  - SkyRL-gym: JSON with one string under ``"query"``; same nested answer shape.
  - GEM: a msgpack body (``Content-Type: application/msgpack``, or no content type:
    GEM posts raw bytes) with ``"query"``; answered in msgpack, ``"result"`` being the
    flat list of hits of that query. A msgpack body with ``"queries"`` gets the nested
    Search-R1 shape, as older GEM versions expect.

* ``POST /search`` - FlashRAG/ReSearch, one query: ``{"query": "...", "top_n": k,
  "return_score": b}`` -> ``docs`` or ``[docs, scores]``.
* ``POST /batch_search`` - FlashRAG, many: ``{"query": [...], ...}`` -> ``docs_lists`` or
  ``[docs_lists, scores_lists]``.
* ``GET /health`` - status, corpus size and batching statistics.

Why a micro-batching queue: an RL trainer's rollout workers each send one query per
request, but a batch costs less per query: one encoder forward pass for all queries
(dense), one thread hand-off and one numba call (BM25). At 64 concurrent clients it
doubles the server's throughput (``benchmarks/server_load.py``). The server puts every
request's queries on an asyncio queue; one consumer takes everything waiting (up to
``max_batch`` queries, optionally after a ``batch_wait_ms`` gathering window) and answers
it with a single ``retriever.search`` call in a worker thread. While that call runs, new requests queue
up, so batches grow with load and a lone client waits for nothing. Identical queries in
a batch are searched once. ``batching=False`` answers each request with its own call in
a thread pool, as a plain FastAPI endpoint would (the benchmark's baseline).

Requests are validated (``topk`` in 1..``max_topk``, query length, queries per request)
and rejected with a 4xx whose ``detail`` says what is wrong. The server binds
127.0.0.1 unless told otherwise.

A client cannot hold the server's memory or connections hostage (all in
:class:`ServerLimits`, and ``research-env serve --help``):

* ``max_body_bytes`` (16 MiB): a body whose ``Content-Length`` is larger gets 413 before
  a byte of it is read; a chunked body gets 413 as soon as it grows past the limit.
  Either way the connection is closed, so the rest is never read.
* ``request_timeout`` (30 s): a connection must deliver a whole request, head and body,
  within this many seconds of its first byte (a new connection, of being opened), or it
  gets 408 and is closed. This is what stops idle and trickling ("slowloris") clients;
  uvicorn has no such timeout of its own.
* ``keep_alive_timeout`` (5 s): an idle kept-alive connection is closed after this long
  (uvicorn's ``timeout_keep_alive``).
* ``max_connections`` (1024): beyond this many open connections, requests get 503 at
  once and their connection is closed (uvicorn's ``limit_concurrency``); keep it below
  the open-file limit (``ulimit -n``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from research_env.retrievers.base import Retriever, SearchHit

__all__ = [
    "BackgroundServer",
    "MicroBatcher",
    "RetrievalService",
    "ServerLimits",
    "create_app",
    "serve",
    "uvicorn_config",
]

logger = logging.getLogger(__name__)

_MSGPACK_MAP_PREFIXES = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask for; larger requests get HTTP 422 (or 413)."""

    default_topk: int = 3
    max_topk: int = 100
    max_query_chars: int = 4_096
    max_queries_per_request: int = 1_024
    # Queries waiting in the batching queue beyond this are refused with 503 (retryable),
    # so an overloaded server sheds load instead of growing its latency without bound.
    max_pending_queries: int = 100_000
    # Connection-level limits (see the module docstring): what a slow, idle or hostile
    # client may hold. They apply where uvicorn runs the app (serve, BackgroundServer).
    max_body_bytes: int = 16 * 1024 * 1024
    request_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
    max_connections: int = 1024

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)}")
        for name in ("request_timeout", "keep_alive_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds, not {getattr(self, name)}")


class RequestError(Exception):
    """A bad request: ``status`` and a message for the client."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


# --------------------------------------------------------------------------- batching
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


# ------------------------------------------------------------------------- validation
def _check_topk(value: Any, name: str, limits: ServerLimits) -> int:
    if value is None:
        return limits.default_topk
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(422, f"'{name}' must be an integer, got {value!r}")
    if not 1 <= value <= limits.max_topk:
        raise RequestError(422, f"'{name}' must be between 1 and {limits.max_topk}, got {value}")
    return value


def _check_flag(value: Any, name: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestError(422, f"'{name}' must be true or false, got {value!r}")
    return value


def _check_query(value: Any, name: str, limits: ServerLimits) -> str:
    if not isinstance(value, str):
        raise RequestError(422, f"'{name}' must be a string, got {type(value).__name__}")
    if len(value) > limits.max_query_chars:
        raise RequestError(
            422, f"a query is {len(value)} characters long; the limit is {limits.max_query_chars}"
        )
    return value


def _check_queries(value: Any, name: str, limits: ServerLimits) -> list[str]:
    if not isinstance(value, list):
        raise RequestError(422, f"'{name}' must be a list of strings, got {type(value).__name__}")
    if not value:
        raise RequestError(422, f"'{name}' is empty: send at least one query")
    if len(value) > limits.max_queries_per_request:
        raise RequestError(
            413,
            f"{len(value)} queries in one request; the limit is "
            f"{limits.max_queries_per_request}: split the batch",
        )
    return [_check_query(q, f"{name}[{i}]", limits) for i, q in enumerate(value)]


def _decode_body(body: bytes, content_type: str) -> tuple[dict[str, Any], bool]:
    """The request object and whether it came as msgpack (then we answer in msgpack)."""
    stripped = body.lstrip()
    as_msgpack = "msgpack" in content_type or (
        bool(body) and body[0] in _MSGPACK_MAP_PREFIXES and not stripped.startswith(b"{")
    )
    try:
        if as_msgpack:
            import msgpack

            payload = msgpack.unpackb(body, raw=False)
        else:
            payload = json.loads(body)
    except Exception as error:
        kind = "msgpack" if as_msgpack else "JSON"
        raise RequestError(400, f"the body is not valid {kind}: {error}") from None
    if not isinstance(payload, dict):
        raise RequestError(422, f"the body must be an object, got {type(payload).__name__}")
    return payload, as_msgpack


# ------------------------------------------------------------------------ serializing
def _doc(hit: SearchHit) -> dict[str, str]:
    return {"id": hit.document.id, "contents": hit.document.contents}


def _search_r1_items(hits: Sequence[SearchHit], with_scores: bool) -> list[dict[str, Any]]:
    if with_scores:
        return [{"document": _doc(h), "score": h.score} for h in hits]
    return [_doc(h) for h in hits]


# ---------------------------------------------------------------------------- the app
_ROUTES = {"/retrieve": "retrieve", "/search": "search_one", "/batch_search": "search_batch"}


class RetrievalService:
    """The protocol logic, independent of the web framework: bytes in, bytes out."""

    def __init__(
        self,
        retriever: Retriever,
        *,
        batching: bool = True,
        max_batch: int = 256,
        batch_wait_ms: float = 0.0,
        limits: ServerLimits | None = None,
    ) -> None:
        self.retriever = retriever
        self.limits = limits or ServerLimits()
        self.batching = batching
        self.max_batch = max_batch
        self.batcher = (
            MicroBatcher(
                retriever,
                max_batch=max_batch,
                batch_wait_ms=batch_wait_ms,
                max_pending_queries=self.limits.max_pending_queries,
            )
            if batching
            else None
        )
        self._unbatched = BatchStats()

    @property
    def stats(self) -> BatchStats:
        return self.batcher.stats if self.batcher is not None else self._unbatched

    async def answer(self, path: str, body: bytes, content_type: str) -> tuple[int, str, bytes]:
        """``(status, media type, body)`` for a POST to ``path``; errors carry a detail."""
        try:
            if len(body) > self.limits.max_body_bytes:
                raise RequestError(413, self.body_too_large())
            payload, as_msgpack = _decode_body(body, content_type)
            result = await getattr(self, _ROUTES[path])(payload, as_msgpack)
        except RequestError as error:
            return error.status, "application/json", _json_bytes({"detail": error.detail})
        except Exception as error:
            detail = f"retriever failed: {type(error).__name__}: {error}"
            return 500, "application/json", _json_bytes({"detail": detail})
        if as_msgpack:
            import msgpack

            return 200, "application/msgpack", msgpack.packb(result, use_bin_type=True)
        return 200, "application/json", _json_bytes(result)

    def body_too_large(self, declared: int | None = None) -> str:
        """The 413 detail for a body over the limit (``declared``: its Content-Length)."""
        what = f"declares {declared} bytes" if declared is not None else "is larger than that"
        return (
            f"the body limit is {self.limits.max_body_bytes} bytes and this request body "
            f"{what} (ServerLimits.max_body_bytes, research-env serve --max-body-mb): "
            "send fewer queries per request"
        )

    async def run_search(self, queries: list[str], k: int) -> list[list[SearchHit]]:
        if self.batcher is not None:
            return await self.batcher.search(queries, k)
        stats = self._unbatched
        stats.requests += 1
        stats.queries += len(queries)
        stats.batches += 1
        stats.searched_queries += len(queries)
        stats.largest_batch = max(stats.largest_batch, len(queries))
        try:
            return await run_in_threadpool(self.retriever.search, queries, k)
        except Exception:
            stats.errors += 1
            logger.exception("retriever failed on %d queries", len(queries))
            raise

    async def retrieve(self, payload: dict[str, Any], as_msgpack: bool) -> Any:
        limits = self.limits
        k = _check_topk(payload.get("topk"), "topk", limits)
        with_scores = _check_flag(payload.get("return_scores"), "return_scores")
        if "queries" in payload:
            queries = _check_queries(payload["queries"], "queries", limits)
            flat = False
        elif isinstance(payload.get("query"), list):
            queries = _check_queries(payload["query"], "query", limits)
            flat = False
        elif "query" in payload:
            queries = [_check_query(payload["query"], "query", limits)]
            flat = as_msgpack  # GEM: one query in msgpack -> the flat list of its hits
        else:
            raise RequestError(
                422, "the body needs 'queries' (a list of strings) or 'query' (a string)"
            )
        results = await self.run_search(queries, k)
        if flat:
            return {"result": _search_r1_items(results[0], with_scores)}
        return {"result": [_search_r1_items(hits, with_scores) for hits in results]}

    async def search_one(self, payload: dict[str, Any], _as_msgpack: bool) -> Any:
        if "query" not in payload:
            raise RequestError(422, "the body needs 'query' (a string)")
        query = _check_query(payload["query"], "query", self.limits)
        k = _check_topk(payload.get("top_n"), "top_n", self.limits)
        with_scores = _check_flag(payload.get("return_score"), "return_score")
        hits = (await self.run_search([query], k))[0]
        docs = [_doc(h) for h in hits]
        return [docs, [h.score for h in hits]] if with_scores else docs

    async def search_batch(self, payload: dict[str, Any], _as_msgpack: bool) -> Any:
        key = "query" if "query" in payload else "queries"
        if key not in payload:
            raise RequestError(422, "the body needs 'query' (a list of strings)")
        queries = _check_queries(payload[key], key, self.limits)
        k = _check_topk(payload.get("top_n"), "top_n", self.limits)
        with_scores = _check_flag(payload.get("return_score"), "return_score")
        results = await self.run_search(queries, k)
        docs = [[_doc(h) for h in hits] for hits in results]
        return [docs, [[h.score for h in hits] for hits in results]] if with_scores else docs

    def health(self) -> dict[str, Any]:
        retriever = self.retriever
        limits = self.limits
        return {
            "status": "healthy",
            "retriever": type(retriever).__name__,
            "documents": len(retriever) if hasattr(retriever, "__len__") else None,  # type: ignore[arg-type]
            "batching": self.batching,
            "max_batch": self.max_batch if self.batching else None,
            "protocols": ["search-r1", "flashrag", "skyrl", "gem-msgpack"],
            "limits": {
                "default_topk": limits.default_topk,
                "max_topk": limits.max_topk,
                "max_query_chars": limits.max_query_chars,
                "max_queries_per_request": limits.max_queries_per_request,
            },
            "stats": self.stats.as_dict(),
        }


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class _FastPath:
    """ASGI middleware answering the three POST endpoints without the framework.

    FastAPI's per-request machinery (routing, dependency solving, the ``Request``
    object) costs more than a batched BM25 lookup; on a small CPU that halves the
    server's throughput. The routes stay declared on the FastAPI app (same behaviour,
    via the same :class:`RetrievalService`) so ``/docs`` lists them; this layer just
    answers them first.
    """

    def __init__(self, app: Any, service: RetrievalService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in _ROUTES:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        body = await self._read_body(headers.get(b"content-length"), receive, send)
        if body is None:
            return
        status, media_type, answer = await self.service.answer(scope["path"], body, content_type)
        await _respond(send, status, media_type, answer)

    async def _read_body(
        self, content_length: bytes | None, receive: Any, send: Any
    ) -> bytes | None:
        """The request body, or None when the client left or the body is too large (then
        413 is sent, with ``connection: close`` so the server reads no more of it)."""
        service = self.service
        limit = service.limits.max_body_bytes
        # uvicorn has already rejected a malformed Content-Length with 400.
        if content_length is not None and int(content_length) > limit:
            detail = service.body_too_large(declared=int(content_length))
            await _respond_error(send, 413, detail, close=True)
            return None
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:  # a chunked body (no Content-Length) grew past the limit
                await _respond_error(send, 413, service.body_too_large(), close=True)
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


async def _respond(
    send: Any, status: int, media_type: str, body: bytes, close: bool = False
) -> None:
    headers = [
        (b"content-type", media_type.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _respond_error(send: Any, status: int, detail: str, close: bool = False) -> None:
    await _respond(send, status, "application/json", _json_bytes({"detail": detail}), close)


def create_app(
    retriever: Retriever,
    *,
    batching: bool = True,
    max_batch: int = 256,
    batch_wait_ms: float = 0.0,
    limits: ServerLimits | None = None,
) -> FastAPI:
    """A FastAPI app serving ``retriever`` (see the module docstring for the endpoints).

    ``app.state.service`` is the :class:`RetrievalService` (its ``stats`` count requests,
    queries and batches).
    """
    service = RetrievalService(
        retriever,
        batching=batching,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        limits=limits,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        if service.batcher is not None:
            await service.batcher.start()
        yield
        if service.batcher is not None:
            await service.batcher.stop()

    app = FastAPI(
        title="research-env retrieval server",
        description="Search-R1 (/retrieve), FlashRAG (/search, /batch_search) and GEM/SkyRL "
        "variants over one retriever.",
        lifespan=lifespan,
    )

    async def via_service(request: Request) -> Response:
        status, media_type, body = await service.answer(
            request.url.path, await request.body(), request.headers.get("content-type", "")
        )
        return Response(body, status_code=status, media_type=media_type)

    app.add_api_route(
        "/retrieve",
        via_service,
        methods=["POST"],
        summary="Search-R1 retrieval (also SkyRL single-query and GEM msgpack)",
    )
    app.add_api_route("/search", via_service, methods=["POST"], summary="FlashRAG: one query")
    app.add_api_route(
        "/batch_search", via_service, methods=["POST"], summary="FlashRAG: a list of queries"
    )

    @app.get("/health", summary="Status, corpus size and batching statistics")
    async def health() -> dict[str, Any]:
        return service.health()

    app.add_middleware(_FastPath, service=service)
    app.state.service = service
    return app


def serve(
    retriever: Retriever,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "warning",
    access_log: bool = False,
    http: str = "auto",
    loop: str = "auto",
    **app_kwargs: Any,
) -> None:
    """Run the server in the foreground until interrupted (Ctrl-C).

    ``http``/``loop`` pick uvicorn's HTTP parser (``h11``, ``httptools``) and event loop
    (``asyncio``, ``uvloop``); ``"auto"`` takes the C implementations when installed
    (``pip install uvicorn[standard]``), which roughly double the requests a CPU serves.
    ``app_kwargs`` go to :func:`create_app`; its ``limits`` also set the connection
    limits (timeouts, connection cap) described in the module docstring.
    """
    import uvicorn

    app = create_app(retriever, **app_kwargs)
    # The index, the encoder and the imported modules live as long as the server. Moving
    # them to the collector's permanent generation stops full collections from rescanning
    # them: those scans paused every in-flight request for 50-150 ms now and then
    # (p99 latency 86 -> 22 ms at 64 clients in benchmarks/server_load.py).
    gc.collect()
    gc.freeze()
    config = uvicorn_config(
        app,
        app_kwargs.get("limits"),
        http=http,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        loop=loop,
    )
    uvicorn.Server(config).run()


def uvicorn_config(
    app: Any, limits: ServerLimits | None = None, *, http: str = "auto", **config_kwargs: Any
) -> Any:
    """A ``uvicorn.Config`` for ``app`` that enforces the connection limits of ``limits``.

    uvicorn's own knobs cover the kept-alive idle time (``timeout_keep_alive``) and the
    connection cap (``limit_concurrency``); the request timeout is added to its HTTP
    protocol class (``http``: ``"auto"``, ``"h11"`` or ``"httptools"``), see
    :class:`_RequestDeadline`.
    """
    import uvicorn

    limits = limits or ServerLimits()
    return uvicorn.Config(
        app,
        http=_protocol_with_deadline(http, limits.request_timeout),
        # uvicorn annotates this as int but only hands it to loop.call_later.
        timeout_keep_alive=limits.keep_alive_timeout,  # type: ignore[arg-type]
        # uvicorn answers 503 once open connections (the asking one included) reach its
        # limit; + 1 lets exactly max_connections connections be served.
        limit_concurrency=limits.max_connections + 1,
        **config_kwargs,
    )


class _RequestDeadline(asyncio.Protocol):
    """Mixed into a uvicorn HTTP protocol class: each request must arrive whole, head and
    body, within ``request_timeout`` seconds of its first byte (a new connection's first
    request, of the connection opening), else the client gets 408 and is disconnected.

    uvicorn only times out kept-alive connections between requests, so a client that
    connects and stays silent, or sends half a request and stops, would hold its
    connection (and a slot under ``limit_concurrency``) forever. Both of uvicorn's HTTP/1
    protocols (h11, httptools) keep the request being read in ``self.cycle``, whose
    ``more_body`` turns False when its body is complete; that is all this relies on (the
    tests pin it).
    """

    request_timeout: float
    cycle: Any
    transport: Any
    _deadline: asyncio.TimerHandle | None = None
    _cycle_before: Any = None  # the request already read when the deadline was armed

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None:
            self._arm()
        super().data_received(data)  # type: ignore[misc]
        if self._request_read():
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _request_read(self) -> bool:
        cycle = self.cycle
        return cycle is not None and cycle is not self._cycle_before and not cycle.more_body

    def _arm(self) -> None:
        self._cycle_before = self.cycle
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.request_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        # A pipelined request may have been read since (uvicorn parses it after the
        # previous response): then the deadline was met.
        if self._request_read() or self.transport.is_closing():
            return
        cycle = self.cycle
        answering = cycle is not None and cycle is not self._cycle_before
        if not (answering and cycle.response_started):
            self.transport.write(_request_timeout_response(self.request_timeout))
        self.transport.close()


def _request_timeout_response(seconds: float) -> bytes:
    body = _json_bytes(
        {
            "detail": f"the request did not arrive whole within {seconds:g} s "
            "(ServerLimits.request_timeout, research-env serve --request-timeout)"
        }
    )
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _protocol_with_deadline(http: str, request_timeout: float) -> type[asyncio.Protocol]:
    from uvicorn.config import HTTP_PROTOCOLS
    from uvicorn.importer import import_from_string

    if http not in ("auto", "h11", "httptools"):
        raise ValueError(f"http must be 'auto', 'h11' or 'httptools', not {http!r}")
    base = import_from_string(HTTP_PROTOCOLS[http])
    name = f"{base.__name__}WithRequestTimeout"
    return type(name, (_RequestDeadline, base), {"request_timeout": request_timeout})


class BackgroundServer:
    """The server in a daemon thread of this process, for tests and notebooks::

        with BackgroundServer(retriever) as server:
            client = HttpRetriever(server.url)

    ``port=0`` (default) picks a free port. ``app`` serves any ASGI app instead of
    :func:`create_app` of ``retriever`` (tests use it to imitate other servers); a
    ``limits=ServerLimits(...)`` keyword sets the connection limits either way.
    """

    def __init__(
        self,
        retriever: Retriever | None = None,
        *,
        app: Any = None,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 30.0,
        http: str = "auto",
        **app_kwargs: Any,
    ) -> None:
        import uvicorn

        if (retriever is None) == (app is None):
            raise ValueError("pass either a retriever or an app")
        self.host = host
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.port = int(self._socket.getsockname()[1])
        self.app = app if app is not None else create_app(retriever, **app_kwargs)  # type: ignore[arg-type]
        config = uvicorn_config(
            self.app,
            app_kwargs.get("limits"),
            http=http,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._startup_timeout = startup_timeout

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the retrieval server at {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
