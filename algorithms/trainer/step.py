"""One training step's pipeline, top to bottom, as plain functions of their inputs:

    kept   = filter_trajectories(trajectories)   drop flat groups (optional)
    batch  = collate(kept)                       on the policy's device
    data   = prepare_update(batch, old=...)      pi_old (old_logprobs_source), reference,
                                                 critic values; no grad (update.py)
    stats  = add_advantages(data, recipe)        the algorithm's registered estimator
    mask_truncated(data, kept)                   after they served as baselines
    run_update(data, objective_of(terms))        minibatches of policy_objective (update.py)

Nothing here calls back into the algorithm object: what the algorithm declares (its
estimator, its objective terms, whether the KL sits in the reward) arrives once, as a
:class:`StepRecipe`. The loop (``loop.py``) rolls out, calls :func:`update_step`, then
advances its schedule, logs and saves.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from algorithms.buffer import Trajectory, UpdateBatch, collate, flat_groups
from algorithms.config import TrainConfig
from algorithms.objectives import AdvantageInputs, ObjectiveTerms, compute_advantages
from algorithms.objectives.losses import kl_penalty
from algorithms.objectives.objective import policy_objective
from algorithms.objectives.ops import masked_mean
from algorithms.scoring import TokenScores
from algorithms.trainer import distributed
from algorithms.trainer.metrics import is_truncated
from algorithms.trainer.update import Models, Objective, prepare_update, run_update

OldLogprobs = Literal["current", "recompute", "rollout"]


@dataclass(frozen=True)
class StepRecipe:
    """What an algorithm declares for its update, gathered once per step.

    Attributes:
        advantage: the estimator's registry name and parameters (None: no advantages, SFT).
        terms: the objective's term weights (with the run's ``tis_cap``).
        kl_coef: weight of the KL to the reference (0: no reference pass).
        kl_in_reward: the KL penalty is part of the reward (PPO, REINFORCE).
        kl_estimator: the estimator of that penalty, when it is.
    """

    advantage: tuple[str, dict[str, Any]] | None
    terms: ObjectiveTerms
    kl_coef: float = 0.0
    kl_in_reward: bool = False
    kl_estimator: str | None = None


@dataclass
class StepResult:
    """What a step's update gives back: its metrics, the episodes it kept and the batch
    the loss saw (None when this rank kept none)."""

    metrics: dict[str, float]
    kept: list[Trajectory]
    data: UpdateBatch | None


def old_logprobs_source(config: TrainConfig, n_rows: int, kl_in_reward: bool) -> OldLogprobs:
    """Where pi_old, the importance ratio's denominator, comes from (``trainer.old_logprobs``):

    - ``recompute``: a no-grad pass of the training model before the update; ``auto``
      picks it when the update takes several optimizer steps (epochs or minibatches) or
      the KL sits in the reward (the advantages need pi_old first);
    - ``current``: the current policy's own log-probs, detached, in each micro-batch
      (ratio 1, no extra pass), ``auto``'s choice for a single optimizer step;
    - ``rollout``: the sampler's log-probs as they are.
    """
    cfg = config.trainer
    if cfg.old_logprobs == "rollout":
        return "rollout"
    if cfg.old_logprobs == "recompute":
        return "recompute"
    single = cfg.epochs == 1 and (cfg.minibatch_size is None or cfg.minibatch_size >= n_rows)
    return "recompute" if not single or kl_in_reward else "current"


def objective_of(terms: ObjectiveTerms) -> Objective:
    """The loss of one micro-batch: the shared policy objective with these terms."""

    def objective(data: UpdateBatch, scores: TokenScores, denominator: float) -> Any:
        return policy_objective(scores, data, terms, denominator)

    return objective


def filter_trajectories(
    trajectories: Sequence[Trajectory], config: TrainConfig, has_advantages: bool
) -> tuple[list[Trajectory], dict[str, float]]:
    """Drop groups whose rewards are all equal, if configured (counted in the metrics).
    Only meaningful for algorithms with advantages: a flat group has no signal."""
    kept = list(trajectories)
    stats = {"filter/zero_variance_groups": 0.0, "filter/kept_episodes": float(len(kept))}
    if config.trainer.filter_zero_variance_groups and has_advantages:
        flat = flat_groups(trajectories)
        kept = [t for t in trajectories if t.group not in flat]
        stats["filter/zero_variance_groups"] = float(len(flat))
        stats["filter/kept_episodes"] = float(len(kept))
    return kept, stats


def mask_truncated(
    data: UpdateBatch, kept: Sequence[Trajectory], config: TrainConfig
) -> dict[str, float]:
    """Zero the loss mask of truncated episodes after they served as baselines."""
    truncated = [i for i, t in enumerate(kept) if is_truncated(t)]
    masked = config.trainer.filter_truncated and bool(truncated)
    if masked:
        data.batch.loss_mask[torch.tensor(truncated, device=data.mask.device)] = 0.0
    return {"filter/truncated_episodes": float(len(truncated) if masked else 0)}


def add_advantages(data: UpdateBatch, recipe: StepRecipe) -> dict[str, Tensor]:
    """Fill ``data.advantages`` (and ``data.returns``) with the declared estimator."""
    if recipe.advantage is None:
        return {}
    name, params = recipe.advantage
    mask, stats = data.mask, {}
    kl = None
    if recipe.kl_in_reward:
        assert data.old_logprobs is not None and data.ref_logprobs is not None
        assert recipe.kl_estimator is not None
        kl = kl_penalty(data.old_logprobs, data.ref_logprobs, recipe.kl_estimator, mask)
        stats["train/kl"] = masked_mean(kl, mask)
    batch = data.batch
    # The episode's return: the final reward plus the turns' step rewards (shaping).
    returns = batch.rewards
    if batch.step_rewards is not None:
        returns = returns + batch.step_rewards.sum(dim=-1)
    inputs = AdvantageInputs(
        returns,
        mask,
        batch.group_ids,
        kl,
        recipe.kl_coef,
        values=data.old_values,
        step_rewards=batch.step_rewards,
    )
    result = compute_advantages(name, inputs, **params)
    data.advantages, data.returns = result.advantages, result.returns
    stats["train/advantage_abs"] = masked_mean(result.advantages.abs(), mask)
    if data.old_values is not None:
        stats["train/value_mean"] = masked_mean(data.old_values, mask)
    if result.returns is not None:
        stats["train/return_mean"] = masked_mean(result.returns, mask)
    return stats


def update_step(
    trajectories: Sequence[Trajectory],
    models: Models,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    recipe: StepRecipe,
    *,
    sharded: bool = False,
) -> StepResult:
    """Filter, collate, score, estimate advantages and update on one step's episodes.

    ``sharded``: the policy is sharded over the ranks (FSDP), so every rank must update
    on as many episodes as the others.
    """
    t0 = time.perf_counter()
    kept, metrics = filter_trajectories(trajectories, config, recipe.advantage is not None)
    if sharded:
        counts = distributed.gather_objects(len(kept))
        if len(set(counts)) > 1:
            raise RuntimeError(
                "under FSDP every rank must update on as many episodes as the others "
                f"(each pass over a sharded block is a collective); the ranks kept {counts}"
            )
    # Every rank must agree on whether there is an update at all (its collectives).
    policy = models.policy
    anywhere = distributed.all_reduce_sum(float(len(kept)), policy.device)
    objective = objective_of(recipe.terms)
    update_args: dict[str, Any] = dict(
        loss_agg=recipe.terms.loss_agg, entropy_grad=recipe.terms.entropy_coef != 0.0
    )
    data: UpdateBatch | None = None
    if kept:
        batch = collate(kept, policy.tokenizer.pad_token_id, device=policy.device)
        data = prepare_update(
            batch,
            models,
            config,
            old_source=old_logprobs_source(config, len(kept), recipe.kl_in_reward),
            with_reference=recipe.kl_coef != 0.0,
        )
        stats = add_advantages(data, recipe)
        metrics |= mask_truncated(data, kept, config)
        t1 = time.perf_counter()
        metrics["time/prepare"] = t1 - t0
        metrics |= run_update(data, models, optimizer, config, objective, **update_args)
        metrics |= {k: float(v) for k, v in stats.items()}  # read after the update
        metrics["time/update"] = time.perf_counter() - t1
        metrics["perf/update_tokens_per_s"] = metrics["perf/update_tokens"] / max(
            metrics["time/update"], 1e-9
        )
    elif anywhere:  # only other ranks kept episodes: join their update with no rows
        metrics |= run_update(None, models, optimizer, config, objective, **update_args)
    else:
        metrics["train/skipped_steps"] = 1.0
    return StepResult(metrics, kept, data)
