"""Web search APIs as retrievers: what every provider shares (key, budget, retries, passages).

Three providers are built in, each a small file beside this one, chosen because their
search APIs are public, documented, versioned and answer JSON with a title, a URL and a
snippet per result:

* ``serper`` (:mod:`~research_env.retrievers.web_serper`): Google results through
  serper.dev, ``POST /search`` with ``X-API-KEY``; the API DeepResearcher, ASearcher and
  R1-Searcher train with, so their settings can be matched.
* ``brave`` (:mod:`~research_env.retrievers.web_brave`): Brave's own index,
  ``GET /res/v1/web/search`` with ``X-Subscription-Token``; an independent index (not a
  Google or Bing reseller) with a documented, stable v1 API.
* ``searxng`` (:mod:`~research_env.retrievers.web_searxng`): a self-hosted metasearch
  engine, ``GET /search?format=json`` with no key and no bill; the way to run a web
  search agent without a paid account (or behind a firewall).

Each is selectable by name like ``bm25``: ``MultiHopSearchEnv(retriever="serper",
retriever_kwargs={"max_requests": 500})``, ``env.retriever: serper`` in YAML, or
``--retriever serper`` on the command line. What they share, here:

* **the key** comes from an environment variable (``SERPER_API_KEY``, ``BRAVE_API_KEY``;
  ``api_key_env=`` names another). It is never logged, never part of an error message,
  ``repr`` or fingerprint (a provider's error text that echoes it is redacted).
* **a per-run budget** (:class:`SearchBudget`) in requests (``max_requests``) and in
  money (``max_cost``, US dollars, priced by :data:`PRICES_USD`, which ``price=``
  overrides): a batch of searches that would pass it raises :class:`BudgetExhausted`
  before sending anything, so the env's episodes are left as they were (a search that
  raises changes no episode) and every answer already paid for is in the query cache.
  Every request *sent* is counted, retries included: the count bounds the bill from
  above.
* **the persistent query cache** (:mod:`~research_env.retrievers.query_cache`) in front by
  default (``<cache dir>/web-search/<provider>.sqlite``; ``cache=False`` turns it off,
  ``cache="path.sqlite"`` moves it): a re-run asks the API nothing and costs nothing.
* **rate limiting** (``requests_per_second``) and **retries** of 429, 408, 5xx, timeouts
  and non-JSON answers with exponential backoff and jitter, waiting at least what a
  ``Retry-After`` header asks (seconds or an HTTP date; more than ``max_retry_after`` is an
  error at once rather than a silent long stall).
* **a deadline**: ``timeout`` bounds each request in all (the deadline transport of
  :mod:`~research_env.retrievers.http_deadline`), so a slow answer cannot hang a run.
* **snippets become passages**: each result is a ``Document(url, '"title"\\nsnippet')``
  (the corpus shape the templates expect), cut to ``max_chars`` characters and
  ``max_words`` words, scored by rank (1, 1/2, 1/3, ...; providers' own scores do not
  compare).
* **a configurable base URL** (``base_url=``), for a proxy, a self-hosted instance, or a
  loopback fake in tests.

A 401/403 is a :class:`WebSearchError` naming the environment variable to check; any
other 4xx, or JSON not in the provider's documented shape, is one at once (not retried).
The HTTP client talks to httpcore directly (for the deadline), so ``HTTP(S)_PROXY`` is
not read: point ``base_url`` at a forwarding proxy if the run needs one.
"""

from __future__ import annotations

import email.utils
import html
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpcore

from research_env.data.types import Document
from research_env.retrievers.base import Retriever, SearchHit
from research_env.retrievers.http import RetrievalError
from research_env.retrievers.http_deadline import (
    AnswerTooLarge,
    DeadlineBackend,
    deadline_request,
)
from research_env.retrievers.http_endpoints import backoff_delay

__all__ = [
    "PRICES_USD",
    "BudgetExhausted",
    "SearchBudget",
    "WebResult",
    "WebSearchError",
    "WebSearchRetriever",
    "web_factory",
]

# US dollars per request at each provider's entry-level paid tier (serper.dev: 50k
# queries for $50; Brave Search API "Data for Search" Base: $3 per 1,000 requests;
# SearXNG: self-hosted). Prices change: pass price= (or edit this table) for yours.
PRICES_USD: dict[str, float] = {"serper": 0.001, "brave": 0.003, "searxng": 0.0}


class WebSearchError(RetrievalError):
    """A web search API could not answer; the message says why and what to do."""


class BudgetExhausted(WebSearchError):
    """The run's search budget (requests or money) is spent; nothing was sent."""


@dataclass(frozen=True)
class WebResult:
    """One search result as a provider returns it."""

    title: str
    url: str
    snippet: str


class SearchBudget:
    """Requests and money a run may spend; thread-safe.

    ``max_requests`` / ``max_cost`` (US dollars) of ``None`` mean no limit; ``price`` is
    the cost of one request."""

    def __init__(
        self, max_requests: int | None = None, max_cost: float | None = None, price: float = 0.0
    ) -> None:
        if max_requests is not None and max_requests < 0:
            raise ValueError(f"max_requests must be >= 0 or None, got {max_requests}")
        if max_cost is not None and max_cost < 0:
            raise ValueError(f"max_cost must be >= 0 or None, got {max_cost}")
        if price < 0:
            raise ValueError(f"price must be >= 0 US dollars per request, got {price}")
        self.max_requests = max_requests
        self.max_cost = max_cost
        self.price = price
        self.requests = 0
        self._lock = threading.Lock()

    @property
    def cost(self) -> float:
        """US dollars spent so far (requests sent times the price)."""
        return self.requests * self.price

    def shortfall(self, n: int) -> str | None:
        """Why ``n`` more requests would pass the budget, or None if they fit."""
        with self._lock:
            return self._shortfall(n)

    def _shortfall(self, n: int) -> str | None:
        if self.max_requests is not None and self.requests + n > self.max_requests:
            return (
                f"{n} more request(s) would pass max_requests={self.max_requests} "
                f"({self.requests} sent)"
            )
        if self.max_cost is not None and (self.requests + n) * self.price > self.max_cost + 1e-12:
            return (
                f"{n} more request(s) at ${self.price:g} would pass max_cost=${self.max_cost:g} "
                f"(${self.cost:.4f} spent)"
            )
        return None

    def charge(self, n: int = 1) -> str | None:
        """Count ``n`` requests if they fit (None), else say why not (and count nothing)."""
        with self._lock:
            why = self._shortfall(n)
            if why is None:
                self.requests += n
            return why

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "cost_usd": round(self.cost, 6),
            "max_requests": self.max_requests,
            "max_cost_usd": self.max_cost,
            "price_usd": self.price,
        }


class _Retry(Exception):
    """Internal: worth another attempt, after at least ``wait`` seconds."""

    def __init__(self, reason: str, wait: float = 0.0) -> None:
        super().__init__(reason)
        self.wait = wait


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` header's wait in seconds (delta-seconds or an HTTP date), or None."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_TAG = re.compile(r"<[^>]{0,200}>")


def clean_snippet(text: str) -> str:
    """A snippet as plain text: HTML tags (Brave's ``<strong>``) and entities removed,
    whitespace collapsed."""
    return " ".join(html.unescape(_TAG.sub("", text)).split())


def _public_url(url: str) -> str:
    """``url`` without a user:password part (a fingerprint or message may show it)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


class WebSearchRetriever:
    """A web search API as a ``Retriever``; subclasses say how to ask and how to read.

    A subclass sets ``name``, ``default_url``, ``key_env`` (None: no key) and
    ``max_k``, and implements :meth:`build_request` and :meth:`parse_results`.

    Arguments:
        base_url: the API's root (default: the provider's public one).
        api_key_env: the environment variable holding the key (default: ``key_env``).
        max_requests, max_cost: the run's budget (None: unlimited); see :class:`SearchBudget`.
        price: US dollars per request (default: :data:`PRICES_USD`).
        timeout: seconds for one request, in all. retries, backoff, max_backoff: retry
            policy. max_retry_after: the longest ``Retry-After`` honoured.
        requests_per_second: at most this many request starts per second (None: no limit).
        max_chars, max_words: caps on each passage (None: no cap).
        max_answer_bytes: refuse larger answers.
        sleep: the function that waits (tests pass one that records instead).
    """

    name = "web"
    default_url = ""
    key_env: str | None = None
    max_k = 10

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key_env: str | None = None,
        max_requests: int | None = None,
        max_cost: float | None = None,
        price: float | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        max_retry_after: float = 120.0,
        requests_per_second: float | None = None,
        max_chars: int | None = 1000,
        max_words: int | None = None,
        max_answer_bytes: int = 4 * 1024 * 1024,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if timeout <= 0 or retries < 0 or backoff < 0 or max_retry_after < 0:
            raise ValueError("need timeout > 0, retries >= 0, backoff >= 0, max_retry_after >= 0")
        if requests_per_second is not None and requests_per_second <= 0:
            raise ValueError(f"requests_per_second must be > 0 or None, got {requests_per_second}")
        for cap_name, cap in (("max_chars", max_chars), ("max_words", max_words)):
            if cap is not None and cap < 1:
                raise ValueError(f"{cap_name} must be >= 1 or None, got {cap}")
        url = (base_url or self.default_url).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {url!r}")
        self.base_url = url
        self.api_key_env = api_key_env or self.key_env
        self._key: str | None = None
        if self.api_key_env is not None:
            self._key = os.environ.get(self.api_key_env) or None
            if self._key is None:
                raise WebSearchError(
                    _public_url(url),
                    f"{self.name} needs an API key: set the environment variable "
                    f"{self.api_key_env} (or pass api_key_env='OTHER_VARIABLE')",
                )
        self.budget = SearchBudget(
            max_requests, max_cost, PRICES_USD.get(self.name, 0.0) if price is None else price
        )
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.max_backoff, self.max_retry_after = max_backoff, max_retry_after
        self.min_interval = 0.0 if requests_per_second is None else 1.0 / requests_per_second
        self.max_chars, self.max_words = max_chars, max_words
        self.max_answer_bytes = max_answer_bytes
        self._sleep = sleep
        self._random = random.Random()
        self._pace = threading.Lock()
        self._next_start = 0.0
        self._pool = httpcore.ConnectionPool(network_backend=DeadlineBackend())

    # ---------------------------------------------------------------- subclass hooks
    def build_request(
        self, query: str, k: int, key: str | None
    ) -> tuple[str, str, dict[str, str], Any]:
        """``(method, url, headers, JSON body or None)`` asking for ``k`` results."""
        raise NotImplementedError

    def parse_results(self, payload: Any) -> list[WebResult]:
        """The results in a decoded answer; ValueError saying what is not as documented."""
        raise NotImplementedError

    def auth_hint(self, status: int) -> str:
        """What to check when the API answers 401/403."""
        return (
            f"{self.name} rejected the API key read from ${self.api_key_env} (HTTP {status}): "
            f"check that {self.api_key_env} holds a valid, active key with quota left"
        )

    # ------------------------------------------------------------------------ search
    def search(self, queries: Sequence[str], k: int) -> list[list[SearchHit]]:
        """Top-``k`` passages per query, one request per query (in order)."""
        if k < 0:
            raise ValueError(f"k must be >= 0, not {k}")
        queries = list(queries)
        if not queries or k == 0:
            return [[] for _ in queries]
        why = self.budget.shortfall(len(queries))
        if why is not None:
            raise BudgetExhausted(_public_url(self.base_url), self._spent_message(why))
        return [self._search_one(query, k) for query in queries]

    def _spent_message(self, why: str) -> str:
        return (
            f"the {self.name} search budget is spent: {why}; nothing was sent for this "
            "batch and the episodes are unchanged. Answers already fetched are in the "
            "query cache, so a re-run with a larger max_requests/max_cost repeats none of them"
        )

    def _search_one(self, query: str, k: int) -> list[SearchHit]:
        method, url, headers, body = self.build_request(query, min(k, self.max_k), self._key)
        where = _public_url(url.split("?", 1)[0])
        last = "no attempt made"
        for attempt in range(self.retries + 1):
            why = self.budget.charge(1)
            if why is not None:
                raise BudgetExhausted(where, self._spent_message(why))
            self._wait_turn()
            try:
                payload = self._request_json(method, url, headers, body, where)
            except _Retry as failure:
                last = str(failure)
                if attempt < self.retries:
                    delay = backoff_delay(attempt + 1, self.backoff, self.max_backoff, self._random)
                    self._sleep(max(delay, failure.wait))
                continue
            try:
                results = self.parse_results(payload)
            except (ValueError, TypeError, KeyError) as error:
                raise WebSearchError(
                    where, self._redact(f"answer not in {self.name}'s documented shape: {error}")
                ) from None
            return [self._hit(r, rank) for rank, r in enumerate(results[:k])]
        raise WebSearchError(
            where, self._redact(f"gave up after {self.retries + 1} attempts; last error: {last}")
        )

    def _hit(self, result: WebResult, rank: int) -> SearchHit:
        text = clean_snippet(result.snippet)
        if self.max_words is not None:
            words = text.split()
            if len(words) > self.max_words:
                text = " ".join(words[: self.max_words]) + " ..."
        title = clean_snippet(result.title)
        contents = f'"{title}"\n{text}' if title else text
        if self.max_chars is not None and len(contents) > self.max_chars:
            contents = contents[: self.max_chars].rstrip() + " ..."
        return SearchHit(Document(result.url or f"{self.name}:{rank}", contents), 1.0 / (rank + 1))

    def _wait_turn(self) -> None:
        """Space request starts ``min_interval`` apart (across threads)."""
        if not self.min_interval:
            return
        with self._pace:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + self.min_interval
        if start > now:
            self._sleep(start - now)

    # --------------------------------------------------------------------- transport
    def _request_json(
        self, method: str, url: str, headers: dict[str, str], body: Any, where: str
    ) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        if data is not None:
            headers = {**headers, "content-type": "application/json"}
        try:
            status, answer_headers, content = deadline_request(
                self._pool, method, url, headers, data, self.timeout, self.max_answer_bytes
            )
        except httpcore.TimeoutException:
            raise _Retry(f"timed out: no whole answer within {self.timeout}s") from None
        except (httpcore.NetworkError, httpcore.ProtocolError) as error:
            raise _Retry(f"{type(error).__name__}: {error}") from None
        except AnswerTooLarge as error:
            raise WebSearchError(where, f"{error} (max_answer_bytes)") from None
        detail = self._redact(content[:300].decode("utf-8", "replace").strip())
        if status in (401, 403):
            raise WebSearchError(where, self.auth_hint(status))
        if status == 429 or status == 408 or status >= 500:
            wait = retry_after_seconds(answer_headers.get("retry-after"))
            if wait is not None and wait > self.max_retry_after:
                raise WebSearchError(
                    where,
                    f"HTTP {status}: the API asks to wait {wait:.0f}s (Retry-After), more than "
                    f"max_retry_after={self.max_retry_after:g}s: the quota is likely spent "
                    "for now; resume later (cached answers are kept)",
                )
            raise _Retry(f"HTTP {status}: {detail}", wait or 0.0)
        if status >= 400:
            raise WebSearchError(where, f"HTTP {status}: {detail}")
        try:
            return json.loads(content)
        except (ValueError, RecursionError):
            raise _Retry(f"answer is not JSON: {detail[:120]!r}") from None

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    # ---------------------------------------------------------------------- lifetime
    def stats(self) -> dict[str, Any]:
        """What the run spent: requests sent, their cost, and the limits."""
        return self.budget.as_dict()

    def fingerprint(self) -> dict[str, Any]:
        """Provider, endpoint and passage caps (what changes the answers); never the key."""
        return {
            "name": self.name,
            "url": _public_url(self.base_url),
            "max_chars": self.max_chars,
            "max_words": self.max_words,
        }

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> WebSearchRetriever:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_public_url(self.base_url)!r}, budget={self.stats()})"


def web_factory(cls: type[WebSearchRetriever]) -> Callable[..., Retriever]:
    """The registry factory of a provider: ``factory(corpus, cache_dir, cache=True, **kw)``
    builds ``cls(**kw)`` behind the persistent query cache (``cache``: True for
    ``<cache_dir>/web-search/<name>.sqlite``, a path, or False for none). The corpus is
    not used: the web is the corpus."""

    def factory(
        corpus: object = None,
        cache_dir: str | os.PathLike[str] | None = None,
        cache: bool | str | os.PathLike[str] = True,
        **kwargs: Any,
    ) -> Retriever:
        retriever = cls(**kwargs)
        if cache is False:
            return retriever
        from research_env.retrievers.query_cache import PersistentCachedRetriever
        from research_env.storage import cache_root

        if cache is True:
            path = cache_root(cache_dir) / "web-search" / f"{cls.name}.sqlite"
        else:
            path = Path(cache)
        return PersistentCachedRetriever(retriever, path)

    factory.__name__ = f"{cls.name}_factory"
    return factory
