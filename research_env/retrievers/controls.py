"""Control retrievers for ablations: does the policy actually use search?

- :class:`EmptyRetriever` answers every query with no documents. An agent trained against
  it can only guess; the gap between it and a real retriever is what search is worth
  (the "Search-R1, Re-examined" control: models keep searching an empty retriever).
- :class:`RandomRetriever` answers every query with ``k`` documents drawn at random from
  the corpus, so observations look like real results but carry no information about the
  query. Seeded, so runs are reproducible.

Both implement the batch-first :class:`~research_env.retrievers.base.Retriever` protocol and
are registered as ``retriever="empty"`` and ``retriever="random"``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from research_env.data.types import Document
from research_env.retrievers.base import SearchHit

__all__ = ["EmptyRetriever", "RandomRetriever", "empty_factory", "random_factory"]


class EmptyRetriever:
    """Every query gets ``[]``: the observation is the template's "No documents found."."""

    def search(self, queries: Sequence[str], k: int) -> list[list[SearchHit]]:
        return [[] for _ in queries]

    def fingerprint(self) -> dict[str, Any]:
        return {"name": "empty"}


class RandomRetriever:
    """Every query gets ``k`` distinct documents drawn uniformly from ``documents``
    (score 0.0), independent of the query."""

    def __init__(self, documents: Sequence[Document], seed: int = 0) -> None:
        if not documents:
            raise ValueError("RandomRetriever needs at least one document")
        self.documents = list(documents)
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def fingerprint(self) -> dict[str, Any]:
        return {"name": "random", "documents": len(self.documents), "seed": self.seed}

    def search(self, queries: Sequence[str], k: int) -> list[list[SearchHit]]:
        k = min(k, len(self.documents))
        return [
            [
                SearchHit(self.documents[int(i)], 0.0)
                for i in self.rng.choice(len(self.documents), size=k, replace=False)
            ]
            for _ in queries
        ]


def empty_factory(corpus: str | os.PathLike[str] | None = None, **_: Any) -> EmptyRetriever:
    """``retriever="empty"``: the corpus is ignored."""
    return EmptyRetriever()


def random_factory(
    corpus: str | os.PathLike[str], cache_dir: Any = None, *, seed: int = 0
) -> RandomRetriever:
    """``retriever="random"``: random documents of ``corpus`` (``retriever_kwargs={"seed": s}``)."""
    from research_env.data.jsonl import read_corpus_jsonl

    return RandomRetriever(read_corpus_jsonl(Path(corpus)), seed=seed)
