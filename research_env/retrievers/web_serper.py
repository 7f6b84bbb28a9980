"""``retriever="serper"``: Google results through serper.dev (the machinery: :mod:`.web`).

``POST {base_url}/search`` with header ``X-API-KEY`` (from ``$SERPER_API_KEY``) and body
``{"q": query, "num": k}``; the answer's ``organic`` list holds ``{"title", "link",
"snippet", "position"}`` per result, and an ``answerBox`` (``answer`` or ``snippet``),
when Google shows one, becomes the first passage.
"""

from __future__ import annotations

from typing import Any

from research_env.retrievers.web import WebResult, WebSearchRetriever, web_factory

__all__ = ["SerperRetriever", "serper_factory"]


def _text(item: dict[str, Any], field: str) -> str:
    value = item.get(field, "")
    if not isinstance(value, str):
        raise ValueError(f"{field!r} must be a string, got {type(value).__name__}")
    return value


class SerperRetriever(WebSearchRetriever):
    """serper.dev's Google search API; arguments as :class:`WebSearchRetriever`."""

    name = "serper"
    default_url = "https://google.serper.dev"
    key_env = "SERPER_API_KEY"
    max_k = 100

    def build_request(
        self, query: str, k: int, key: str | None
    ) -> tuple[str, str, dict[str, str], Any]:
        return "POST", f"{self.base_url}/search", {"X-API-KEY": key or ""}, {"q": query, "num": k}

    def parse_results(self, payload: Any) -> list[WebResult]:
        if not isinstance(payload, dict):
            raise ValueError(f"expected a JSON object, got {type(payload).__name__}")
        organic = payload.get("organic", [])
        if not isinstance(organic, list) or not all(isinstance(r, dict) for r in organic):
            raise ValueError("'organic' must be a list of objects")
        results = []
        box = payload.get("answerBox")
        if isinstance(box, dict) and (box.get("answer") or box.get("snippet")):
            answer = _text(box, "answer") or _text(box, "snippet")
            results.append(WebResult(_text(box, "title"), _text(box, "link"), answer))
        results += [
            WebResult(_text(r, "title"), _text(r, "link"), _text(r, "snippet")) for r in organic
        ]
        return results


serper_factory = web_factory(SerperRetriever)
