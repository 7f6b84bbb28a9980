"""GRPO: Group Relative Policy Optimization (Shao et al., 2024, DeepSeekMath).

No critic. Each question is played G times; an episode's advantage is its reward relative
to its group, on every token it generated (estimator ``grpo``):

    A_i = (r_i - mean(r_group)) / (std(r_group) + eps)       (Dr. GRPO: no division)

The policy loss is PPO's clipped surrogate with DAPO's asymmetric clip, plus a KL penalty
to the frozen reference policy as a separate loss term (k3, "low_var_kl", as in ReSearch):

    loss = pg_loss + kl_coef * kl_loss - entropy_coef * entropy_loss

With the env's step-level search rewards (``env.shaping``), ``credit: turn`` gives each
turn the return from that turn on (estimator ``grpo-turn``); ``credit: episode`` credits
the whole episode's return, shaping included, to every token.

Retrieved ``<result>`` tokens have mask 0 and so contribute nothing. The shared loop
(rollout, minibatches, checkpoints, logging) is :class:`~algorithms.trainer.OnPolicyAlgorithm`;
the ``grpo`` section of the config is :class:`GRPOSettings` below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from algorithms.objectives import ObjectiveTerms
from algorithms.settings import (
    AlgorithmSettings,
    KLEstimatorName,
    LossAggregation,
    clip_problems,
    group_problems,
    need,
)
from algorithms.trainer import OnPolicyAlgorithm

if TYPE_CHECKING:
    from algorithms.config import TrainConfig


@dataclass
class GRPOSettings(AlgorithmSettings):
    """GRPO (Shao et al., 2024) with the DAPO and Dr. GRPO variants.

    Attributes:
        clip_low: PPO clip range below 1 (``ratio >= 1 - clip_low``).
        clip_high: clip range above 1; ``null`` = ``clip_low``. DAPO's clip-higher: 0.28.
        kl_coef: weight of the KL-to-reference loss (ReSearch: 0.001). 0 skips the
            reference model entirely.
        kl_estimator: ``k3`` (= ``low_var_kl``, GRPO's), ``k1`` or ``k2``.
        scale_by_std: divide advantages by the group std; ``false`` is Dr. GRPO.
        loss_agg: ``token-mean`` (DAPO), ``seq-mean-token-mean`` (original GRPO) or
            ``seq-mean-token-sum-norm`` (Dr. GRPO; normalized by ``rollout.max_total_tokens``).
        entropy_coef: entropy bonus weight (0 = off; entropy is still logged).
        credit: ``episode`` (every token gets the episode's advantage) or ``turn`` (each
            turn's tokens get the return from that turn on, estimator ``grpo-turn``: an
            early search the env rewarded keeps its credit when the answer is wrong). The
            same without ``env.shaping``.
    """

    clip_low: float = 0.2
    clip_high: float | None = None
    kl_coef: float = 0.001
    kl_estimator: KLEstimatorName = "k3"
    scale_by_std: bool = True
    loss_agg: LossAggregation = "token-mean"
    entropy_coef: float = 0.0
    credit: Literal["episode", "turn"] = "episode"

    def validate(
        self, config: TrainConfig, *, selected: bool, check_names: bool = True
    ) -> list[str]:
        problems = group_problems("GRPO", config.rollout.group_size) if selected else []
        problems += clip_problems("grpo", self.clip_low, self.clip_high)
        need(problems, self.kl_coef >= 0, f"grpo.kl_coef must be >= 0, got {self.kl_coef}")
        return problems


class GRPO(OnPolicyAlgorithm):
    """Group-relative advantages, clipped surrogate, KL to a reference as a loss.

    Example::

        policy = load_policy("smollm2-135m")
        algo = GRPO(policy, config=TrainConfig.from_yaml("configs/research-grpo.yaml"))
        algo.learn(200)
        algo.save("runs/grpo/manual")
    """

    name = "grpo"
    settings_class = GRPOSettings

    def advantage_spec(self) -> tuple[str, dict[str, Any]]:
        # Per-turn credit only changes anything when the env pays step rewards (shaping).
        name = "grpo-turn" if self.hparams.credit == "turn" else "grpo"
        return name, {"scale_by_std": self.hparams.scale_by_std}

    def objective_terms(self) -> ObjectiveTerms:
        h = self.hparams
        return ObjectiveTerms(
            clip_low=h.clip_low,
            clip_high=h.clip_high,
            kl_coef=h.kl_coef,
            kl_estimator=h.kl_estimator,
            entropy_coef=h.entropy_coef,
            loss_agg=h.loss_agg,
            norm_len=self.config.rollout.max_total_tokens,
        )
