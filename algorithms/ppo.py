"""PPO (Schulman et al., 2017) for language models, as Search-R1 trains it.

A critic predicts, at each generated token, the value of the state it is generated in.
The episode reward sits on the last generated token; every generated token also pays a KL
penalty to the frozen reference policy (k1 by default) *in the reward*:

    r_t = -kl_coef * kl_t  (+ reward on the last generated token)

GAE runs over generated tokens only (retrieved ``<result>`` tokens are skipped, not steps;
estimator ``gae``):

    delta_t = r_t + gamma * V_next(t) - V_t,   A_t = delta_t + gamma * lam * A_next(t)
    returns R_t = A_t + V_t  (the critic's target);  A whitened over the batch's tokens

    loss = pg_loss + vf_coef * v_loss - entropy_coef * entropy_loss

with PPO's clipped surrogate and a clipped value loss. The critic is a value head on the
policy's trunk (``critic: shared``) or a model of its own (``critic: separate``); PPO is
the only algorithm that builds one. The ``ppo`` section of the config is :class:`PPOSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from algorithms.objectives import ObjectiveTerms
from algorithms.policy import Policy, ValueHead, load_policy
from algorithms.settings import (
    AlgorithmSettings,
    KLEstimatorName,
    LossAggregation,
    clip_problems,
    need,
)
from algorithms.trainer import OnPolicyAlgorithm

if TYPE_CHECKING:
    from algorithms.config import TrainConfig


@dataclass
class PPOSettings(AlgorithmSettings):
    """PPO with a learned critic (as Search-R1 trains it).

    Attributes:
        clip_low, clip_high: policy clip range (``clip_high`` null = symmetric).
        vf_coef: weight of the value loss in the total loss.
        vf_clip: value clipping range around the rollout's values (``null`` = off).
        gamma, lam: GAE discount and lambda over generated tokens (Search-R1: 1 and 1).
        kl_coef: per-token KL penalty folded into the reward (``-kl_coef * kl_t``).
        kl_estimator: estimator for that penalty (``k1``, the unbiased one, by default).
        whiten_advantages: normalize advantages over the batch's generated tokens.
        critic: ``shared`` = a value head on the policy's trunk; ``separate`` = its own
            model (``critic_model``, default the policy's model) with a value head.
        critic_model: model name or directory of a separate critic.
        loss_agg: loss aggregation mode (see :class:`~algorithms.grpo.GRPOSettings`).
        entropy_coef: entropy bonus weight.
    """

    clip_low: float = 0.2
    clip_high: float | None = None
    vf_coef: float = 0.5
    vf_clip: float | None = 0.2
    gamma: float = 1.0
    lam: float = 1.0
    kl_coef: float = 0.001
    kl_estimator: KLEstimatorName = "k1"
    whiten_advantages: bool = True
    critic: Literal["shared", "separate"] = "shared"
    critic_model: str | None = None
    loss_agg: LossAggregation = "token-mean"
    entropy_coef: float = 0.0

    def validate(
        self, config: TrainConfig, *, selected: bool, check_names: bool = True
    ) -> list[str]:
        problems = clip_problems("ppo", self.clip_low, self.clip_high)
        need(problems, self.kl_coef >= 0, f"ppo.kl_coef must be >= 0, got {self.kl_coef}")
        need(
            problems,
            0 <= self.gamma <= 1 and 0 <= self.lam <= 1,
            f"ppo.gamma and ppo.lam must be in [0, 1], got {self.gamma} and {self.lam}",
        )
        need(
            problems,
            self.vf_clip is None or self.vf_clip > 0,
            f"ppo.vf_clip must be > 0 or null, got {self.vf_clip}",
        )
        if selected and config.trainer.sharding == "fsdp" and self.critic == "separate":
            problems.append(
                "trainer.sharding: fsdp shards the policy only; use ppo.critic=shared (a value "
                "head on the sharded policy) rather than a separate critic model"
            )
        return problems


class PPO(OnPolicyAlgorithm):
    """Actor-critic PPO with GAE over generated tokens and a KL penalty in the reward."""

    name = "ppo"
    settings_class = PPOSettings

    @property
    def kl_in_reward(self) -> bool:
        return self.hparams.kl_coef != 0.0

    def _build_critic(self, critic: Policy | None) -> Policy | None:
        """A separate critic model (``critic: separate``), or a fresh value head on the
        policy's trunk (``shared``). Runs after seeding, so the same seed gives the same
        initial critic."""
        if critic is not None:
            return critic
        if self.hparams.critic == "separate":
            model = self.config.model
            return load_policy(
                self.hparams.critic_model or self.policy.name,
                dtype=model.dtype,
                device=self.policy.device,
                gradient_checkpointing=model.gradient_checkpointing,
                value_head=True,
            )
        if self.policy.value_head is None:
            hidden = self.policy.model.config.get_text_config().hidden_size
            self.policy.value_head = ValueHead(hidden).to(self.policy.device)
        return None

    def advantage_spec(self) -> tuple[str, dict[str, Any]]:
        h = self.hparams
        return "gae", {"gamma": h.gamma, "lam": h.lam, "whiten": h.whiten_advantages}

    def objective_terms(self) -> ObjectiveTerms:
        h = self.hparams
        return ObjectiveTerms(
            clip_low=h.clip_low,
            clip_high=h.clip_high,
            vf_coef=h.vf_coef,
            vf_clip=h.vf_clip,
            entropy_coef=h.entropy_coef,
            loss_agg=h.loss_agg,
            norm_len=self.config.rollout.max_total_tokens,
        )
