"""The training loop shared by every algorithm: the loop and its verbs (``loop.py``), the
update (``update.py``), metrics and logging (``metrics.py``), the optimizer and schedule
(``optim.py``) and checkpoints (``checkpoint.py``)."""

from algorithms.trainer.build import seed_everything
from algorithms.trainer.loop import Callback, OnPolicyAlgorithm
from algorithms.trainer.metrics import MetricsLogger, episode_metrics

__all__ = ["Callback", "MetricsLogger", "OnPolicyAlgorithm", "episode_metrics", "seed_everything"]
