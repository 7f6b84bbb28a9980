"""Turn the env's ``dataset`` / ``retriever`` arguments into samples and a retriever.

Kept apart from the env so that datasets and retrievers plug in by name (a registry
of factories) without the env knowing any of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from research_env.data.types import QASample
from research_env.retrievers.base import Retriever

RetrieverFactory = Callable[..., Retriever]


def _lazy(module: str, name: str) -> RetrieverFactory:
    """A factory imported on first use, so heavy backends (numba, torch, faiss) load only
    when that retriever is asked for."""

    def factory(*args: Any, **kwargs: Any) -> Retriever:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    return factory


RETRIEVERS: dict[str, RetrieverFactory] = {
    "bm25": _lazy("research_env.retrievers.bm25", "bm25_for_corpus"),
    "dense": _lazy("research_env.retrievers.dense", "dense_factory"),
    "hybrid": _lazy("research_env.retrievers.hybrid", "hybrid_factory"),
    "http": _lazy("research_env.retrievers.http", "http_factory"),
    # Ablation controls: no documents, or documents unrelated to the query.
    "empty": _lazy("research_env.retrievers.controls", "empty_factory"),
    "random": _lazy("research_env.retrievers.controls", "random_factory"),
    # Web search APIs (research_env.retrievers.web): the web is the corpus.
    "serper": _lazy("research_env.retrievers.web_serper", "serper_factory"),
    "brave": _lazy("research_env.retrievers.web_brave", "brave_factory"),
    "searxng": _lazy("research_env.retrievers.web_searxng", "searxng_factory"),
    # A language model writes the documents (research_env.retrievers.simulated).
    "simulated": _lazy("research_env.retrievers.simulated", "simulated_factory"),
    "simulated/useful": _lazy("research_env.retrievers.simulated", "useful_factory"),
    "simulated/noisy": _lazy("research_env.retrievers.simulated", "noisy_factory"),
}

# Retrievers that need no corpus file (their factory gets corpus=None when none is given).
CORPUS_FREE: set[str] = {"serper", "brave", "searxng"}


def register_retriever(name: str, factory: RetrieverFactory) -> None:
    """Make ``retriever=name`` work in ``gym.make``; ``factory(corpus, cache_dir, **kw)``."""
    RETRIEVERS[name] = factory


def resolve_dataset(
    dataset: str | Path | Sequence[QASample], split: str, cache_dir: Path | None
) -> tuple[list[QASample], Path | None]:
    """Samples of ``split`` and the dataset's own corpus file, when it has one."""
    from research_env import data

    if isinstance(dataset, (str, Path)):
        samples = data.load_split(dataset, split, cache_dir=cache_dir)
        return samples, data.corpus_path(dataset, cache_dir)
    samples = list(dataset)
    if not samples or not all(isinstance(s, QASample) for s in samples):
        raise ValueError("dataset must be a name, a path, or a non-empty list of QASample")
    return samples, None


def resolve_retriever(
    retriever: str | Retriever,
    corpus: str | Path | None,
    cache_dir: Path | None,
    retriever_kwargs: dict[str, Any] | None = None,
) -> Retriever:
    if not isinstance(retriever, str):
        if not callable(getattr(retriever, "search", None)):
            raise ValueError(
                f"retriever must be a name in {sorted(RETRIEVERS)} or an object with "
                f"search(queries, k); got {retriever!r}"
            )
        return retriever
    if retriever.startswith(("http://", "https://")) and "http" in RETRIEVERS:
        return RETRIEVERS["http"](retriever, cache_dir=cache_dir, **(retriever_kwargs or {}))
    if retriever not in RETRIEVERS:
        raise ValueError(
            f"unknown retriever {retriever!r}; choose one of {sorted(RETRIEVERS)}, "
            "a server URL, or pass a Retriever instance"
        )
    if corpus is None and retriever in CORPUS_FREE:
        return RETRIEVERS[retriever](None, cache_dir=cache_dir, **(retriever_kwargs or {}))
    if corpus is None:
        raise ValueError(
            f"retriever {retriever!r} needs a corpus: pass corpus='path/to/corpus.jsonl' "
            "(FlashRAG shape: one JSON object per line with 'id' and 'contents')"
        )
    return RETRIEVERS[retriever](Path(corpus), cache_dir=cache_dir, **(retriever_kwargs or {}))
