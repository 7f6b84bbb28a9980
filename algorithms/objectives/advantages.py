"""Advantage estimators: a registry of pure functions, one per estimator.

An algorithm declares the name of its estimator (``GRPO.advantage_estimator = "grpo"``)
and its parameters; the trainer calls :func:`compute_advantages` with the rollout's
:class:`AdvantageInputs`. New estimators join with :func:`register_advantage`, so an
ablation is a config change, not an edit of the loop (after verl's ``core_algos``).

=========================  ==================================================================
``grpo``                   ``A_i = (r_i - mean_group) / (std_group + eps)`` on every token
                           (``scale_by_std=False``: Dr. GRPO, mean only)
``grpo-turn``              ``A_t = (G_t - mean_group(G_1)) / std_group(G_1)`` on the tokens of
                           turn ``t``, ``G_t`` the return from turn ``t`` on (step rewards)
``rloo``                   ``A_i = r_i - mean(r_j of the other samples of the question)``
``reinforce``              ``A = R`` (return-to-go; no baseline)
``reinforce_batch_mean``   ``A = R - mean(r over the batch)``
``reinforce++``            token returns whitened over the batch (REINFORCE++, Hu 2025)
``gae``                    Generalized Advantage Estimation over generated tokens (PPO)
=========================  ==================================================================

The REINFORCE family and GAE take an optional per-token KL penalty in the reward
(``-kl_coef * kl_t`` on each generated token; the outcome sits on the last one). Advantages
are per token, 0 at mask-0 positions (see ``ops.py`` for the conventions), computed under
``torch.no_grad``: in a policy gradient they are constants. Every estimator is checked
against hand arithmetic in ``tests/test_advantages.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from algorithms.objectives.ops import (
    broadcast_to_tokens,
    group_stats,
    last_generated_index,
    masked_whiten,
    zero_where_masked,
)


@dataclass
class AdvantageInputs:
    """What an estimator may read, all on the policy's device.

    Attributes:
        rewards: ``(B,)`` one outcome per episode: its return, the final reward plus any
            step rewards (so estimators that credit whole episodes see the shaping too).
        mask: ``(B, R)`` 1 on generated tokens.
        group_ids: ``(B,)`` equal ids = samples of the same question.
        kl: ``(B, R)`` per-token KL to the reference, when it is part of the reward.
        kl_coef: its weight in the reward.
        values: ``(B, R)`` the critic's values at rollout time (GAE).
        step_rewards: ``(B, R)`` each turn's step reward (the env's shaping) on the turn's
            last generated token, or None when there are none; per-turn estimators read it.
    """

    rewards: Tensor
    mask: Tensor
    group_ids: Tensor
    kl: Tensor | None = None
    kl_coef: float = 0.0
    values: Tensor | None = None
    step_rewards: Tensor | None = None


@dataclass
class Advantages:
    """An estimator's output: per-token advantages and, for a critic, its targets."""

    advantages: Tensor
    returns: Tensor | None = None


AdvantageEstimator = Callable[..., Advantages]
ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimator] = {}


def register_advantage(name: str) -> Callable[[AdvantageEstimator], AdvantageEstimator]:
    """Decorator: make ``fn(inputs, **params) -> Advantages`` available under ``name``."""

    def add(fn: AdvantageEstimator) -> AdvantageEstimator:
        ADVANTAGE_ESTIMATORS[name] = fn
        return fn

    return add


@torch.no_grad()
def compute_advantages(name: str, inputs: AdvantageInputs, **params: Any) -> Advantages:
    """Run the estimator registered as ``name`` with its ``params``."""
    if name not in ADVANTAGE_ESTIMATORS:
        raise ValueError(
            f"unknown advantage estimator {name!r}; choose one of {sorted(ADVANTAGE_ESTIMATORS)}"
        )
    return ADVANTAGE_ESTIMATORS[name](inputs, **params)


def _zero_flat_groups(advantages: Tensor, group_size: Tensor, group_range: Tensor) -> Tensor:
    """Exactly 0 for a group whose rewards are all equal, or that has one sample.

    A float mean of equal values is not always that value (8 x 0.1 has mean 0.10000001), so
    the range, not ``r - mean``, decides: no signal must mean no gradient at all. A NaN
    reward is not "equal": it passes through, so the update sees it and skips the step.
    """
    signal = (group_size > 1) & (group_range != 0)
    return torch.where(signal, advantages, torch.zeros_like(advantages))


# --------------------------------------------------------------------------------------
# Group baselines
# --------------------------------------------------------------------------------------


@register_advantage("grpo")
def grpo_advantages(
    inputs: AdvantageInputs, scale_by_std: bool = True, eps: float = 1e-6
) -> Advantages:
    """GRPO outcome advantages: ``A_i = (r_i - mean_group) / (std_group + eps)`` on every token.

    ``std_group`` is the *unbiased* (n-1) standard deviation, as in verl (``torch.std``) and
    TRL (``Tensor.std``). ``scale_by_std=False`` is Dr. GRPO: only the group mean is
    subtracted, which removes the bias toward questions whose rewards barely vary.

    A group whose rewards are all equal gets advantage exactly 0, and so does a group of a
    single sample: without peers there is no baseline (verl instead passes the raw reward
    through; we prefer no signal to an unbaselined one).
    """
    rewards = inputs.rewards.float()
    group_sum, group_size, group_std, group_range = group_stats(rewards, inputs.group_ids)
    advantages = rewards - group_sum / group_size
    if scale_by_std:
        advantages = advantages / (group_std + eps)
    advantages = _zero_flat_groups(advantages, group_size, group_range)
    return Advantages(broadcast_to_tokens(advantages, inputs.mask))


@register_advantage("grpo-turn")
def grpo_turn_advantages(
    inputs: AdvantageInputs, scale_by_std: bool = True, eps: float = 1e-6
) -> Advantages:
    """GRPO with per-turn credit: each turn's tokens get the return *from that turn on*.

        G_t = (step rewards of turns t, t+1, ...) + final reward       (gamma = 1)
        A_t = (G_t - mean_group(G_1)) / (std_group(G_1) + eps)

    ``G_1`` is the episode's whole return (``inputs.rewards``). A search that found evidence
    keeps its step reward in its own advantage even when the answer after it was wrong,
    while a later turn is not credited for rewards banked before it.

    Why the group statistics of the *episode* returns, not one baseline per turn position
    (ReBN) or per identical state (GiGPO's anchor groups): the first turn of every sample
    starts from the same state (the prompt), so ``mean_group(G_1)`` is the baseline GRPO
    already trusts; it does not depend on any turn's action, so it leaves the gradient as
    GRPO's; and without step rewards every ``G_t`` is the episode reward, so this *is*
    ``grpo``, bit for bit. Turn positions are not states (turn 2 of one sample follows a
    different search than turn 2 of another), and exact state matches are rare in free
    text. The cost: a later turn's advantage sits lower by the step rewards already
    earned, which adds variance, not bias.

    A group whose episode returns are all equal has no spread to divide by: its
    advantages are ``G_t - G_1`` (0 when no turn had a step reward). A group of one sample
    gets 0, as in ``grpo``.
    """
    returns = inputs.rewards.float()
    group_sum, group_size, group_std, group_range = group_stats(returns, inputs.group_ids)
    flat = group_range == 0
    # Equal returns: the row's own return is the group's (a float mean may be off by one ulp).
    baseline = torch.where(flat, returns, group_sum / group_size)
    token_returns = _turn_returns(returns, inputs.step_rewards, inputs.mask)
    advantages = token_returns - baseline.unsqueeze(-1)
    if scale_by_std:
        scale = torch.where(flat, torch.ones_like(group_std), group_std + eps)
        advantages = advantages / scale.unsqueeze(-1)
    advantages = torch.where((group_size > 1).unsqueeze(-1), advantages, 0.0)
    return Advantages(zero_where_masked(advantages, inputs.mask))


def _turn_returns(episode_returns: Tensor, step_rewards: Tensor | None, mask: Tensor) -> Tensor:
    """``(B, R)``: on each token, the episode return less the step rewards paid strictly
    before it. A turn's step reward sits on its last token, so every token of turn ``t``
    sees ``G_t``."""
    token_returns = episode_returns.unsqueeze(-1).expand(mask.shape)
    if step_rewards is None:
        return token_returns
    step_rewards = step_rewards.float()
    earlier = step_rewards.cumsum(dim=-1) - step_rewards
    return token_returns - earlier


@register_advantage("rloo")
def rloo_advantages(inputs: AdvantageInputs, gamma: float = 1.0) -> Advantages:
    """REINFORCE Leave-One-Out: ``b_i = (sum_group - r_i) / (G - 1)``, the mean of the
    *other* samples of the same question, so ``b_i`` is independent of sample ``i`` and the
    gradient stays unbiased. Equivalently ``A_i = G / (G - 1) * (r_i - mean_group)``.
    Needs at least 2 samples in every group; a flat group gets exactly 0."""
    rewards = inputs.rewards.float()
    group_sum, group_size, _, group_range = group_stats(rewards, inputs.group_ids)
    if bool((group_size < 2).any()):
        raise ValueError("the rloo baseline needs at least 2 samples in every group")
    baselined = rewards - (group_sum - rewards) / (group_size - 1)
    baselined = _zero_flat_groups(baselined, group_size, group_range)
    return Advantages(_returns(baselined, inputs, gamma))


# --------------------------------------------------------------------------------------
# REINFORCE without a group
# --------------------------------------------------------------------------------------


@register_advantage("reinforce")
def reinforce_advantages(inputs: AdvantageInputs, gamma: float = 1.0) -> Advantages:
    """Plain REINFORCE: the return-to-go of each generated token (high variance)."""
    return Advantages(_returns(inputs.rewards.float(), inputs, gamma))


@register_advantage("reinforce_batch_mean")
def batch_mean_advantages(inputs: AdvantageInputs, gamma: float = 1.0) -> Advantages:
    """REINFORCE with the batch's mean reward as the baseline."""
    rewards = inputs.rewards.float()
    return Advantages(_returns(rewards - rewards.mean(), inputs, gamma))


@register_advantage("reinforce++")
def reinforce_plus_plus_advantages(inputs: AdvantageInputs, gamma: float = 1.0) -> Advantages:
    """REINFORCE++: no baseline on the reward; the token-level returns (outcome plus the
    per-token KL penalty) are whitened over all generated tokens of the batch. As in
    OpenRLHF this is a token-weighted normalization: long responses weigh more."""
    returns = _returns(inputs.rewards.float(), inputs, gamma)
    return Advantages(masked_whiten(returns, inputs.mask))


def _returns(sequence_rewards: Tensor, inputs: AdvantageInputs, gamma: float) -> Tensor:
    """Return-to-go of the token rewards built from ``sequence_rewards`` and the KL."""
    token_rewards = token_level_rewards(sequence_rewards, inputs.mask, inputs.kl, inputs.kl_coef)
    return returns_to_go(token_rewards, inputs.mask, gamma)


# --------------------------------------------------------------------------------------
# Token-level rewards, returns and GAE
# --------------------------------------------------------------------------------------


@torch.no_grad()
def token_level_rewards(
    rewards: Tensor, mask: Tensor, kl: Tensor | None = None, kl_coef: float = 0.0
) -> Tensor:
    """Spread an episode reward over tokens: ``-kl_coef * kl_t`` on every generated token,
    plus the outcome reward on the *last generated* token.

    The outcome is credited to the last token the policy wrote (its final ``</answer>``), not
    to trailing padding or an observation. A row with no generated token gets nothing.
    """
    token_rewards = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    if kl is not None and kl_coef != 0.0:
        token_rewards = token_rewards - kl_coef * kl.float()
    has_tokens = mask.bool().any(dim=-1)
    outcome = torch.where(has_tokens, rewards.float(), torch.zeros_like(rewards, dtype=torch.float))
    token_rewards.scatter_add_(-1, last_generated_index(mask).unsqueeze(-1), outcome.unsqueeze(-1))
    return zero_where_masked(token_rewards, mask)


@torch.no_grad()
def gae(
    token_rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Generalized Advantage Estimation over the *generated* tokens only.

    Observation tokens (mask 0 in the middle of a response) are not time steps: the "next"
    value of a generated token is the value at the next *generated* token, jumping over the
    retrieved text, and discounting counts generated tokens only. So GAE on a masked
    response equals plain GAE on the response with its observation tokens deleted. After
    the last generated token the episode ends (next value 0).

        delta_t = r_t + gamma * V_next(t) - V_t
        A_t     = delta_t + gamma * lam * A_next(t)
        R_t     = A_t + V_t                       (the value-function target)

    Search-R1 uses ``gamma = lam = 1``, for which ``A_t`` is just (outcome - V_t) plus the
    remaining KL penalties. Rewards and values at mask-0 positions are ignored.
    Returns ``(advantages, returns)``, both 0 at mask-0 positions.
    """
    keep = mask.bool()
    token_rewards, values = token_rewards.float(), values.float()
    advantages = torch.zeros_like(token_rewards)
    next_value = torch.zeros_like(token_rewards[:, 0])
    next_advantage = torch.zeros_like(next_value)
    for t in reversed(range(token_rewards.shape[-1])):
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        advantage_t = delta + gamma * lam * next_advantage
        # Only generated tokens advance the recursion; observation tokens pass it through.
        next_value = torch.where(keep[:, t], values[:, t], next_value)
        next_advantage = torch.where(keep[:, t], advantage_t, next_advantage)
        advantages[:, t] = torch.where(keep[:, t], advantage_t, torch.zeros_like(advantage_t))
    returns = torch.where(keep, advantages + values, torch.zeros_like(advantages))
    return advantages, returns


def returns_to_go(token_rewards: Tensor, mask: Tensor, gamma: float = 1.0) -> Tensor:
    """Discounted sum of future token rewards, over generated tokens only.

    This is GAE with ``V = 0`` and ``lam = 1`` (then ``A_t = sum_k gamma^k r_{t+k}``).
    """
    advantages, _ = gae(token_rewards, torch.zeros_like(token_rewards), mask, gamma)
    return advantages


@register_advantage("gae")
def gae_advantages(
    inputs: AdvantageInputs, gamma: float = 1.0, lam: float = 1.0, whiten: bool = True
) -> Advantages:
    """PPO's estimator: GAE on the token rewards (outcome + KL penalty) and the critic's
    rollout-time values; advantages optionally whitened over the batch's generated tokens."""
    if inputs.values is None:
        raise ValueError("the gae estimator needs the critic's values (inputs.values)")
    rewards = token_level_rewards(inputs.rewards, inputs.mask, inputs.kl, inputs.kl_coef)
    advantages, returns = gae(rewards, inputs.values, inputs.mask, gamma, lam)
    if whiten:
        advantages = masked_whiten(advantages, inputs.mask)
    return Advantages(advantages, returns)
