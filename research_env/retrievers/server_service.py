"""The retrieval protocols, independent of any web framework: request bytes in, answer
bytes out.

:class:`RetrievalService` decodes a body (JSON, or msgpack for GEM), validates it against
:class:`~research_env.retrievers.server_limits.ServerLimits`, searches through the
:class:`~research_env.retrievers.server_batching.MicroBatcher` (or one thread-pool call per
request when batching is off, as a plain FastAPI endpoint would: the benchmark's
baseline) and encodes the answer in the shape each protocol expects (see
:mod:`research_env.retrievers.server` for the endpoints). Keeping it framework-free is
what lets the server's ASGI fast path and its FastAPI routes share one implementation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool

from research_env.retrievers.base import Retriever, SearchHit
from research_env.retrievers.server_batching import BatchStats, MicroBatcher
from research_env.retrievers.server_limits import (
    RequestError,
    ServerLimits,
    check_flag,
    check_hits,
    check_queries,
    check_query,
    check_topk,
)

__all__ = ["ROUTES", "RetrievalService", "json_bytes"]

logger = logging.getLogger(__name__)

_MSGPACK_MAP_PREFIXES = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}


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
        # Some msgpack errors (FormatError on a reserved byte) carry no message of their own.
        reason = str(error) or f"{type(error).__name__}: not a well-formed {kind} object"
        raise RequestError(400, f"the body is not valid {kind}: {reason}") from None
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


# ------------------------------------------------------------------------ the service
ROUTES = {"/retrieve": "retrieve", "/search": "search_one", "/batch_search": "search_batch"}


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
            result = await getattr(self, ROUTES[path])(payload, as_msgpack)
        except RequestError as error:
            return error.status, "application/json", json_bytes({"detail": error.detail})
        except Exception as error:
            detail = f"retriever failed: {type(error).__name__}: {error}"
            return 500, "application/json", json_bytes({"detail": detail})
        if as_msgpack:
            import msgpack

            return 200, "application/msgpack", msgpack.packb(result, use_bin_type=True)
        return 200, "application/json", json_bytes(result)

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
        k = check_topk(payload.get("topk"), "topk", limits)
        with_scores = check_flag(payload.get("return_scores"), "return_scores")
        if "queries" in payload:
            queries = check_queries(payload["queries"], "queries", limits)
            flat = False
        elif isinstance(payload.get("query"), list):
            queries = check_queries(payload["query"], "query", limits)
            flat = False
        elif "query" in payload:
            queries = [check_query(payload["query"], "query", limits)]
            flat = as_msgpack  # GEM: one query in msgpack -> the flat list of its hits
        else:
            raise RequestError(
                422, "the body needs 'queries' (a list of strings) or 'query' (a string)"
            )
        check_hits(len(queries), k, limits)
        results = await self.run_search(queries, k)
        if flat:
            return {"result": _search_r1_items(results[0], with_scores)}
        return {"result": [_search_r1_items(hits, with_scores) for hits in results]}

    async def search_one(self, payload: dict[str, Any], _as_msgpack: bool) -> Any:
        if "query" not in payload:
            raise RequestError(422, "the body needs 'query' (a string)")
        query = check_query(payload["query"], "query", self.limits)
        k = check_topk(payload.get("top_n"), "top_n", self.limits)
        with_scores = check_flag(payload.get("return_score"), "return_score")
        hits = (await self.run_search([query], k))[0]
        docs = [_doc(h) for h in hits]
        return [docs, [h.score for h in hits]] if with_scores else docs

    async def search_batch(self, payload: dict[str, Any], _as_msgpack: bool) -> Any:
        key = "query" if "query" in payload else "queries"
        if key not in payload:
            raise RequestError(422, "the body needs 'query' (a list of strings)")
        queries = check_queries(payload[key], key, self.limits)
        k = check_topk(payload.get("top_n"), "top_n", self.limits)
        with_scores = check_flag(payload.get("return_score"), "return_score")
        check_hits(len(queries), k, self.limits)
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
                "max_hits_per_request": limits.max_hits_per_request,
            },
            "stats": self.stats.as_dict(),
        }


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
