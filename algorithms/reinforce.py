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
The ``reinforce`` section of the config is :class:`ReinforceSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from algorithms.objectives import ObjectiveTerms
from algorithms.settings import (
    AlgorithmSettings,
    KLEstimatorName,
    LossAggregation,
    group_problems,
    need,
)
from algorithms.trainer import OnPolicyAlgorithm

if TYPE_CHECKING:
    from algorithms.config import TrainConfig

BASELINE_ESTIMATORS = {
    "none": "reinforce",
    "batch_mean": "reinforce_batch_mean",
    "rloo": "rloo",
    "reinforce++": "reinforce++",
}


@dataclass
class ReinforceSettings(AlgorithmSettings):
    """REINFORCE with a choice of baseline.

    Attributes:
        baseline: ``none``, ``batch_mean``, ``rloo`` (leave-one-out within a group) or
            ``reinforce++`` (global normalization of the token returns).
        kl_coef: per-token KL penalty folded into the reward.
        kl_estimator: estimator for that penalty.
        gamma: discount over generated tokens.
        loss_agg: loss aggregation mode (see :class:`~algorithms.grpo.GRPOSettings`).
        entropy_coef: entropy bonus weight.
    """

    baseline: Literal["none", "batch_mean", "rloo", "reinforce++"] = "rloo"
    kl_coef: float = 0.0
    kl_estimator: KLEstimatorName = "k1"
    gamma: float = 1.0
    loss_agg: LossAggregation = "token-mean"
    entropy_coef: float = 0.0

    def validate(
        self, config: TrainConfig, *, selected: bool, check_names: bool = True
    ) -> list[str]:
        problems: list[str] = []
        if selected and self.baseline == "rloo":
            problems += group_problems(
                "REINFORCE with the rloo baseline", config.rollout.group_size
            )
        need(problems, self.kl_coef >= 0, f"reinforce.kl_coef must be >= 0, got {self.kl_coef}")
        need(
            problems,
            0 <= self.gamma <= 1,
            f"reinforce.gamma must be in [0, 1], got {self.gamma}",
        )
        return problems


class REINFORCE(OnPolicyAlgorithm):
    """Monte-Carlo policy gradient with the none / batch-mean / RLOO / REINFORCE++ baselines."""

    name = "reinforce"
    settings_class = ReinforceSettings

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
