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

Concurrent requests' queries are answered together by one ``retriever.search`` call,
which doubles the throughput at 64 clients (:mod:`research_env.retrievers.server_batching`
says why and how); ``batching=False`` answers each request with its own call in a thread
pool, as a plain FastAPI endpoint would (the benchmark's baseline).

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
* ``max_hits_per_request`` (25,600): a request asking for more hits (queries x topk)
  gets 413 before it is searched; this bounds the size of one answer.
* ``send_timeout`` (30 s): an answer its client does not read (its unsent part stays
  above the transport's 64 KiB high-water mark this long) is dropped and the connection
  aborted, so a client that never reads cannot hold the answer's memory or its
  connection.
* ``keep_alive_timeout`` (5 s): an idle kept-alive connection is closed after this long
  (uvicorn's ``timeout_keep_alive``).
* ``max_connections`` (1024): beyond this many open connections, requests get 503 at
  once and their connection is closed (uvicorn's ``limit_concurrency``); keep it below
  the open-file limit (``ulimit -n``).

This module is the app and how it runs (:func:`create_app`, :func:`serve`,
:class:`BackgroundServer`); the pieces live beside it: ``server_limits`` (the limits and
request checks), ``server_batching`` (the queue), ``server_service`` (the protocols,
bytes in and out) and ``server_connections`` (uvicorn's connection limits).
:class:`ServerLimits` is re-exported here because every entry point of this module takes
it as ``limits=``: it is part of the server's documented API.
"""

from __future__ import annotations

import contextlib
import gc
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from research_env.retrievers.base import Retriever
from research_env.retrievers.server_connections import uvicorn_config
from research_env.retrievers.server_limits import ServerLimits
from research_env.retrievers.server_service import ROUTES, RetrievalService, json_bytes

__all__ = [
    "BackgroundServer",
    "ServerLimits",
    "create_app",
    "serve",
]


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
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in ROUTES:
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
    await _respond(send, status, "application/json", json_bytes({"detail": detail}), close)


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

    @property
    def open_connections(self) -> int:
        """How many client connections the server holds open now."""
        return len(self._server.server_state.connections)

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
