"""The one policy objective every algorithm trains with, and how its statistics reduce.

GRPO, PPO, REINFORCE and the SFT warm start differ only in their advantage estimator and
in the weights of the terms below (:class:`ObjectiveTerms`); the loss itself is written
once, in :func:`policy_objective`:

    loss = pg_coef * pg_loss + nll_coef * nll_loss + kl_coef * kl_loss
           + vf_coef * v_loss - entropy_coef * entropy_loss

Each statistic says how it combines across the micro-batches of one optimizer step
(:class:`Stat`), instead of the trainer guessing from its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from algorithms.objectives.losses import (
    aggregate_loss,
    clipped_policy_loss,
    clipped_value_loss,
    kl_penalty,
)
from algorithms.objectives.ops import masked_mean, zero_where_masked

if TYPE_CHECKING:
    from algorithms.buffer import UpdateBatch
    from algorithms.scoring import TokenScores

Reduction = Literal["sum", "mean", "max"]


@dataclass(frozen=True)
class Stat:
    """A detached 0-d statistic of one micro-batch and its reduction.

    ``"sum"``: the value is already divided by the whole minibatch's denominator (every
    loss term is), so the minibatch's value is the *sum* over its micro-batches.
    ``"mean"``: a mean over this micro-batch's generated tokens (entropy, clipfrac, KL...);
    the minibatch's value is the token-weighted mean over micro-batches.
    ``"max"``: a maximum over this micro-batch's tokens; the minibatch's is the maximum.
    """

    value: Tensor
    reduction: Reduction


def summed(value: Tensor) -> Stat:
    return Stat(value.detach(), "sum")


def token_mean(value: Tensor) -> Stat:
    return Stat(value.detach(), "mean")


def maximum(value: Tensor) -> Stat:
    return Stat(value.detach(), "max")


@dataclass(frozen=True)
class ObjectiveTerms:
    """Which terms the loss has, and their weights. A term whose weight is 0 is not computed
    (entropy is still logged).

    Attributes:
        pg_coef: the clipped policy-gradient term (0 for behaviour cloning).
        nll_coef: the negative log-likelihood of the generated tokens (SFT).
        clip_low, clip_high: the PPO clip range (``clip_high`` None = symmetric).
        kl_coef, kl_estimator: KL to the reference *as a loss term* (GRPO). Algorithms that
            put the KL in the reward (PPO, REINFORCE) leave this 0.
        vf_coef, vf_clip: the critic's value loss and its clip range (PPO).
        entropy_coef: entropy bonus.
        loss_agg: the aggregation (``objectives.losses.LOSS_AGGREGATIONS``).
        norm_len: the constant length of ``seq-mean-token-sum-norm``.
        tis_cap: truncated importance sampling. When the rollout came from another engine
            or precision than the learner (a bf16 rollout copy, vLLM), each token's
            policy-gradient term is weighted by ``min(pi_old / pi_sampler, tis_cap)``;
            ``None`` = off. The sampler/learner mismatch is logged either way.
    """

    pg_coef: float = 1.0
    nll_coef: float = 0.0
    clip_low: float = 0.2
    clip_high: float | None = None
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    vf_coef: float = 0.0
    vf_clip: float | None = None
    entropy_coef: float = 0.0
    loss_agg: str = "token-mean"
    norm_len: int | None = None
    tis_cap: float | None = None


def policy_objective(
    scores: TokenScores, data: UpdateBatch, terms: ObjectiveTerms, denominator: float
) -> tuple[Tensor, dict[str, Stat]]:
    """The loss to minimize on one micro-batch, and its statistics (CleanRL's names).

    ``scores`` are the current policy's log-probs (and entropy, values) of ``data``'s
    tokens; ``denominator`` is the count (tokens or sequences, per the aggregation) of the
    whole minibatch, so summed micro-batch losses equal the minibatch's loss.
    """
    mask = data.mask

    def aggregate(loss_mat: Tensor) -> Tensor:
        return aggregate_loss(loss_mat, mask, terms.loss_agg, terms.norm_len, denominator)

    stats: dict[str, Stat] = {}
    loss: Tensor | None = None

    def add(term: Tensor, coef: float) -> None:
        nonlocal loss
        weighted = term if coef == 1.0 else coef * term
        loss = weighted if loss is None else loss + weighted

    if terms.pg_coef != 0.0:
        if data.advantages is None:
            raise ValueError("the policy-gradient term needs advantages; none were computed")
        old = data.old_logprobs if data.old_logprobs is not None else scores.logprobs.detach()
        # The sampler's log-probs against the learner's pi_old: the mismatch, and TIS.
        log_ratio = zero_where_masked(old - data.batch.sample_logprobs, mask).clamp(-20.0, 20.0)
        sampler_ratio = torch.exp(log_ratio)
        stats["sampler_kl"] = token_mean(masked_mean(sampler_ratio - 1 - log_ratio, mask))
        stats["sampler_ratio_max"] = maximum(zero_where_masked(sampler_ratio, mask).max())
        weights = None
        if terms.tis_cap is not None:
            weights = sampler_ratio.clamp(max=terms.tis_cap)
            stats["tis_weight_mean"] = token_mean(masked_mean(weights, mask))
        pg_loss, pg_stats = clipped_policy_loss(
            scores.logprobs,
            old,
            data.advantages,
            mask,
            clip_low=terms.clip_low,
            clip_high=terms.clip_high,
            agg_mode=terms.loss_agg,
            norm_len=terms.norm_len,
            denominator=denominator,
            token_weights=weights,
        )
        add(pg_loss, terms.pg_coef)
        stats |= {name: token_mean(value) for name, value in pg_stats.items()}
        stats["pg_loss"] = summed(pg_loss)

    if terms.nll_coef != 0.0:
        nll_loss = aggregate(-scores.logprobs)
        add(nll_loss, terms.nll_coef)
        stats["nll"] = summed(nll_loss)

    if terms.kl_coef != 0.0:
        if data.ref_logprobs is None:
            raise ValueError("the KL term needs the reference log-probs; none were computed")
        kl = kl_penalty(scores.logprobs, data.ref_logprobs, terms.kl_estimator, mask)
        kl_loss = aggregate(kl)
        add(kl_loss, terms.kl_coef)
        stats["kl_loss"] = summed(kl_loss)
        stats["kl"] = token_mean(masked_mean(kl.detach(), mask))

    if terms.vf_coef != 0.0:
        if scores.values is None or data.old_values is None or data.returns is None:
            raise ValueError("the value term needs values, old values and returns")
        v_loss, vf_clipfrac = clipped_value_loss(
            scores.values,
            data.old_values,
            data.returns,
            mask,
            clip_range=terms.vf_clip,
            agg_mode=terms.loss_agg,
            norm_len=terms.norm_len,
            denominator=denominator,
        )
        add(v_loss, terms.vf_coef)
        stats["v_loss"] = summed(v_loss)
        stats["vf_clipfrac"] = token_mean(vf_clipfrac)

    if scores.entropy is not None:
        entropy_loss = aggregate(scores.entropy)
        if terms.entropy_coef != 0.0:
            add(entropy_loss, -terms.entropy_coef)
        stats["entropy"] = token_mean(masked_mean(scores.entropy.detach(), mask))
        stats["entropy_loss"] = summed(entropy_loss)

    if loss is None:
        raise ValueError("the objective has no term: every coefficient is 0")
    stats["loss"] = summed(loss)
    return loss, stats
