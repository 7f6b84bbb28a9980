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
hyperparameters are :class:`~algorithms.config.GRPOConfig`.
"""

from __future__ import annotations

from typing import Any

from algorithms.objectives import ObjectiveTerms
from algorithms.trainer import OnPolicyAlgorithm


class GRPO(OnPolicyAlgorithm):
    """Group-relative advantages, clipped surrogate, KL to a reference as a loss.

    Example::

        policy = load_policy("smollm2-135m")
        algo = GRPO(policy, config=TrainConfig.from_yaml("configs/research-grpo.yaml"))
        algo.learn(200)
        algo.save("runs/grpo/manual")
    """

    name = "grpo"

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
