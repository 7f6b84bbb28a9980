"""REINFORCE (Williams, 1992) for language models, with a choice of baseline.

Each generated token's advantage is the return that follows it (the episode reward on the
last generated token, minus an optional per-token KL penalty ``kl_coef * kl_t``), less a
baseline; each baseline is an estimator of ``algorithms.objectives.advantages``:

    none         A = R                                              (``reinforce``)
    batch_mean   A = R - mean(R over the batch)                     (``reinforce_batch_mean``)
    rloo         A_i = R_i - mean(R_j of the other samples)         (``rloo``)
    reinforce++  A = whiten(R) over all generated tokens (no baseline)  (``reinforce++``)

The loss is the policy gradient ``-A * log pi(token)``, written as the clipped surrogate
with pi_old = pi (ratio 1, nothing clipped) so a multi-epoch variant is one config change.
Hyperparameters: :class:`~algorithms.config.ReinforceConfig`.
"""

from __future__ import annotations

from typing import Any

from algorithms.objectives import ObjectiveTerms
from algorithms.trainer import OnPolicyAlgorithm

BASELINE_ESTIMATORS = {
    "none": "reinforce",
    "batch_mean": "reinforce_batch_mean",
    "rloo": "rloo",
    "reinforce++": "reinforce++",
}


class REINFORCE(OnPolicyAlgorithm):
    """Monte-Carlo policy gradient with the none / batch-mean / RLOO / REINFORCE++ baselines."""

    name = "reinforce"

    @property
    def kl_in_reward(self) -> bool:
        return self.hparams.kl_coef != 0.0

    def advantage_spec(self) -> tuple[str, dict[str, Any]]:
        baseline = self.hparams.baseline
        if baseline not in BASELINE_ESTIMATORS:
            raise ValueError(
                f"unknown REINFORCE baseline {baseline!r}; choose one of {list(BASELINE_ESTIMATORS)}"
            )
        return BASELINE_ESTIMATORS[baseline], {"gamma": self.hparams.gamma}

    def objective_terms(self) -> ObjectiveTerms:
        h = self.hparams
        return ObjectiveTerms(
            entropy_coef=h.entropy_coef,
            loss_agg=h.loss_agg,
            norm_len=self.config.rollout.max_total_tokens,
        )
