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
the only algorithm that builds one. Hyperparameters: :class:`~algorithms.config.PPOConfig`.
"""

from __future__ import annotations

from typing import Any

from algorithms.objectives import ObjectiveTerms
from algorithms.policy import Policy, ValueHead, load_policy
from algorithms.trainer import OnPolicyAlgorithm


class PPO(OnPolicyAlgorithm):
    """Actor-critic PPO with GAE over generated tokens and a KL penalty in the reward."""

    name = "ppo"

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
