"""Retrievers: anything with ``search(queries, k) -> list[list[SearchHit]]``.

Implementations are imported on first use (``from research_env.retrievers import
DenseRetriever`` works), so importing this package stays cheap for code that only needs
the protocol: bm25s pulls in numba and scipy, the dense retriever torch and faiss.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from research_env.retrievers.base import Retriever, SearchHit

if TYPE_CHECKING:
    from research_env.retrievers.bm25 import BM25Retriever, bm25_for_corpus
    from research_env.retrievers.cache import CachedRetriever
    from research_env.retrievers.dense import DenseRetriever, dense_for_corpus
    from research_env.retrievers.http import HttpRetriever, RetrievalError
    from research_env.retrievers.hybrid import HybridRetriever
    from research_env.retrievers.query_cache import PersistentCachedRetriever
    from research_env.retrievers.web import BudgetExhausted, WebSearchError
    from research_env.retrievers.web_brave import BraveRetriever
    from research_env.retrievers.web_searxng import SearxngRetriever
    from research_env.retrievers.web_serper import SerperRetriever

_LAZY = {
    "BM25Retriever": "bm25",
    "bm25_for_corpus": "bm25",
    "CachedRetriever": "cache",
    "DenseRetriever": "dense",
    "dense_for_corpus": "dense",
    "HttpRetriever": "http",
    "RetrievalError": "http",
    "HybridRetriever": "hybrid",
    "PersistentCachedRetriever": "query_cache",
    "BudgetExhausted": "web",
    "WebSearchError": "web",
    "BraveRetriever": "web_brave",
    "SearxngRetriever": "web_searxng",
    "SerperRetriever": "web_serper",
}

__all__ = [  # noqa: RUF022 - the protocol first, then implementations
    "Retriever",
    "SearchHit",
    "BM25Retriever",
    "bm25_for_corpus",
    "CachedRetriever",
    "DenseRetriever",
    "dense_for_corpus",
    "HttpRetriever",
    "RetrievalError",
    "HybridRetriever",
    "PersistentCachedRetriever",
    "BudgetExhausted",
    "WebSearchError",
    "BraveRetriever",
    "SearxngRetriever",
    "SerperRetriever",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
