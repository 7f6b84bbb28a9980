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
* failures (connection errors, timeouts, HTTP 5xx, and 408/429, the two 4xx statuses
  that mean "try again later") are retried ``retries`` times with exponential backoff and
  jitter (each delay drawn between half and all of ``backoff * 2**i``, so many workers
  that failed together do not retry together), and then :class:`RetrievalError` names
  the URL and the last failure. The worst-case time of one request batch is
  :attr:`HttpRetriever.max_wait_seconds`.
* any other 4xx answer is the caller's fault and is raised at once with the server's
  message.
* an answer that is not what the protocol promises (not JSON, nested too deeply to
  decode, missing fields, wrong types, fewer result lists than queries, a passage with no
  text) raises :class:`RetrievalError` saying what was wrong: it never becomes an empty
  hit list or an empty document.

Many workers, several servers (deployment: docs/retrieval-deployment.md):

* ``HttpRetriever(["http://a:8000", "http://b:8000"])`` (or the one string
  ``"http://a:8000,http://b:8000"``, which is what a YAML ``env.retriever`` holds) spreads
  requests over *replicas* of one index: ``policy="round_robin"`` (the default) sends each
  request to the next server, and a retry goes to the server after the one that failed.
* ``policy="shard"`` (or a ``#shard`` suffix on the string) treats the servers as *shards*
  of one corpus, each indexing a disjoint part: every query goes to every shard (in
  parallel), each shard's top ``k`` are merged by score, highest first (ties: earlier
  shard first; a document id seen twice is kept once), and the top ``k`` kept. Shards must
  send scores that compare across shards (dense inner products from one encoder do; BM25
  scores differ slightly with each shard's term statistics). A shard that fails after its
  retries fails the search: a missing shard would silently change what is retrieved.
* ``max_concurrency`` caps the requests this client has in flight at once, across all
  the threads that share it (a semaphore around each HTTP request): a trainer's threads
  cannot pile more concurrent searches onto a server than it can take.

This module is the client (protocol choice, batching, retries); the deadline transport
lives in :mod:`research_env.retrievers.http_deadline` and the strict reading of answers
(:func:`~research_env.retrievers.http_wire.document_from_wire` and friends) in
:mod:`research_env.retrievers.http_wire`.

Why one file of ~430 lines: it is one idea, the retrieval client (endpoints, retries,
batching, the protocols); its transport deadline and answer parsing live in
``http_deadline.py`` and ``http_wire.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import httpcore

from research_env.retrievers.base import SearchHit
from research_env.retrievers.http_deadline import DeadlineBackend, request_deadline
from research_env.retrievers.http_endpoints import backoff_delay, merge_shards, parse_endpoints
from research_env.retrievers.http_wire import (
    error_detail,
    hits_from_docs,
    hits_from_items,
    json_kind,
    per_query,
    split_flashrag_batch,
    split_flashrag_single,
)

__all__ = ["POLICIES", "PROTOCOLS", "HttpRetriever", "RetrievalError", "http_factory"]

Protocol = Literal["auto", "search-r1", "flashrag"]
PROTOCOLS: tuple[str, ...] = ("search-r1", "flashrag")
Policy = Literal["round_robin", "shard"]
POLICIES: tuple[str, ...] = ("round_robin", "shard")


def _retryable(status: int) -> bool:
    """Server trouble (5xx) or "try again later" (408 Request Timeout, 429 Too Many
    Requests); every other 4xx is the caller's fault and would fail again."""
    return status >= 500 or status in (408, 429)


def _too_large(cap: int, what: str) -> str:
    return (
        f"the answer {what}; the limit is {cap} bytes (HttpRetriever(max_answer_bytes=...)): "
        "send fewer queries per request (batch_size) or ask for fewer hits (k)"
    )


class RetrievalError(RuntimeError):
    """A retrieval server could not answer; ``url`` and ``reason`` say where and why."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"retrieval server {url}: {reason}")


class _RetryableFailure(Exception):
    """Internal: a failure worth another attempt."""


class HttpRetriever:
    """Retriever backed by one or several remote servers; implements ``Retriever``.

    Arguments:
        url: the server, e.g. ``"http://127.0.0.1:8000"``; several as a list or as one
            comma-separated string (a ``#shard`` / ``#round_robin`` suffix on the string
            sets ``policy``). A URL ending in an endpoint (``/retrieve``,
            ``/batch_search``, ``/search``) also fixes the protocol.
        protocol: ``"auto"`` (default: probe the first server once on first use, then
            remember; all servers must speak the same one), ``"search-r1"`` or
            ``"flashrag"``.
        policy: with several servers, ``"round_robin"`` (default: replicas of one index;
            each request goes to the next one, a retry to the one after) or ``"shard"``
            (each holds a disjoint part of the corpus; every query goes to all of them and
            the hits are merged by score). See the module docstring.
        timeout: seconds one HTTP request may take in all (connect, send, wait for and
            read the answer), default 30.
        retries: extra attempts after a retryable failure (default 3, so 4 in all).
        backoff: first retry delay in seconds, doubled each retry (default 0.5), capped
            at ``max_backoff`` (default 8), and jittered down by up to half.
        batch_size: most queries sent in one request (default 256); bigger batches are
            split into consecutive requests.
        max_concurrency: most HTTP requests in flight at once from this client, over all
            threads and servers (``None``, the default: no cap).
        headers: extra HTTP headers (e.g. an auth token).
        max_answer_bytes: the largest answer body read (default 64 MiB); a larger one
            is a :class:`RetrievalError` naming this limit, raised as soon as the body
            (or its ``Content-Length``) passes it, so a runaway server cannot fill this
            process's memory.

    ``search`` returns one list per query of at most ``k`` hits in the server's order (in
    score order across shards). Hits carry the server's scores (0.0 when it sends none).
    """

    def __init__(
        self,
        url: str | Sequence[str],
        protocol: Protocol = "auto",
        *,
        policy: Policy | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        batch_size: int = 256,
        max_concurrency: int | None = None,
        headers: dict[str, str] | None = None,
        max_answer_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        if protocol not in ("auto", *PROTOCOLS):
            raise ValueError(
                f"protocol must be 'auto', 'search-r1' or 'flashrag', not {protocol!r}"
            )
        if policy is not None and policy not in POLICIES:
            raise ValueError(f"policy must be 'round_robin' or 'shard', not {policy!r}")
        if timeout <= 0 or retries < 0 or backoff < 0 or batch_size < 1:
            raise ValueError("need timeout > 0, retries >= 0, backoff >= 0 and batch_size >= 1")
        if max_answer_bytes < 1:
            raise ValueError(f"max_answer_bytes must be >= 1, got {max_answer_bytes}")
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1 or None, got {max_concurrency}")
        self.urls, named_policy, implied = parse_endpoints(url, POLICIES)
        if policy is not None and named_policy is not None and policy != named_policy:
            raise ValueError(f"policy={policy!r} but the URL says #{named_policy}")
        self.url = self.urls[0]
        self.policy: str = policy or named_policy or "round_robin"
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.batch_size = batch_size
        self.max_concurrency = max_concurrency
        self.max_answer_bytes = max_answer_bytes
        if protocol == "auto" and implied is not None:
            protocol = implied  # type: ignore[assignment]
        self._protocol: str | None = None if protocol == "auto" else protocol
        self._protocol_lock = threading.Lock()
        self._headers = [
            (b"content-type", b"application/json"),
            *(
                (name.encode("latin-1"), value.encode("latin-1"))
                for name, value in (headers or {}).items()
            ),
        ]
        self._next_server = itertools.count()  # round robin (next() is atomic in CPython)
        self._slots = (
            None if max_concurrency is None else threading.BoundedSemaphore(max_concurrency)
        )
        self._random = random.Random()
        self._shard_pool: ThreadPoolExecutor | None = None
        # httpcore is the engine under httpx; using it directly lets the deadline live in
        # the network stream (research_env.retrievers.http_deadline), which httpx cannot.
        # The pool itself is not a second, hidden cap: max_concurrency is the one.
        self._pool = httpcore.ConnectionPool(
            network_backend=DeadlineBackend(), max_connections=max_concurrency
        )

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
        """Upper bound on the time one request batch can take before it fails (not
        counting time spent waiting for a ``max_concurrency`` slot)."""
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
            if self.policy == "shard" and len(self.urls) > 1:
                results.extend(self._search_shards(chunk, k))
            else:
                first = next(self._next_server) % len(self.urls)
                servers = self.urls[first:] + self.urls[:first]  # retries fail over in turn
                results.extend(self._search_at(servers, chunk, k))
        return [hits[:k] for hits in results]

    def _search_shards(self, queries: list[str], k: int) -> list[list[SearchHit]]:
        """Every shard answers every query (in parallel); per query, the merged top k."""
        if self._shard_pool is None:
            with self._protocol_lock:
                if self._shard_pool is None:
                    self._shard_pool = ThreadPoolExecutor(
                        len(self.urls), thread_name_prefix="retrieval-shard"
                    )
        protocol = self.protocol  # detected once, before the threads start
        futures = [
            self._shard_pool.submit(self._search_at, [shard], queries, k, protocol)
            for shard in self.urls
        ]
        per_shard = [future.result() for future in futures]  # a failed shard raises here
        for shard, results in zip(self.urls, per_shard, strict=True):
            for i, hits in enumerate(results):
                bad = next((h for h in hits if not math.isfinite(h.score)), None)
                if bad is not None:
                    raise RetrievalError(
                        shard,
                        f"document {bad.document.id!r} for query {i} has score {bad.score}: "
                        "shards' hits are merged by score, which needs finite scores",
                    )
        return [merge_shards([hits[i] for hits in per_shard], k) for i in range(len(queries))]

    def _search_at(
        self, servers: list[str], queries: list[str], k: int, protocol: str | None = None
    ) -> list[list[SearchHit]]:
        if (protocol or self.protocol) == "search-r1":
            return self._search_r1(servers, queries, k)
        return self._flashrag(servers, queries, k)

    def _search_r1(self, servers: list[str], queries: list[str], k: int) -> list[list[SearchHit]]:
        body = {"queries": queries, "topk": k, "return_scores": True}
        endpoint, payload = self._post(servers, "/retrieve", body)
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

    def _flashrag(self, servers: list[str], queries: list[str], k: int) -> list[list[SearchHit]]:
        if len(queries) == 1:
            path = "/search"
            body: dict[str, Any] = {"query": queries[0], "top_n": k, "return_score": True}
        else:
            path = "/batch_search"
            body = {"query": queries, "top_n": k, "return_score": True}
        endpoint, payload = self._post(servers, path, body)
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
    def _post(self, servers: list[str], path: str, body: dict[str, Any]) -> tuple[str, Any]:
        """POST JSON with a deadline and bounded retries, attempt ``i`` to
        ``servers[i % len(servers)]``: ``(endpoint that answered, decoded JSON answer)``."""
        last, endpoint = "no attempt made", servers[0] + path
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(backoff_delay(attempt, self.backoff, self.max_backoff, self._random))
            endpoint = servers[attempt % len(servers)] + path
            try:
                return endpoint, self._post_once(endpoint, body)
            except _RetryableFailure as failure:
                last = str(failure) if len(servers) == 1 else f"{endpoint}: {failure}"
        raise RetrievalError(
            endpoint if len(servers) == 1 else ", ".join(s + path for s in servers),
            f"gave up after {self.retries + 1} attempts; last error: {last}",
        )

    def _post_once(self, endpoint: str, body: dict[str, Any]) -> Any:
        status, content = self._request(endpoint, body)
        if _retryable(status):
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
        """One POST within ``timeout`` seconds in all (after a ``max_concurrency`` slot is
        free): ``(status, body)``, or :class:`_RetryableFailure` when the connection fails
        or time runs out."""
        data = json.dumps(body).encode("utf-8")
        timeouts = dict.fromkeys(("connect", "read", "write", "pool"), self.timeout)
        slot = self._slots if self._slots is not None else contextlib.nullcontext()
        try:
            with (
                slot,
                request_deadline(self.timeout),
                self._pool.stream(
                    "POST",
                    endpoint,
                    headers=self._headers,
                    content=data,
                    extensions={"timeout": timeouts},
                ) as response,
            ):
                return response.status, self._read_capped(endpoint, response)
        except httpcore.TimeoutException as error:
            raise _RetryableFailure(
                f"timed out: no whole answer within {self.timeout}s ({type(error).__name__})"
            ) from error
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.ProxyError) as error:
            raise _RetryableFailure(f"{type(error).__name__}: {error}") from error

    def _read_capped(self, endpoint: str, response: Any) -> bytes:
        """The answer's body, refused once it (or its Content-Length) passes the cap."""
        cap = self.max_answer_bytes
        declared = dict((k.lower(), v) for k, v in response.headers).get(b"content-length", b"")
        if declared.strip().isdigit() and int(declared) > cap:
            raise RetrievalError(endpoint, _too_large(cap, f"declares {int(declared)} bytes"))
        chunks, size = [], 0
        for chunk in response.iter_stream():
            size += len(chunk)
            if size > cap:
                raise RetrievalError(endpoint, _too_large(cap, f"passed {cap} bytes"))
            chunks.append(chunk)
        return b"".join(chunks)

    def _detect_protocol(self) -> str:
        """Ask one tiny Search-R1 request (each attempt of the servers in turn); fall back
        to FlashRAG when /retrieve is absent."""
        probe = {"queries": ["probe"], "topk": 1, "return_scores": True}
        last = "no attempt made"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(backoff_delay(attempt, self.backoff, self.max_backoff, self._random))
            server = self.urls[attempt % len(self.urls)]  # a dead replica is not fatal
            try:
                status, content = self._request(f"{server}/retrieve", probe)
            except _RetryableFailure as failure:
                last = str(failure)
                continue
            if _retryable(status):
                last = f"HTTP {status}: {error_detail(status, content)}"
                continue
            if 200 <= status < 300:
                return "search-r1"
            if status in (404, 405):
                return "flashrag"
            raise RetrievalError(
                server,
                f"cannot tell the protocol: /retrieve answered HTTP {status} "
                f"({error_detail(status, content)}); pass protocol='search-r1' or 'flashrag'",
            )
        raise RetrievalError(
            ", ".join(self.urls),
            f"unreachable while detecting the protocol after {self.retries + 1} attempts; "
            f"last error: {last}",
        )

    # --------------------------------------------------------------------- lifetime
    def fingerprint(self) -> dict[str, Any]:
        """The server it asks (for :mod:`research_env.fingerprint`); what that server
        indexes is the server's business, so name it in the URL or the run's notes."""
        return {"name": "http", "url": self.url}

    def close(self) -> None:
        """Close the connection pool (and the shard threads)."""
        if self._shard_pool is not None:
            self._shard_pool.shutdown(wait=True)
            self._shard_pool = None
        self._pool.close()

    def __enter__(self) -> HttpRetriever:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = repr(self.url) if len(self.urls) == 1 else f"{self.urls!r}, policy={self.policy!r}"
        return f"HttpRetriever({where}, protocol={self._protocol or 'auto'!r})"


def http_factory(url: str, cache_dir: object = None, **kwargs: Any) -> HttpRetriever:
    """Registry factory for ``retriever="http://..."`` (``retriever_kwargs`` pass through;
    ``"http://a:8000,http://b:8000#shard"`` names several servers and the policy)."""
    return HttpRetriever(url, **kwargs)
