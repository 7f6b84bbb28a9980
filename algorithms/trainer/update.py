"""The update half of a training step: the no-grad passes, then minibatch updates.

    prepare_update(batch)     pi_old, the reference and the critic's values (no grad)
    run_update(data)          for epoch: for minibatch: for micro-batch:
                                  loss, stats = objective(micro, scores); loss.backward()
                              clip grads; stop (or, if asked, skip the step) if anything
                              is non-finite; step

Loss micro-batching: every micro-batch loss is divided by the token (or sequence) count of
its whole *minibatch*, so the summed micro-batch gradients equal the full minibatch's.
Each statistic carries its own reduction (:class:`~algorithms.objectives.Stat`): losses are
summed over micro-batches, means are token-weighted. Statistics stay tensors on the
policy's device and are read once per optimizer step, so a GPU update does not stop for a
host round-trip per value.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from algorithms.buffer import Batch, UpdateBatch
from algorithms.config import TrainConfig
from algorithms.objectives import Stat
from algorithms.objectives.losses import LOSS_AGGREGATIONS
from algorithms.policy import Policy
from algorithms.scoring import (
    TokenScores,
    autocast,
    critic_values,
    reference_logprobs,
    score_batch,
    score_tokens,
    score_values,
    trim_padding,
)
from algorithms.trainer import distributed, fsdp

Objective = Callable[[UpdateBatch, TokenScores, float], tuple[Tensor, dict[str, Stat]]]


class NonFiniteUpdateError(ValueError):
    """An optimizer step met a non-finite loss or gradient norm and
    ``trainer.skip_nonfinite_updates`` is false: training stops before the weights change."""

    def __init__(self, loss_finite: bool, grad_norm: float, step: int | None = None) -> None:
        self.loss_finite, self.grad_norm = loss_finite, grad_norm
        what = f"the gradient norm is {grad_norm}" if loss_finite else "the loss is not finite"
        where = "" if step is None else f"step {step}: "
        super().__init__(
            f"{where}{what}: training stopped before this optimizer step, so no weight was changed "
            "by it and no final model is exported. Lower optim.lr, set optim.max_grad_norm, "
            "or set trainer.skip_nonfinite_updates=true to skip such steps (they are counted "
            "in train/skipped_updates and warned about)"
        )


@dataclass
class Models:
    """What an update touches: the policy (maybe with a shared value head), a separate
    critic (PPO with ``critic: separate``), and the frozen KL reference."""

    policy: Policy
    critic: Policy | None = None
    reference: Any = None

    @property
    def shared_values(self) -> bool:
        return self.critic is None and self.policy.value_head is not None


# --------------------------------------------------------------------------------------
# The no-grad passes
# --------------------------------------------------------------------------------------


@torch.no_grad()
def prepare_update(
    batch: Batch,
    models: Models,
    config: TrainConfig,
    *,
    old_source: str,
    with_reference: bool,
) -> UpdateBatch:
    """The no-grad passes before an update, as an :class:`UpdateBatch`.

    ``old_source``: where pi_old comes from, as :func:`algorithms.trainer.step.old_logprobs_source`
    decided: ``recompute`` scores it with the training model here; ``rollout`` takes the
    sampler's log-probs; ``current`` leaves ``old_logprobs`` None, so the objective uses
    the current policy's, detached (ratio 1, no extra pass). ``with_reference``: score the
    KL reference.
    """
    recompute_old = old_source == "recompute"
    cfg = config.trainer
    data = UpdateBatch(batch)
    scoring: dict[str, Any] = dict(
        temperature=config.rollout.temperature,
        micro_batch_size=cfg.micro_batch_size,
        chunk_size=cfg.logprob_chunk_size,
        share_prompts=cfg.share_prompts,
    )
    with autocast(models.policy.model, cfg.autocast_dtype):
        if recompute_old or models.shared_values:
            head = models.policy.value_head if models.shared_values else None
            old = score_batch(models.policy.model, batch, value_head=head, **scoring)
            if recompute_old:
                data.old_logprobs = old.logprobs
            data.old_values = old.values
        if old_source == "rollout":
            data.old_logprobs = batch.sample_logprobs
        if models.critic is not None:
            assert models.critic.value_head is not None
            data.old_values = critic_values(
                models.critic.model,
                models.critic.value_head,
                batch,
                cfg.micro_batch_size,
                cfg.share_prompts,
            )
        if with_reference:
            data.ref_logprobs = reference_logprobs(
                models.policy.model, batch, reference_model=models.reference, **scoring
            )
    return data


# --------------------------------------------------------------------------------------
# Minibatch updates
# --------------------------------------------------------------------------------------


def run_update(
    data: UpdateBatch | None,
    models: Models,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    objective: Objective,
    *,
    loss_agg: str,
    entropy_grad: bool,
) -> dict[str, float]:
    """Epochs of minibatch updates with gradient accumulation, clipping and skipping.

    Under data parallelism (``trainer/distributed.py``) each epoch is one optimizer step
    per rank over all its rows; ``data`` is None on a rank left with no episode, which
    then contributes zero gradients to the others' step.
    """
    cfg = config.trainer
    n = 0 if data is None else data.batch.rewards.shape[0]
    minibatch = cfg.minibatch_size or max(n, 1)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    max_norm = config.optim.max_grad_norm
    totals: dict[str, float] = defaultdict(float)
    updates = skipped = 0
    tokens_seen = 0
    models.policy.model.train()
    for _ in range(cfg.epochs):
        for mb in _minibatches(data, minibatch):
            optimizer.zero_grad(set_to_none=True)
            local = 0.0 if mb is None else _denominator(mb, loss_agg)
            denominator = distributed.all_reduce_sum(local, models.policy.device)
            partials: dict[str, _Partial] = {}
            finite = torch.ones((), dtype=torch.bool, device=models.policy.device)
            if mb is not None:
                with autocast(models.policy.model, cfg.autocast_dtype):
                    partials, finite = _accumulate_gradients(
                        mb, models, config, objective, max(denominator, 1.0), entropy_grad
                    )
            distributed.all_reduce_gradients(params)
            grad_norm = fsdp.clip_grad_norm_(  # torch's, unless gradients are FSDP shards
                params, max_norm if max_norm is not None else float("inf")
            )
            # The one host read of this optimizer step: finiteness, grad norm and stats.
            if not bool(finite & torch.isfinite(grad_norm)):
                optimizer.zero_grad(set_to_none=True)
                if not cfg.skip_nonfinite_updates:
                    raise NonFiniteUpdateError(bool(finite), float(grad_norm))
                skipped += 1
                continue
            optimizer.step()
            updates += 1
            tokens_seen += 0 if mb is None else int(mb.batch.attention_mask.sum())
            stats = _reduce_stats(partials)
            stats["grad_norm"] = float(grad_norm)
            for k, v in stats.items():
                totals[k] += v
    optimizer.zero_grad(set_to_none=True)
    models.policy.model.eval()
    metrics = {f"train/{k}": v / max(updates, 1) for k, v in totals.items()}
    metrics["train/optimizer_steps"] = float(updates)
    metrics["train/skipped_updates"] = float(skipped)
    metrics["perf/update_tokens"] = float(tokens_seen)
    return metrics


def _minibatches(data: UpdateBatch | None, size: int) -> Iterator[UpdateBatch | None]:
    """One epoch's minibatches in a random order. Inside a minibatch, rows are ordered by
    group (a group's shared prompt runs once per micro-batch), then by length (little
    padding per micro-batch). A rank without rows yields one empty minibatch under data
    parallelism, so that it joins every collective."""
    if data is None:
        if distributed.is_distributed():
            yield None
        return
    n = data.batch.rewards.shape[0]
    lengths = data.batch.attention_mask.sum(-1)
    order_key = (data.batch.group_ids * (lengths.max() + 1) + lengths).cpu()
    for rows in torch.randperm(n, device="cpu").split(size):
        rows = rows[torch.argsort(order_key[rows], stable=True)]  # sums ignore order
        yield data.rows(rows, trim=trim_padding)


def _denominator(data: UpdateBatch, loss_agg: str) -> float:
    """This rank's count (tokens or sequences) that the minibatch's losses are divided by;
    the update divides by the sum over ranks."""
    mode = LOSS_AGGREGATIONS.get(loss_agg)
    if mode is None or mode.counts_tokens:
        return float(data.mask.sum())
    return float(data.mask.shape[0])


# A statistic while it is being reduced: (sum of values or of value * weight, the summed
# token weight for token means, the reduction).
_Partial = tuple[Tensor, Tensor | None, str]


def _accumulate_gradients(
    mb: UpdateBatch,
    models: Models,
    config: TrainConfig,
    objective: Objective,
    denominator: float,
    entropy_grad: bool,
) -> tuple[dict[str, _Partial], Tensor]:
    """Backward over the micro-batches of one minibatch; return the statistics' partial
    reductions and whether every micro-batch loss was finite (tensors: nothing is read)."""
    cfg = config.trainer
    device = mb.mask.device
    partials: dict[str, _Partial] = {}
    finite = torch.ones((), dtype=torch.bool, device=device)
    n = mb.batch.rewards.shape[0]
    for start in range(0, n, cfg.micro_batch_size):
        index = torch.arange(start, min(start + cfg.micro_batch_size, n), device=device)
        micro = mb.rows(index, trim=trim_padding)
        scores = score_tokens(
            models.policy.model,
            micro.batch,
            temperature=config.rollout.temperature,
            value_head=models.policy.value_head if models.shared_values else None,
            with_entropy=True,
            entropy_grad=entropy_grad,
            chunk_size=cfg.logprob_chunk_size,
            share_prompts=cfg.share_prompts,
        )
        if models.critic is not None:
            assert models.critic.value_head is not None
            scores.values = score_values(
                models.critic.model, models.critic.value_head, micro.batch, cfg.share_prompts
            )
        loss, stats = objective(micro, scores, denominator)
        finite = finite & torch.isfinite(loss)
        loss.backward()
        weight = micro.mask.sum().double()
        for name, stat in stats.items():
            value = stat.value.double()
            total, weights, _ = partials.get(name, (None, None, stat.reduction))
            if stat.reduction == "sum":
                partials[name] = (value if total is None else total + value, None, "sum")
            elif stat.reduction == "max":
                top = value if total is None else torch.maximum(total, value)
                partials[name] = (top, None, "max")
            else:
                weighted = value * weight if total is None else total + value * weight
                summed = weight if weights is None else weights + weight
                partials[name] = (weighted, summed, "mean")
    return partials, finite


def _reduce_stats(partials: dict[str, _Partial]) -> dict[str, float]:
    """Finish each statistic's reduction, over this rank's micro-batches and then over the
    ranks: sums add up, maxima take the largest, token means weigh by tokens."""
    local = {
        name: (float(total), None if weights is None else float(weights), reduction)
        for name, (total, weights, reduction) in partials.items()
    }
    merged: dict[str, tuple[float, float | None, str]] = {}
    for part in distributed.gather_objects(local):
        for name, (total, weights, reduction) in part.items():
            if name not in merged:
                merged[name] = (total, weights, reduction)
                continue
            seen_total, seen_weights, _ = merged[name]
            if reduction == "max":
                merged[name] = (max(seen_total, total), None, reduction)
            else:
                both = None if weights is None else (seen_weights or 0.0) + weights
                merged[name] = (seen_total + total, both, reduction)
    return {
        name: total / max(weights, 1.0) if weights is not None else total
        for name, (total, weights, _) in merged.items()
    }
