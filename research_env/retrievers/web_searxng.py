"""``retriever="searxng"``: a self-hosted SearXNG metasearch engine (machinery: :mod:`.web`).

``GET {base_url}/search?q=...&format=json`` with no key (``base_url`` defaults to
``http://localhost:8080``, SearXNG's container port); the answer's ``results`` list holds
``{"url", "title", "content", "engine", ...}``. The instance must allow the JSON format
(``search.formats: [html, json]`` in its ``settings.yml``); otherwise it answers 403,
which the error says. No bill: its price is 0, a ``max_requests`` budget still applies.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from research_env.retrievers.web import WebResult, WebSearchRetriever, web_factory

__all__ = ["SearxngRetriever", "searxng_factory"]


class SearxngRetriever(WebSearchRetriever):
    """A SearXNG instance's JSON search; arguments as :class:`WebSearchRetriever`."""

    name = "searxng"
    default_url = "http://localhost:8080"
    key_env = None
    max_k = 100  # SearXNG returns one page, whatever k; the first k are kept

    def build_request(
        self, query: str, k: int, key: str | None
    ) -> tuple[str, str, dict[str, str], Any]:
        url = f"{self.base_url}/search?{urlencode({'q': query, 'format': 'json'})}"
        return "GET", url, {"Accept": "application/json"}, None

    def parse_results(self, payload: Any) -> list[WebResult]:
        if not isinstance(payload, dict) or not isinstance(payload.get("results"), list):
            raise ValueError("expected a JSON object with a 'results' list")
        items = payload["results"]
        if not all(isinstance(r, dict) for r in items):
            raise ValueError("'results' must be a list of objects")
        return [
            WebResult(str(r.get("title", "")), str(r.get("url", "")), str(r.get("content") or ""))
            for r in items
        ]

    def auth_hint(self, status: int) -> str:
        return (
            f"the SearXNG instance refused the JSON API (HTTP {status}): enable it with "
            "'search: formats: [html, json]' in its settings.yml (and check any proxy "
            "in front of it)"
        )


searxng_factory = web_factory(SearxngRetriever)
