"""A total deadline for one HTTP request, enforced in the network stream.

HTTP clients offer per-operation timeouts: each connect, write or read may take that
long, so a server that trickles its answer a byte at a time can stretch one request
without bound (one byte every 0.4 s held a search for 28.8 s against a 3.3 s budget).
Here the deadline lives where every read and write happens: :class:`DeadlineBackend`
is an httpcore network backend (httpcore is httpx's own engine) whose connections cut
each operation's timeout to the time left before the deadline that
:func:`request_deadline` sets for the request running in this thread (context).
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore

__all__ = ["AnswerTooLarge", "DeadlineBackend", "deadline_request", "request_deadline"]

# When the request running in this thread (context) must be finished, by time.monotonic().
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "research_env_http_deadline", default=None
)


def _time_left(timeout: float | None, expired: type[Exception]) -> float | None:
    """The timeout for one network operation: what httpcore asked, cut to the time left
    before the request's deadline; ``expired`` is raised once none is left."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("the request's time budget is spent")
    return left if timeout is None else min(timeout, left)


@contextlib.contextmanager
def request_deadline(seconds: float) -> Iterator[None]:
    """Every network operation inside the block ends within ``seconds`` from now, in all."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the current request's deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _time_left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _time_left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        left = _time_left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, left))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's blocking sockets, with every connection a :class:`_DeadlineStream`."""

    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        left = _time_left(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, left, local_address, socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        left = _time_left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, left, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class AnswerTooLarge(ValueError):
    """An answer's body passed the byte limit of :func:`deadline_request`."""


def deadline_request(
    pool: httpcore.ConnectionPool,
    method: str,
    url: str,
    headers: dict[str, str],
    content: bytes | None,
    timeout: float,
    max_bytes: int,
) -> tuple[int, dict[str, str], bytes]:
    """One request through ``pool`` (built on :class:`DeadlineBackend`) finished within
    ``timeout`` seconds in all: ``(status, lower-cased headers, body)``. Raises httpcore's
    ``TimeoutException`` / ``NetworkError`` / ``ProtocolError``, or :class:`AnswerTooLarge`
    once the body passes ``max_bytes``."""
    sent = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    timeouts = dict.fromkeys(("connect", "read", "write", "pool"), timeout)
    with (
        request_deadline(timeout),
        pool.stream(
            method, url, headers=sent, content=content, extensions={"timeout": timeouts}
        ) as response,
    ):
        answer_headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers
        }
        chunks, size = [], 0
        for chunk in response.iter_stream():
            size += len(chunk)
            if size > max_bytes:
                raise AnswerTooLarge(f"the answer passed {max_bytes} bytes")
            chunks.append(chunk)
        return response.status, answer_headers, b"".join(chunks)
