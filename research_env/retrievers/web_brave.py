"""``retriever="brave"``: the Brave Search API (the machinery: :mod:`.web`).

``GET {base_url}/res/v1/web/search?q=...&count=k`` with header ``X-Subscription-Token``
(from ``$BRAVE_API_KEY``); the answer's ``web.results`` list holds ``{"title", "url",
"description", "extra_snippets"?}`` per result (``description`` marks matches with
``<strong>``, removed here); an answer without ``web`` has no web results.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from research_env.retrievers.web import WebResult, WebSearchRetriever, web_factory

__all__ = ["BraveRetriever", "brave_factory"]


class BraveRetriever(WebSearchRetriever):
    """Brave's web search API; arguments as :class:`WebSearchRetriever`."""

    name = "brave"
    default_url = "https://api.search.brave.com"
    key_env = "BRAVE_API_KEY"
    max_k = 20

    def build_request(
        self, query: str, k: int, key: str | None
    ) -> tuple[str, str, dict[str, str], Any]:
        url = f"{self.base_url}/res/v1/web/search?{urlencode({'q': query, 'count': k})}"
        headers = {"Accept": "application/json", "X-Subscription-Token": key or ""}
        return "GET", url, headers, None

    def parse_results(self, payload: Any) -> list[WebResult]:
        if not isinstance(payload, dict):
            raise ValueError(f"expected a JSON object, got {type(payload).__name__}")
        web = payload.get("web", {"results": []})
        items = web.get("results") if isinstance(web, dict) else None
        if not isinstance(items, list) or not all(isinstance(r, dict) for r in items):
            raise ValueError("'web.results' must be a list of objects")
        results = []
        for item in items:
            extra = item.get("extra_snippets") or []
            if not isinstance(extra, list):
                raise ValueError("'extra_snippets' must be a list of strings")
            snippet = " ".join([str(item.get("description", "")), *map(str, extra)])
            results.append(WebResult(str(item.get("title", "")), str(item.get("url", "")), snippet))
        return results


brave_factory = web_factory(BraveRetriever)
