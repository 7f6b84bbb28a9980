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
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import httpcore

from research_env.data.types import Document
from research_env.retrievers.base import SearchHit

__all__ = ["PROTOCOLS", "HttpRetriever", "RetrievalError", "document_from_wire", "http_factory"]

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


def document_from_wire(doc: Any) -> Document:
    """A :class:`Document` from a server's JSON document (dict or plain string).

    Raises ValueError naming the problem when ``doc`` is neither, or lacks text.
    """
    if isinstance(doc, str):
        return Document(id=_content_id(doc), contents=doc)
    if not isinstance(doc, dict):
        raise ValueError(f"a document must be an object or a string, got {_kind(doc)}")
    contents = doc.get("contents")
    if contents is None:
        text = _optional_str(doc, "text") or _optional_str(doc, "content")
        title = _optional_str(doc, "title")
        if text is None and title is None:
            keys = ", ".join(sorted(str(key) for key in doc)[:10]) or "none"
            raise ValueError(f"a document needs 'contents' (or 'text' / 'title'); its keys: {keys}")
        contents = f'"{title}"\n{text or ""}' if title else (text or "")
    elif not isinstance(contents, str):
        raise ValueError(f"a document's 'contents' must be a string, got {_kind(contents)}")
    doc_id = doc.get("id", doc.get("doc_id", doc.get("docid")))
    if doc_id is None or doc_id == "":
        # Without an id, the contents identify the document (for dedup and metrics).
        return Document(id=_content_id(contents), contents=contents)
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
        raise ValueError(f"a document id must be a string or an integer, got {_kind(doc_id)}")
    return Document(id=str(doc_id), contents=contents)


def _content_id(contents: str) -> str:
    return "sha1:" + hashlib.sha1(contents.encode("utf-8", "replace")).hexdigest()[:16]


def _optional_str(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"a document's {key!r} must be a string, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    """A JSON value's type in JSON's words, for error messages."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"the number {value!r}"
    return names.get(type(value), type(value).__name__)


def _score(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"a score must be a number, got {_kind(value)}")
    return float(value)


def _hits_from_items(items: Any) -> list[SearchHit]:
    """Search-R1 items: ``{"document": doc, "score": s}`` or bare documents."""
    if not isinstance(items, list):
        raise ValueError(f"expected a list of hits, got {_kind(items)}")
    hits = []
    for item in items:
        if isinstance(item, dict) and "document" in item:
            score = _score(item["score"]) if "score" in item else 0.0
            hits.append(SearchHit(document_from_wire(item["document"]), score))
        else:
            hits.append(SearchHit(document_from_wire(item), 0.0))
    return hits


def _is_score_lists(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(row, list) and all(isinstance(s, (int, float)) for s in row) for row in value
    )


def _split_flashrag_batch(payload: Any, n_queries: int) -> tuple[list[Any], list[Any] | None]:
    """``[docs_lists, scores_lists]`` or ``docs_lists`` -> ``(docs_lists, scores_lists)``.

    The two shapes differ in the second element: a list of number lists (scores) versus
    a list of documents (the second query's hits), so even two queries are unambiguous.
    """
    if not isinstance(payload, list):
        raise ValueError(f"expected a list of result lists, got {_kind(payload)}")
    if (
        len(payload) == 2
        and isinstance(payload[0], list)
        and len(payload[0]) == n_queries
        and _is_score_lists(payload[1])
        and len(payload[1]) == n_queries
    ):
        return payload[0], payload[1]
    return payload, None


def _split_flashrag_single(payload: Any) -> tuple[list[Any], list[Any] | None]:
    """``/search`` answers ``[docs, scores]`` or ``docs`` for one query."""
    if not isinstance(payload, list):
        raise ValueError(f"expected a list of documents, got {_kind(payload)}")
    if len(payload) == 2 and isinstance(payload[0], list) and _is_score_lists([payload[1]]):
        return payload[0], payload[1]
    return payload, None


def _hits_from_docs(docs: Any, scores: Any | None) -> list[SearchHit]:
    if not isinstance(docs, list):
        raise ValueError(f"expected a list of documents, got {_kind(docs)}")
    if scores is None:
        scores = [0.0] * len(docs)
    if len(scores) != len(docs):
        raise ValueError(f"{len(docs)} documents but {len(scores)} scores")
    return [SearchHit(document_from_wire(d), _score(s)) for d, s in zip(docs, scores, strict=True)]


def _per_query(lists: list[Any], parse: Any, name: str) -> list[list[SearchHit]]:
    """``parse(i, lists[i])`` for each query; an error says which list was wrong."""
    results = []
    for i, item in enumerate(lists):
        try:
            results.append(parse(i, item))
        except ValueError as error:
            raise ValueError(f"{name}[{i}]: {error}") from None
    return results


# ------------------------------------------------------------------ total deadline
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


class _DeadlineBackend(httpcore.NetworkBackend):
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
        # the network stream (see _DeadlineStream), which httpx gives no way to set.
        self._pool = httpcore.ConnectionPool(network_backend=_DeadlineBackend())

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
                raise ValueError(f"expected an object with 'result', got {_kind(payload)}")
            result = payload["result"]
            if not isinstance(result, list) or len(result) != len(queries):
                got = f"{len(result)} lists" if isinstance(result, list) else _kind(result)
                raise ValueError(
                    f"'result' must hold one list per query ({len(queries)}), got {got}"
                )
            return _per_query(result, lambda _i, items: _hits_from_items(items), "result")
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
                docs, scores = _split_flashrag_single(payload)
                docs_lists, score_lists = [docs], None if scores is None else [scores]
            else:
                docs_lists, score_lists = _split_flashrag_batch(payload, len(queries))
            if len(docs_lists) != len(queries):
                raise ValueError(f"expected {len(queries)} result lists, got {len(docs_lists)}")
            return _per_query(
                docs_lists,
                lambda i, docs: _hits_from_docs(
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
            raise _RetryableFailure(f"HTTP {status}: {_detail(status, content)}")
        if status >= 400:
            raise RetrievalError(endpoint, f"HTTP {status}: {_detail(status, content)}")
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
        token = _deadline.set(time.monotonic() + self.timeout)
        try:
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
        finally:
            _deadline.reset(token)
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
                last = f"HTTP {status}: {_detail(status, content)}"
                continue
            if 200 <= status < 300:
                return "search-r1"
            if status in (404, 405):
                return "flashrag"
            raise RetrievalError(
                self.url,
                f"cannot tell the protocol: /retrieve answered HTTP {status} "
                f"({_detail(status, content)}); pass protocol='search-r1' or 'flashrag'",
            )
        raise RetrievalError(
            self.url,
            f"unreachable while detecting the protocol after {self.retries + 1} attempts; "
            f"last error: {last}",
        )

    # --------------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Close the connection pool."""
        self._pool.close()

    def __enter__(self) -> HttpRetriever:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HttpRetriever({self.url!r}, protocol={self._protocol or 'auto'!r})"


def _detail(status: int, content: bytes) -> str:
    """The server's error message: FastAPI's ``detail`` when present, else the text."""
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        text = content[:300].decode("utf-8", "replace")
        return text or f"HTTP {status} with an empty body"
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:300]
    return content[:300].decode("utf-8", "replace")


def http_factory(url: str, cache_dir: object = None, **kwargs: Any) -> HttpRetriever:
    """Registry factory for ``retriever="http://..."`` (``retriever_kwargs`` pass through)."""
    return HttpRetriever(url, **kwargs)
