"""Hybrid retrieval: reciprocal-rank fusion (RRF) of two or more retrievers.

Why RRF: BM25 scores (unbounded sums of term weights) and cosine similarities live on
different scales, so adding them needs per-corpus tuning. RRF uses ranks only: a
document's fused score is ``sum_r w_r / (k_rrf + rank_r)`` over the retrievers ``r``
that returned it (``rank`` 1-based), and ``k_rrf = 60`` (Cormack et al., 2009) works
across collections without tuning. Lexical and semantic matches fail differently, so
fusing them finds more supporting documents than either alone.

Each retriever is asked for a larger candidate pool than ``k`` (default ``max(4k, 20)``)
so a document ranked just below ``k`` by both can still win after fusion. Everything is
batch-first: one ``search`` call per retriever per batch of queries.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from research_env.data.types import Document
from research_env.retrievers.base import Retriever, SearchHit

__all__ = ["DEFAULT_RRF_K", "HybridRetriever", "hybrid_factory", "reciprocal_rank_fusion"]

DEFAULT_RRF_K = 60


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[SearchHit]],
    k: int,
    *,
    rrf_k: float = DEFAULT_RRF_K,
    weights: Sequence[float] | None = None,
) -> list[SearchHit]:
    """Fuse one query's ranked lists into the top ``k``; hit scores become RRF scores.

    Documents are identified by ``id``. Ties keep the order in which documents were
    first seen (retriever order, then rank), so fusion is deterministic.
    """
    if weights is None:
        weights = [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    fused: dict[str, float] = {}
    documents: dict[str, Document] = {}
    for weight, ranking in zip(weights, rankings, strict=True):
        seen: set[str] = set()
        for rank, hit in enumerate(ranking, start=1):
            doc_id = hit.document.id
            if doc_id in seen:  # a retriever listing a document twice counts it once
                continue
            seen.add(doc_id)
            documents.setdefault(doc_id, hit.document)
            fused[doc_id] = fused.get(doc_id, 0.0) + weight / (rrf_k + rank)
    order = sorted(fused, key=fused.__getitem__, reverse=True)  # stable: ties keep first-seen
    return [SearchHit(documents[d], fused[d]) for d in order[:k]]


class HybridRetriever:
    """RRF fusion of ``retrievers``; implements ``Retriever``.

    Arguments:
        retrievers: two or more retrievers over the same corpus (same document ids).
        rrf_k: the RRF constant (default 60).
        pool_size: candidates fetched from each retriever per query; default
            ``max(4 * k, 20)``.
        weights: per-retriever multipliers of the RRF terms (default all 1).

    The hit score is the fused RRF score (at most ``sum(weights) / (rrf_k + 1)``).
    """

    def __init__(
        self,
        retrievers: Sequence[Retriever],
        *,
        rrf_k: float = DEFAULT_RRF_K,
        pool_size: int | None = None,
        weights: Sequence[float] | None = None,
    ) -> None:
        if len(retrievers) < 2:
            raise ValueError(
                f"hybrid retrieval fuses two or more retrievers, got {len(retrievers)}"
            )
        if weights is not None and len(weights) != len(retrievers):
            raise ValueError(f"{len(weights)} weights for {len(retrievers)} retrievers")
        if rrf_k < 0:
            raise ValueError(f"rrf_k must be >= 0, not {rrf_k}")
        if pool_size is not None and pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, not {pool_size}")
        self.retrievers = list(retrievers)
        self.rrf_k = rrf_k
        self.pool_size = pool_size
        self.weights = list(weights) if weights is not None else None

    def candidate_pool(self, k: int) -> int:
        """How many hits each retriever is asked for when ``k`` are wanted."""
        return max(k, self.pool_size) if self.pool_size is not None else max(4 * k, 20)

    def search(self, queries: Sequence[str], k: int) -> list[list[SearchHit]]:
        """Top-``k`` fused hits per query; one batched call per inner retriever."""
        if k < 0:
            raise ValueError(f"k must be >= 0, not {k}")
        if not queries or k == 0:
            return [[] for _ in queries]
        queries = list(queries)
        pool = self.candidate_pool(k)
        per_retriever = [r.search(queries, pool) for r in self.retrievers]
        return [
            reciprocal_rank_fusion(
                [results[i] for results in per_retriever],
                k,
                rrf_k=self.rrf_k,
                weights=self.weights,
            )
            for i in range(len(queries))
        ]

    def fingerprint(self) -> dict[str, Any]:
        """Its parts' fingerprints and the fusion settings (for :mod:`research_env.fingerprint`)."""
        from research_env.fingerprint import describe_retriever

        return {
            "name": "hybrid",
            "retrievers": [describe_retriever(r) for r in self.retrievers],
            "rrf_k": self.rrf_k,
            "pool_size": self.pool_size,
            "weights": self.weights,
        }

    def __repr__(self) -> str:
        inner = ", ".join(type(r).__name__ for r in self.retrievers)
        return f"HybridRetriever([{inner}], rrf_k={self.rrf_k})"


def hybrid_factory(
    corpus: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    dense: dict[str, Any] | None = None,
    bm25: dict[str, Any] | None = None,
    rrf_k: float = DEFAULT_RRF_K,
    pool_size: int | None = None,
    weights: Sequence[float] | None = None,
) -> HybridRetriever:
    """Registry factory for ``retriever="hybrid"``: BM25 + dense (MiniLM, flat) by RRF.

    ``dense`` and ``bm25`` are keyword arguments for :func:`dense_for_corpus` and
    :func:`bm25_for_corpus` (e.g. ``retriever_kwargs={"dense": {"index": "hnsw"}}``).
    """
    from research_env.retrievers.bm25 import bm25_for_corpus
    from research_env.retrievers.dense import dense_factory

    lexical = bm25_for_corpus(corpus, cache_dir=cache_dir, **(bm25 or {}))
    semantic = dense_factory(
        corpus, cache_dir=Path(cache_dir) if cache_dir else None, **(dense or {})
    )
    return HybridRetriever([lexical, semantic], rrf_k=rrf_k, pool_size=pool_size, weights=weights)
