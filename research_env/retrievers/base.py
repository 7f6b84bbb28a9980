"""The retriever protocol: a batch of queries in, top-k scored documents out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from research_env.data.types import Document, QASample


@dataclass(frozen=True)
class SearchHit:
    """One retrieved document with its retriever score (higher is better)."""

    document: Document
    score: float


@runtime_checkable
class Retriever(Protocol):
    """Anything that answers a batch of queries with ``k`` hits per query.

    Implementations are batch-first: the environment and the rollout engine gather the
    queries of many episodes and make a single call.
    """

    def search(self, queries: Sequence[str], k: int) -> list[list[SearchHit]]:
        """Return, for each query in order, at most ``k`` hits sorted by score."""
        ...


@runtime_checkable
class ContextualRetriever(Protocol):
    """A retriever whose answer may depend on the question being played, not only on the
    query (a simulated search engine writes useful passages from the question's gold
    facts). The envs call :func:`retrieve`, which passes each query's question to such a
    retriever and calls plain ``search`` on any other."""

    def search(self, queries: Sequence[str], k: int) -> list[list[SearchHit]]: ...

    def search_with_context(
        self, queries: Sequence[str], k: int, contexts: Sequence[QASample | None]
    ) -> list[list[SearchHit]]:
        """As ``search``; ``contexts[i]`` is the question query ``i`` was asked for."""
        ...


def retrieve(
    retriever: Retriever, queries: Sequence[str], k: int, contexts: Sequence[QASample]
) -> Sequence[Sequence[object]]:
    """``retriever``'s answer to ``queries``, with each query's question (``contexts``)
    for a :class:`ContextualRetriever`."""
    if isinstance(retriever, ContextualRetriever):
        return retriever.search_with_context(queries, k, contexts)
    return retriever.search(queries, k)


def as_hits(results: Sequence[Sequence[object]], retriever: object) -> list[list[SearchHit]]:
    """``retriever.search``'s answer as :class:`SearchHit` lists. A custom retriever may
    answer FlashRAG-style dicts too: ``{"id", "contents", "score"?}`` (``contents`` is
    ``'"Title"\\ntext'``) or ``{"id"?, "title", "text", "score"?}``. Anything else is a
    ``TypeError`` naming the retriever and the shapes it may return, at the search that
    returned it (not later, when the observation is written)."""
    return [[_as_hit(hit, retriever) for hit in hits] for hits in results]


def _as_hit(hit: object, retriever: object) -> SearchHit:
    if isinstance(hit, SearchHit):
        return hit
    if isinstance(hit, dict):
        score = float(hit.get("score", 0.0))
        if isinstance(hit.get("contents"), str):
            return SearchHit(Document(str(hit.get("id", "")), hit["contents"]), score)
        if isinstance(hit.get("text"), str):
            title = str(hit.get("title", ""))
            contents = f'"{title}"\n{hit["text"]}' if title else hit["text"]
            return SearchHit(Document(str(hit.get("id", title)), contents), score)
    raise TypeError(
        f"{type(retriever).__name__}.search returned {hit!r:.120}; each hit must be a "
        "SearchHit(Document(id, contents), score) or a FlashRAG-style dict with 'contents' "
        "(or 'title' and 'text'), and an optional 'score'"
    )
