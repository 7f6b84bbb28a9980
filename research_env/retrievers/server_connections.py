"""Connection-level limits on uvicorn: what a slow, idle or hostile client may hold.

uvicorn's own knobs cover the kept-alive idle time (``timeout_keep_alive``) and the
connection cap (``limit_concurrency``); what it lacks is a deadline for a request to
arrive whole, so a client that connects and stays silent, or trickles half a request
("slowloris"), would hold a connection forever; and a deadline for an answer to be read,
so a client that sends a request and never reads the answer does not hold the connection
and the answer's memory forever either (uvicorn waits for the buffer to drain before the
keep-alive timer even starts). :func:`uvicorn_config` sets the knobs and mixes
:class:`_RequestDeadline` into uvicorn's HTTP protocol class to add both deadlines.
"""

from __future__ import annotations

import asyncio
from typing import Any

from research_env.retrievers.server_limits import ServerLimits
from research_env.retrievers.server_service import json_bytes

__all__ = ["uvicorn_config"]


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
        http=_protocol_with_deadline(http, limits.request_timeout, limits.send_timeout),
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

    The answer has a deadline too: when the transport pauses writing (its unsent bytes
    passed the high-water mark: the client is not reading), the client has
    ``send_timeout`` seconds to read it down below that again, else the connection is
    aborted, which drops the unsent answer at once (``close`` would wait for it to drain).
    """

    request_timeout: float
    send_timeout: float
    cycle: Any
    transport: Any
    _deadline: asyncio.TimerHandle | None = None
    _cycle_before: Any = None  # the request already read when the deadline was armed
    _send_deadline: asyncio.TimerHandle | None = None

    def pause_writing(self) -> None:
        super().pause_writing()  # type: ignore[misc]
        if self._send_deadline is None:
            loop = asyncio.get_running_loop()
            self._send_deadline = loop.call_later(self.send_timeout, self._send_expired)

    def resume_writing(self) -> None:
        super().resume_writing()  # type: ignore[misc]
        if self._send_deadline is not None:
            self._send_deadline.cancel()
            self._send_deadline = None

    def _send_expired(self) -> None:
        self._send_deadline = None  # still paused: resume_writing cancels the deadline
        self.transport.abort()

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
        if self._send_deadline is not None:
            self._send_deadline.cancel()
            self._send_deadline = None
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
    body = json_bytes(
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


def _protocol_with_deadline(
    http: str, request_timeout: float, send_timeout: float
) -> type[asyncio.Protocol]:
    from uvicorn.config import HTTP_PROTOCOLS
    from uvicorn.importer import import_from_string

    if http not in ("auto", "h11", "httptools"):
        raise ValueError(f"http must be 'auto', 'h11' or 'httptools', not {http!r}")
    base = import_from_string(HTTP_PROTOCOLS[http])
    name = f"{base.__name__}WithRequestTimeout"
    attributes = {"request_timeout": request_timeout, "send_timeout": send_timeout}
    return type(name, (_RequestDeadline, base), attributes)
