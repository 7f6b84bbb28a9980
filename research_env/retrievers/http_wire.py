"""Reading what a retrieval server answers, strictly: documents, hits and error details.

Servers in the wild differ in small ways (documents as ``id`` + ``contents``, as
``title`` + ``text`` or as plain strings; scores present or not; FlashRAG's two answer
shapes), and a broken one can send anything. Every function here accepts the shapes the
protocols allow and raises ``ValueError`` naming what is wrong otherwise, so a bad answer
becomes an error the client reports (:class:`~research_env.retrievers.http.RetrievalError`),
never an empty hit list.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from research_env.data.types import Document
from research_env.retrievers.base import SearchHit

__all__ = [
    "document_from_wire",
    "error_detail",
    "hits_from_docs",
    "hits_from_items",
    "json_kind",
    "per_query",
    "split_flashrag_batch",
    "split_flashrag_single",
]


def document_from_wire(doc: Any) -> Document:
    """A :class:`Document` from a server's JSON document (dict or plain string).

    Raises ValueError naming the problem when ``doc`` is neither, or lacks text (a
    passage that is empty or only whitespace is an error, not an empty document).
    """
    if isinstance(doc, str):
        if not doc.strip():
            raise ValueError("an empty passage (a blank document string)")
        return Document(id=_content_id(doc), contents=doc)
    if not isinstance(doc, dict):
        raise ValueError(f"a document must be an object or a string, got {json_kind(doc)}")
    contents = doc.get("contents")
    if contents is None:
        text = _optional_str(doc, "text") or _optional_str(doc, "content")
        title = _optional_str(doc, "title")
        if text is None and title is None:
            keys = ", ".join(sorted(str(key) for key in doc)[:10]) or "none"
            raise ValueError(f"a document needs 'contents' (or 'text' / 'title'); its keys: {keys}")
        contents = f'"{title}"\n{text or ""}' if title else (text or "")
    elif not isinstance(contents, str):
        raise ValueError(f"a document's 'contents' must be a string, got {json_kind(contents)}")
    doc_id = doc.get("id", doc.get("doc_id", doc.get("docid")))
    if not contents.strip():
        # A server that lost its document store still answers ids and scores: training on
        # blank observations would go on silently, so it is an error.
        raise ValueError(f"an empty passage (document id {doc_id!r} has no text)")
    if doc_id is None or doc_id == "":
        # Without an id, the contents identify the document (for dedup and metrics).
        return Document(id=_content_id(contents), contents=contents)
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
        raise ValueError(f"a document id must be a string or an integer, got {json_kind(doc_id)}")
    return Document(id=str(doc_id), contents=contents)


def _content_id(contents: str) -> str:
    return "sha1:" + hashlib.sha1(contents.encode("utf-8", "replace")).hexdigest()[:16]


def _optional_str(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"a document's {key!r} must be a string, got {json_kind(value)}")
    return value


def json_kind(value: Any) -> str:
    """A JSON value's type in JSON's words, for error messages."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"the number {value!r}"
    return names.get(type(value), type(value).__name__)


def _score(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"a score must be a number, got {json_kind(value)}")
    return float(value)


def hits_from_items(items: Any) -> list[SearchHit]:
    """Search-R1 items: ``{"document": doc, "score": s}`` or bare documents."""
    if not isinstance(items, list):
        raise ValueError(f"expected a list of hits, got {json_kind(items)}")
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


def split_flashrag_batch(payload: Any, n_queries: int) -> tuple[list[Any], list[Any] | None]:
    """``[docs_lists, scores_lists]`` or ``docs_lists`` -> ``(docs_lists, scores_lists)``.

    The two shapes differ in the second element: a list of number lists (scores) versus
    a list of documents (the second query's hits), so even two queries are unambiguous.
    """
    if not isinstance(payload, list):
        raise ValueError(f"expected a list of result lists, got {json_kind(payload)}")
    if (
        len(payload) == 2
        and isinstance(payload[0], list)
        and len(payload[0]) == n_queries
        and _is_score_lists(payload[1])
        and len(payload[1]) == n_queries
    ):
        return payload[0], payload[1]
    return payload, None


def split_flashrag_single(payload: Any) -> tuple[list[Any], list[Any] | None]:
    """``/search`` answers ``[docs, scores]`` or ``docs`` for one query."""
    if not isinstance(payload, list):
        raise ValueError(f"expected a list of documents, got {json_kind(payload)}")
    if len(payload) == 2 and isinstance(payload[0], list) and _is_score_lists([payload[1]]):
        return payload[0], payload[1]
    return payload, None


def hits_from_docs(docs: Any, scores: Any | None) -> list[SearchHit]:
    if not isinstance(docs, list):
        raise ValueError(f"expected a list of documents, got {json_kind(docs)}")
    if scores is None:
        scores = [0.0] * len(docs)
    if len(scores) != len(docs):
        raise ValueError(f"{len(docs)} documents but {len(scores)} scores")
    return [SearchHit(document_from_wire(d), _score(s)) for d, s in zip(docs, scores, strict=True)]


def per_query(lists: list[Any], parse: Any, name: str) -> list[list[SearchHit]]:
    """``parse(i, lists[i])`` for each query; an error says which list was wrong."""
    results = []
    for i, item in enumerate(lists):
        try:
            results.append(parse(i, item))
        except ValueError as error:
            raise ValueError(f"{name}[{i}]: {error}") from None
    return results


def error_detail(status: int, content: bytes) -> str:
    """The server's error message: FastAPI's ``detail`` when present, else the text."""
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        text = content[:300].decode("utf-8", "replace")
        return text or f"HTTP {status} with an empty body"
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:300]
    return content[:300].decode("utf-8", "replace")
