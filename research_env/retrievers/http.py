"""A ``Retriever`` that asks a retrieval server over HTTP (Search-R1 or FlashRAG protocol).

Research groups already serve Wikipedia indexes with one of two small HTTP protocols;
speaking both lets the env train against them unchanged (and against our own
``research-env serve``, which answers both):

* **Search-R1** (``search-r1``): ``POST {base}/retrieve`` with
  ``{"queries": [...], "topk": k, "return_scores": true}``, answered by
  ``{"result": [[{"document": {"id", "contents"}, "score"}, ...], ...]}`` (without
  scores each inner item is the document itself).
* **FlashRAG / ReSearch** (``flashrag``): ``POST {base}/batch_search`` with
  ``{"query": [...], "top_n": k, "return_score": true}``, answered by
  ``[docs_per_query, scores_per_query]`` (or just ``docs_per_query`` without scores);
  ``POST {base}/search`` takes one query (``"query": "..."``) and answers
  ``[docs, scores]``.

Documents are dicts with ``id`` and ``contents``; ``title`` + ``text`` (built into
``'"title"\\ntext'``) and plain strings are accepted too.

A training run must never hang on a dead, slow or broken server:

* ``timeout`` bounds each HTTP request *in all*: connecting, sending, waiting and reading
  the answer, so a server that trickles its answer a byte at a time cannot stretch a
  request past it (a per-read timeout, what HTTP clients offer, can: one byte every
  0.4 s held a search for 28.8 s against a 3.3 s budget). The deadline is enforced in the
  network stream under httpcore's connection pool (httpx's own engine), where every read
  and write sees the time left. Talking to httpcore directly also means the
  ``HTTP(S)_PROXY`` environment variables are not consulted: the server is reached
  directly, as a cluster-local retrieval server should be.
* failures (connection errors, timeouts, HTTP 408/429/5xx) are retried ``retries`` times
  with exponential backoff, and then :class:`RetrievalError` names the URL and the last
  failure. The worst-case time of one request batch is
  :attr:`HttpRetriever.max_wait_seconds`.
* a 4xx answer is the caller's fault and is raised at once with the server's message.
* an answer that is not what the protocol promises (not JSON, nested too deeply to
  decode, missing fields, wrong types, fewer result lists than queries) raises
  :class:`RetrievalError` saying what was wrong: it never becomes an empty hit list.

This module is the client (protocol choice, batching, retries); the deadline transport
lives in :mod:`research_env.retrievers.http_deadline` and the strict reading of answers
(:func:`~research_env.retrievers.http_wire.document_from_wire` and friends) in
:mod:`research_env.retrievers.http_wire`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal

import httpcore

from research_env.retrievers.base import SearchHit
from research_env.retrievers.http_deadline import DeadlineBackend, request_deadline
from research_env.retrievers.http_wire import (
    error_detail,
    hits_from_docs,
    hits_from_items,
    json_kind,
    per_query,
    split_flashrag_batch,
    split_flashrag_single,
)

__all__ = ["PROTOCOLS", "HttpRetriever", "RetrievalError", "http_factory"]

Protocol = Literal["auto", "search-r1", "flashrag"]
PROTOCOLS: tuple[str, ...] = ("search-r1", "flashrag")

# Endpoint paths a user may paste as part of the URL; they also pin the protocol.
_ENDPOINT_SUFFIXES = {
    "/retrieve": "search-r1",
    "/batch_search": "flashrag",
    "/search": "flashrag",
}
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class RetrievalError(RuntimeError):
    """A retrieval server could not answer; ``url`` and ``reason`` say where and why."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"retrieval server {url}: {reason}")


class _RetryableFailure(Exception):
    """Internal: a failure worth another attempt."""


class HttpRetriever:
    """Retriever backed by a remote server; implements ``Retriever``.

    Arguments:
        url: the server, e.g. ``"http://127.0.0.1:8000"``. A URL ending in an endpoint
            (``/retrieve``, ``/batch_search``, ``/search``) also fixes the protocol.
        protocol: ``"auto"`` (default: probe once on first use, then remember),
            ``"search-r1"`` or ``"flashrag"``.
        timeout: seconds one HTTP request may take in all (connect, send, wait for and
            read the answer), default 30.
        retries: extra attempts after a retryable failure (default 3, so 4 in all).
        backoff: first retry delay in seconds, doubled each retry (default 0.5) and
            capped at ``max_backoff`` (default 8).
        batch_size: most queries sent in one request (default 256); bigger batches are
            split into consecutive requests.
        headers: extra HTTP headers (e.g. an auth token).

    ``search`` returns one list per query of at most ``k`` hits in the server's order.
    Hits carry the server's scores (0.0 when the server sends none).
    """

    def __init__(
        self,
        url: str,
        protocol: Protocol = "auto",
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        batch_size: int = 256,
        headers: dict[str, str] | None = None,
    ) -> None:
        if protocol not in ("auto", *PROTOCOLS):
            raise ValueError(
                f"protocol must be 'auto', 'search-r1' or 'flashrag', not {protocol!r}"
            )
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        if timeout <= 0 or retries < 0 or backoff < 0 or batch_size < 1:
            raise ValueError("need timeout > 0, retries >= 0, backoff >= 0 and batch_size >= 1")
        base = url.rstrip("/")
        for suffix, implied in _ENDPOINT_SUFFIXES.items():
            if base.endswith(suffix):
                base = base[: -len(suffix)]
                if protocol == "auto":
                    protocol = implied  # type: ignore[assignment]
                break
        self.url = base
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.batch_size = batch_size
        self._protocol: str | None = None if protocol == "auto" else protocol
        self._protocol_lock = threading.Lock()
        self._headers = [
            (b"content-type", b"application/json"),
            *(
                (name.encode("latin-1"), value.encode("latin-1"))
                for name, value in (headers or {}).items()
            ),
        ]
        # httpcore is the engine under httpx; using it directly lets the deadline live in
        # the network stream (research_env.retrievers.http_deadline), which httpx cannot.
        self._pool = httpcore.ConnectionPool(network_backend=DeadlineBackend())

    # ------------------------------------------------------------------ properties
    @property
    def protocol(self) -> str:
        """The protocol in use; probes the server the first time when ``"auto"``."""
        if self._protocol is None:
            with self._protocol_lock:
                if self._protocol is None:
                    self._protocol = self._detect_protocol()
        return self._protocol

    @property
    def max_wait_seconds(self) -> float:
        """Upper bound on the time one request batch can take before it fails."""
        delays = sum(min(self.max_backoff, self.backoff * 2**i) for i in range(self.retries))
        return (self.retries + 1) * self.timeout + delays

    # ---------------------------------------------------------------------- search
    def search(self, queries: Sequence[str], k: int) -> list[list[SearchHit]]:
        """Top-``k`` hits per query, in requests of at most ``batch_size`` queries."""
        if k < 0:
            raise ValueError(f"k must be >= 0, not {k}")
        queries = list(queries)
        if not queries or k == 0:
            return [[] for _ in queries]
        results: list[list[SearchHit]] = []
        for start in range(0, len(queries), self.batch_size):
            chunk = queries[start : start + self.batch_size]
            if self.protocol == "search-r1":
                results.extend(self._search_r1(chunk, k))
            else:
                results.extend(self._flashrag(chunk, k))
        return [hits[:k] for hits in results]

    def _search_r1(self, queries: list[str], k: int) -> list[list[SearchHit]]:
        endpoint = f"{self.url}/retrieve"
        payload = self._post(endpoint, {"queries": queries, "topk": k, "return_scores": True})
        try:
            if not isinstance(payload, dict) or "result" not in payload:
                raise ValueError(f"expected an object with 'result', got {json_kind(payload)}")
            result = payload["result"]
            if not isinstance(result, list) or len(result) != len(queries):
                got = f"{len(result)} lists" if isinstance(result, list) else json_kind(result)
                raise ValueError(
                    f"'result' must hold one list per query ({len(queries)}), got {got}"
                )
            return per_query(result, lambda _i, items: hits_from_items(items), "result")
        except ValueError as error:
            raise RetrievalError(endpoint, f"unexpected Search-R1 answer: {error}") from None

    def _flashrag(self, queries: list[str], k: int) -> list[list[SearchHit]]:
        if len(queries) == 1:
            endpoint = f"{self.url}/search"
            body: dict[str, Any] = {"query": queries[0], "top_n": k, "return_score": True}
        else:
            endpoint = f"{self.url}/batch_search"
            body = {"query": queries, "top_n": k, "return_score": True}
        payload = self._post(endpoint, body)
        try:
            if len(queries) == 1:
                docs, scores = split_flashrag_single(payload)
                docs_lists, score_lists = [docs], None if scores is None else [scores]
            else:
                docs_lists, score_lists = split_flashrag_batch(payload, len(queries))
            if len(docs_lists) != len(queries):
                raise ValueError(f"expected {len(queries)} result lists, got {len(docs_lists)}")
            return per_query(
                docs_lists,
                lambda i, docs: hits_from_docs(
                    docs, None if score_lists is None else score_lists[i]
                ),
                "answer",
            )
        except ValueError as error:
            raise RetrievalError(endpoint, f"unexpected FlashRAG answer: {error}") from None

    # ------------------------------------------------------------------- transport
    def _post(self, endpoint: str, body: dict[str, Any]) -> Any:
        """POST JSON with a deadline and bounded retries; the decoded JSON answer."""
        last = "no attempt made"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))
            try:
                return self._post_once(endpoint, body)
            except _RetryableFailure as failure:
                last = str(failure)
        raise RetrievalError(
            endpoint, f"gave up after {self.retries + 1} attempts; last error: {last}"
        )

    def _post_once(self, endpoint: str, body: dict[str, Any]) -> Any:
        status, content = self._request(endpoint, body)
        if status in _RETRYABLE_STATUS:
            raise _RetryableFailure(f"HTTP {status}: {error_detail(status, content)}")
        if status >= 400:
            raise RetrievalError(endpoint, f"HTTP {status}: {error_detail(status, content)}")
        if not content.strip():
            raise _RetryableFailure(f"HTTP {status} with an empty body instead of JSON")
        try:
            return json.loads(content)
        except RecursionError:
            raise RetrievalError(
                endpoint, f"the answer's JSON ({len(content)} bytes) nests too deeply to decode"
            ) from None
        except ValueError as error:
            raise _RetryableFailure(f"answer is not JSON: {content[:200]!r}") from error

    def _request(self, endpoint: str, body: dict[str, Any]) -> tuple[int, bytes]:
        """One POST within ``timeout`` seconds in all: ``(status, body)``, or
        :class:`_RetryableFailure` when the connection fails or time runs out."""
        data = json.dumps(body).encode("utf-8")
        timeouts = dict.fromkeys(("connect", "read", "write", "pool"), self.timeout)
        try:
            with request_deadline(self.timeout):
                response = self._pool.request(
                    "POST",
                    endpoint,
                    headers=self._headers,
                    content=data,
                    extensions={"timeout": timeouts},
                )
        except httpcore.TimeoutException as error:
            raise _RetryableFailure(
                f"timed out: no whole answer within {self.timeout}s ({type(error).__name__})"
            ) from error
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.ProxyError) as error:
            raise _RetryableFailure(f"{type(error).__name__}: {error}") from error
        return response.status, response.content

    def _detect_protocol(self) -> str:
        """Ask one tiny Search-R1 request; fall back to FlashRAG when /retrieve is absent."""
        probe = {"queries": ["probe"], "topk": 1, "return_scores": True}
        last = "no attempt made"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))
            try:
                status, content = self._request(f"{self.url}/retrieve", probe)
            except _RetryableFailure as failure:
                last = str(failure)
                continue
            if status in _RETRYABLE_STATUS:
                last = f"HTTP {status}: {error_detail(status, content)}"
                continue
            if 200 <= status < 300:
                return "search-r1"
            if status in (404, 405):
                return "flashrag"
            raise RetrievalError(
                self.url,
                f"cannot tell the protocol: /retrieve answered HTTP {status} "
                f"({error_detail(status, content)}); pass protocol='search-r1' or 'flashrag'",
            )
        raise RetrievalError(
            self.url,
            f"unreachable while detecting the protocol after {self.retries + 1} attempts; "
            f"last error: {last}",
        )

    # --------------------------------------------------------------------- lifetime
    def fingerprint(self) -> dict[str, Any]:
        """The server it asks (for :mod:`research_env.fingerprint`); what that server
        indexes is the server's business, so name it in the URL or the run's notes."""
        return {"name": "http", "url": self.url}

    def close(self) -> None:
        """Close the connection pool."""
        self._pool.close()

    def __enter__(self) -> HttpRetriever:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HttpRetriever({self.url!r}, protocol={self._protocol or 'auto'!r})"


def http_factory(url: str, cache_dir: object = None, **kwargs: Any) -> HttpRetriever:
    """Registry factory for ``retriever="http://..."`` (``retriever_kwargs`` pass through)."""
    return HttpRetriever(url, **kwargs)
