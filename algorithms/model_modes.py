"""How a model runs one pass: :func:`eval_mode`, shared by the no-grad scoring passes
(:mod:`algorithms.scoring`) and the HF decoder (:mod:`algorithms.rollout.decoder`), so
neither imports the other for it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Eval mode (no dropout, no gradient checkpointing) for a pass, restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
