"""What one request may ask of the retrieval server, and the checks that hold it to that.

:class:`ServerLimits` gathers every bound a client meets: per request (``topk``, query
length, queries per request, the batching queue) and per connection (body size, request
timeout, idle kept-alive time, open connections; enforced by
:mod:`research_env.retrievers.server_connections` and the ASGI layer of
:mod:`research_env.retrievers.server`). The ``check_*`` functions validate one request
field and raise :class:`RequestError` with a 4xx status and a ``detail`` the client can
act on, so a bad request is answered, never searched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "RequestError",
    "ServerLimits",
    "check_flag",
    "check_hits",
    "check_queries",
    "check_query",
    "check_topk",
]


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask for; larger requests get HTTP 422 (or 413)."""

    default_topk: int = 3
    max_topk: int = 100
    max_query_chars: int = 4_096
    max_queries_per_request: int = 1_024
    # Queries x topk: the hits one request may ask for. The answer's size (and the memory
    # it holds until the client has read it) grows with it: 1,024 queries x topk 100 made
    # an 11.9 MiB answer. The default lets HttpRetriever's default batch (256 queries)
    # ask for topk 100, a quarter of what max_queries_per_request x max_topk would allow.
    max_hits_per_request: int = 25_600
    # Queries waiting in the batching queue beyond this are refused with 503 (retryable),
    # so an overloaded server sheds load instead of growing its latency without bound.
    max_pending_queries: int = 100_000
    # Connection-level limits (see research_env.retrievers.server): what a slow, idle or hostile
    # client may hold. They apply where uvicorn runs the app (serve, BackgroundServer).
    max_body_bytes: int = 16 * 1024 * 1024
    request_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
    max_connections: int = 1024
    # Seconds an answer may wait for its client to read it: when the unsent part of an
    # answer stays above the transport's high-water mark (64 KiB) this long, the
    # connection is aborted and the answer's memory freed.
    send_timeout: float = 30.0

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_connections", "max_hits_per_request"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)}")
        for name in ("request_timeout", "keep_alive_timeout", "send_timeout"):
            if not 0 < getattr(self, name) < float("inf"):
                raise ValueError(f"{name} must be > 0 seconds, not {getattr(self, name)}")


class RequestError(Exception):
    """A bad request: ``status`` and a message for the client."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def check_topk(value: Any, name: str, limits: ServerLimits) -> int:
    if value is None:
        return limits.default_topk
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(422, f"'{name}' must be an integer, got {value!r}")
    if not 1 <= value <= limits.max_topk:
        raise RequestError(422, f"'{name}' must be between 1 and {limits.max_topk}, got {value}")
    return value


def check_flag(value: Any, name: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestError(422, f"'{name}' must be true or false, got {value!r}")
    return value


def check_query(value: Any, name: str, limits: ServerLimits) -> str:
    if not isinstance(value, str):
        raise RequestError(422, f"'{name}' must be a string, got {type(value).__name__}")
    if len(value) > limits.max_query_chars:
        raise RequestError(
            422, f"a query is {len(value)} characters long; the limit is {limits.max_query_chars}"
        )
    return value


def check_queries(value: Any, name: str, limits: ServerLimits) -> list[str]:
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
    return [check_query(q, f"{name}[{i}]", limits) for i, q in enumerate(value)]


def check_hits(queries: int, k: int, limits: ServerLimits) -> None:
    """Refuse (413) a request whose queries x topk exceeds ``limits.max_hits_per_request``."""
    if queries * k > limits.max_hits_per_request:
        raise RequestError(
            413,
            f"{queries} queries x topk {k} = {queries * k} hits in one request; the limit is "
            f"{limits.max_hits_per_request} (ServerLimits.max_hits_per_request, research-env "
            "serve --max-hits-per-request): send fewer queries per request or a smaller topk",
        )
