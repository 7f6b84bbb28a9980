"""Loss terms for policy-gradient training of language models, as pure tensor functions.

Same conventions as ``ops.py``. Mask-0 tokens contribute exactly zero loss *and* zero
gradient, even if their inputs hold garbage (inf/NaN): the losses select with
``torch.where`` before any exp/square. Every loss here is a quantity to **minimize**.
Names follow CleanRL / the papers: ``pg_loss``, ``v_loss``, ``approx_kl``, ``clipfrac``.

Two registries make the choices ablatable by name: :data:`LOSS_AGGREGATIONS` (how a
``(batch, seq_len)`` loss matrix becomes one number) and :data:`KL_ESTIMATORS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from algorithms.objectives.ops import masked_mean, zero_where_masked

# --------------------------------------------------------------------------------------
# Aggregation: how a (batch, seq_len) loss matrix becomes one number
# --------------------------------------------------------------------------------------

# fn(masked_loss, keep, norm_len, denominator) -> scalar; masked_loss is 0 where keep is False.
Aggregation = Callable[[Tensor, Tensor, "int | None", "float | Tensor | None"], Tensor]


def _token_mean(masked: Tensor, keep: Tensor, norm_len, denominator) -> Tensor:
    count = keep.sum().clamp_min(1) if denominator is None else denominator
    return masked.sum() / count


def _seq_mean(seq_losses: Tensor, denominator) -> Tensor:
    count = seq_losses.shape[0] if denominator is None else denominator
    return seq_losses.sum() / count


def _seq_mean_token_mean(masked: Tensor, keep: Tensor, norm_len, denominator) -> Tensor:
    return _seq_mean(masked.sum(-1) / keep.sum(-1).clamp_min(1), denominator)


def _seq_mean_token_sum_norm(masked: Tensor, keep: Tensor, norm_len, denominator) -> Tensor:
    if norm_len is None:
        raise ValueError("loss aggregation 'seq-mean-token-sum-norm' needs a constant norm_len")
    return _seq_mean(masked.sum(-1) / norm_len, denominator)


@dataclass(frozen=True)
class AggregationMode:
    """One aggregation mode: how it reduces, and what a micro-batch's denominator counts
    under it (tokens, or sequences), so the two facts cannot drift apart."""

    reduce: Aggregation
    counts_tokens: bool


LOSS_AGGREGATIONS: dict[str, AggregationMode] = {
    "token-mean": AggregationMode(_token_mean, counts_tokens=True),
    "seq-mean-token-mean": AggregationMode(_seq_mean_token_mean, counts_tokens=False),
    "seq-mean-token-sum-norm": AggregationMode(_seq_mean_token_sum_norm, counts_tokens=False),
}


def aggregate_loss(
    loss_mat: Tensor,
    mask: Tensor,
    mode: str = "token-mean",
    norm_len: int | None = None,
    denominator: float | Tensor | None = None,
) -> Tensor:
    """Reduce a per-token loss to a scalar; the choice changes how tokens are weighted.

    * ``"token-mean"``: sum over all generated tokens of the batch / their number. Every
      token weighs the same, so long responses weigh more (DAPO's choice).
    * ``"seq-mean-token-mean"``: mean over each sequence's tokens, then mean over sequences.
      Every sequence weighs the same (original GRPO), so a token of a short answer weighs
      more than a token of a long one: the length bias Dr. GRPO points out.
    * ``"seq-mean-token-sum-norm"``: sum over each sequence's tokens divided by a constant
      ``norm_len`` (the generation budget), then mean over sequences (Dr. GRPO). Pass the
      same ``norm_len`` every step; it is required because a padded width varies by batch.

    Sequence means run over all ``batch`` rows, counting a row with no generated token as
    loss 0. ``denominator`` replaces the count (tokens for token-mean, sequences otherwise)
    when a batch is split into micro-batches for gradient accumulation: pass the count of
    the *whole* batch so that the summed micro-batch losses equal the full-batch loss.
    """
    if mode not in LOSS_AGGREGATIONS:
        raise ValueError(
            f"unknown loss aggregation {mode!r}; choose one of {sorted(LOSS_AGGREGATIONS)}"
        )
    keep = mask.bool()
    return LOSS_AGGREGATIONS[mode].reduce(
        zero_where_masked(loss_mat, keep), keep, norm_len, denominator
    )


# --------------------------------------------------------------------------------------
# Policy loss: PPO clipped surrogate with asymmetric clip (DAPO clip-higher)
# --------------------------------------------------------------------------------------


def clipped_policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    agg_mode: str = "token-mean",
    norm_len: int | None = None,
    denominator: float | Tensor | None = None,
    token_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO-clip surrogate, per token: ``max(-A * ratio, -A * clip(ratio, 1-clip_low, 1+clip_high))``.

    ``ratio = exp(logprobs - old_logprobs)`` is pi_theta / pi_old for each sampled token.
    ``clip_high`` defaults to ``clip_low`` (symmetric PPO); DAPO's clip-higher uses e.g.
    ``clip_low=0.2, clip_high=0.28`` so low-probability tokens with positive advantage can
    grow further, which keeps entropy from collapsing.

    With a single update per rollout, pass ``old_logprobs = logprobs.detach()``: the ratio is
    1, nothing is clipped, and the gradient is the vanilla policy gradient ``-A * grad logp``
    (this is how GRPO with one epoch and REINFORCE use this same function).

    Returns ``(pg_loss, stats)``; the stats are token means over generated tokens:

    * ``clipfrac``: fraction of generated tokens where the clipped term was selected, i.e.
      clipping actually cut the gradient (a ratio outside the range whose advantage sign
      already pulls it back is not counted).
    * ``approx_kl``: mean of ``(ratio - 1) - log ratio``, the k3 estimate of KL(old || new)
      (always >= 0, low variance). ``old_approx_kl``: mean of ``-log ratio`` (k1).
    * ``ratio_mean``: mean importance ratio (should stay near 1).

    ``token_weights`` (constants, e.g. truncated importance weights pi_old / pi_sampler)
    scale each token's surrogate before aggregation.
    """
    clip_high = clip_low if clip_high is None else clip_high
    keep = mask.bool()
    # Clamp as verl does: a stale token with |log ratio| > 20 would overflow exp to inf.
    log_ratio = zero_where_masked(logprobs - old_logprobs, keep).clamp(-20.0, 20.0)
    ratio = torch.exp(log_ratio)
    advantages = zero_where_masked(advantages, keep)

    pg_losses_unclipped = -advantages * ratio
    pg_losses_clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    pg_losses = torch.maximum(pg_losses_unclipped, pg_losses_clipped)
    if token_weights is not None:
        pg_losses = pg_losses * zero_where_masked(token_weights.detach(), keep)
    pg_loss = aggregate_loss(pg_losses, keep, agg_mode, norm_len, denominator)

    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((pg_losses_clipped > pg_losses_unclipped).float(), keep),
            "approx_kl": masked_mean((ratio - 1) - log_ratio, keep),
            "old_approx_kl": masked_mean(-log_ratio, keep),
            "ratio_mean": masked_mean(ratio, keep),
        }
    return pg_loss, stats


# --------------------------------------------------------------------------------------
# KL to a frozen reference policy
# --------------------------------------------------------------------------------------


def _k3(log_r: Tensor) -> Tensor:
    log_r = log_r.clamp(-20.0, 20.0)
    return (torch.exp(log_r) - log_r - 1).clamp(-10.0, 10.0)


KL_ESTIMATORS: dict[str, Callable[[Tensor], Tensor]] = {
    "k1": lambda log_r: -log_r,
    "k2": lambda log_r: 0.5 * log_r.square(),
    "k3": _k3,
    "low_var_kl": _k3,
}


def kl_penalty(
    logprobs: Tensor,
    ref_logprobs: Tensor,
    estimator: str = "k3",
    mask: Tensor | None = None,
) -> Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) from the log-probs of sampled tokens.

    With ``log_r = ref_logprobs - logprobs`` (tokens sampled from pi_theta), following
    Schulman's "Approximating KL divergence":

    * ``"k1"``: ``-log_r = logp - logp_ref``. Unbiased, high variance, can be negative.
      The usual choice for a KL penalty folded into the reward (PPO, REINFORCE++).
    * ``"k2"``: ``0.5 * log_r**2``. Biased, low variance, >= 0.
    * ``"k3"`` / ``"low_var_kl"``: ``exp(log_r) - log_r - 1``. Unbiased, low variance,
      >= 0; GRPO's KL loss term (ReSearch uses it with coefficient 0.001). As in verl,
      ``log_r`` is clamped to [-20, 20] before the exp and the result to [-10, 10], so one
      token the reference finds absurd cannot blow up the loss.

    Returns a ``(batch, seq_len)`` tensor; aggregate it with :func:`aggregate_loss`. Pass
    ``mask`` when mask-0 log-probs may be non-finite: those tokens then read 0 and get zero
    gradient (aggregation alone cannot stop a NaN gradient from a k2 square, say).
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(
            f"unknown KL estimator {estimator!r}; choose one of {sorted(KL_ESTIMATORS)}"
        )
    log_r = ref_logprobs - logprobs
    if mask is not None:
        log_r = zero_where_masked(log_r, mask)
    return KL_ESTIMATORS[estimator](log_r)


# --------------------------------------------------------------------------------------
# Value loss (PPO critic)
# --------------------------------------------------------------------------------------


def clipped_value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip_range: float | None = 0.2,
    agg_mode: str = "token-mean",
    norm_len: int | None = None,
    denominator: float | Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """PPO value loss ``0.5 * max((v - R)^2, (clip(v, v_old - c, v_old + c) - R)^2)``.

    Clipping keeps the critic from moving more than ``c`` away from the values the
    advantages were computed with; ``clip_range=None`` gives the plain ``0.5 * (v - R)^2``.
    The value itself is clamped (not ``v_old + clamp(v - v_old)``): inside the range the
    clipped value is then exactly ``v``, so float rounding cannot make an unclipped token
    count as clipped. Returns ``(v_loss, vf_clipfrac)``, where ``vf_clipfrac`` is the
    fraction of generated tokens where the clipped term was the larger one.
    """
    keep = mask.bool()
    values = zero_where_masked(values, keep)
    returns = zero_where_masked(returns, keep)
    v_losses_unclipped = (values - returns).square()
    if clip_range is None:
        v_losses = v_losses_unclipped
        vf_clipfrac = torch.zeros((), device=values.device)
    else:
        old_values = zero_where_masked(old_values, keep)
        values_clipped = torch.clamp(values, old_values - clip_range, old_values + clip_range)
        v_losses_clipped = (values_clipped - returns).square()
        v_losses = torch.maximum(v_losses_unclipped, v_losses_clipped)
        with torch.no_grad():
            vf_clipfrac = masked_mean((v_losses_clipped > v_losses_unclipped).float(), keep)
    v_loss = 0.5 * aggregate_loss(v_losses, keep, agg_mode, norm_len, denominator)
    return v_loss, vf_clipfrac
