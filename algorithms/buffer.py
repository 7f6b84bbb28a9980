"""The one data contract of training: what a rollout records per episode
(:class:`Trajectory`), how episodes become padded tensors (:class:`Batch`), and the
per-token tensors an update adds to them (:class:`UpdateBatch`).

A :class:`Trajectory` keeps token ids exactly as they were sampled: the prompt, then
the response in which the model's tokens (loss mask 1) and the environment's
observation tokens (loss mask 0) alternate. Log-probs computed at training time are
therefore over the very tokens that were sampled; no text is re-tokenized.

:func:`collate` lays a batch out the way the losses want it: prompts left-padded to a
common length ``P`` and responses right-padded to ``R``, so column ``P + t`` of the
input holds response token ``t`` of every row, and the logits at column ``P + t - 1``
predict it.

Everything an update reads lives here as a typed field, on the policy's device: the
sampler's log-probs (``Batch.sample_logprobs``) and the recomputed pi_old
(``UpdateBatch.old_logprobs``) have different names because they are different numbers
whenever the rollout ran in another precision or the update takes several steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from research_env.termination import Termination

# Where collate builds its tensors before one move to the policy's device.
HOST = torch.device("cpu")


@dataclass
class Trajectory:
    """One episode played by the policy.

    Attributes:
        prompt_ids: the rendered prompt's tokens.
        response_ids: everything after the prompt: model turns and observations.
        loss_mask: 1 where the model generated the token, 0 on observation tokens.
        sample_logprobs: log-prob of each response token under the sampling policy
            (0.0 on observation tokens).
        turn_spans: ``(start, end)`` of each model turn within ``response_ids``.
        turn_rewards: the env's step reward of each model turn beyond the answer's, i.e. its
            shaping terms (:mod:`research_env.shaping`), aligned with ``turn_spans``; all 0
            when shaping is off.
        reward: the episode's final reward: the answer's, without any shaping, so episode
            metrics mean the same with and without it (``episode_return`` adds the shaping).
        info: the environment's final ``info``.
        group: index of the question in the rollout batch (the GRPO group).
        finish_reason: why the episode ended (:class:`~research_env.termination.Termination`:
            ``ANSWERED``, ``TURN_BUDGET``, ``TOKEN_BUDGET``...); None until it has.
    """

    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    sample_logprobs: list[float] = field(default_factory=list)
    turn_spans: list[tuple[int, int]] = field(default_factory=list)
    turn_rewards: list[float] = field(default_factory=list)
    reward: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    group: int = 0
    finish_reason: Termination | None = None

    def add_model_tokens(self, ids: Sequence[int], logprobs: Sequence[float]) -> None:
        start = len(self.response_ids)
        self.response_ids.extend(ids)
        self.loss_mask.extend([1] * len(ids))
        self.sample_logprobs.extend(logprobs)
        self.turn_spans.append((start, len(self.response_ids)))

    def add_observation_tokens(self, ids: Sequence[int]) -> None:
        self.response_ids.extend(ids)
        self.loss_mask.extend([0] * len(ids))
        self.sample_logprobs.extend([0.0] * len(ids))

    @property
    def n_generated(self) -> int:
        return sum(self.loss_mask)

    @property
    def episode_return(self) -> float:
        """What the episode earned in all: the final reward plus every turn's step reward."""
        return self.reward + sum(self.turn_rewards, 0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt_ids": self.prompt_ids,
            "response_ids": self.response_ids,
            "loss_mask": self.loss_mask,
            "sample_logprobs": self.sample_logprobs,
            "turn_spans": self.turn_spans,
            "turn_rewards": self.turn_rewards,
            "reward": self.reward,
            "info": self.info,
            "group": self.group,
            "finish_reason": str(self.finish_reason or ""),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Trajectory:
        data = dict(data)
        data["turn_spans"] = [tuple(s) for s in data.get("turn_spans", [])]
        data["finish_reason"] = (
            Termination(data["finish_reason"]) if data.get("finish_reason") else None
        )
        return cls(**data)


def group_returns(trajectories: Sequence[Trajectory]) -> dict[int, list[float]]:
    """Each group's episode returns (reward plus step rewards), by group id."""
    returns: dict[int, list[float]] = {}
    for t in trajectories:
        returns.setdefault(t.group, []).append(t.episode_return)
    return returns


def flat_groups(trajectories: Sequence[Trajectory]) -> set[int]:
    """The groups with no learning signal: their returns are all equal (their range is 0;
    a group of one sample is flat). The one definition the trainer's filter and its
    ``health/flat_group_fraction`` use; the advantage estimators apply the same rule to
    tensors (``algorithms/objectives/advantages.py``, ``_zero_flat_groups``)."""
    return {g for g, r in group_returns(trajectories).items() if max(r) - min(r) == 0.0}


@dataclass
class Batch:
    """Padded tensors for a list of trajectories (see the module docstring for layout).

    Shapes: ``input_ids``/``attention_mask``/``position_ids`` (B, P + R);
    ``loss_mask``/``sample_logprobs`` (B, R); ``rewards``/``group_ids`` (B,).
    ``loss_mask`` is the loss mask (1 on generated tokens only). ``rewards`` are the final
    rewards; ``step_rewards`` (B, R) holds each turn's step reward (shaping) on the turn's
    last token, or is None when no turn of the batch has one (shaping off).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    loss_mask: torch.Tensor
    sample_logprobs: torch.Tensor
    rewards: torch.Tensor
    group_ids: torch.Tensor
    prompt_len: int
    step_rewards: torch.Tensor | None = None

    @property
    def response_len(self) -> int:
        return self.loss_mask.shape[1]

    def _map_tensors(self, fn: Any) -> Batch:
        changes = {k: fn(v) for k, v in self.__dict__.items() if isinstance(v, torch.Tensor)}
        return replace(self, **changes)

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with every tensor on ``device`` (a no-op where they already are)."""
        return self._map_tensors(lambda t: t.to(device, non_blocking=True))

    def select(self, rows: torch.Tensor | Sequence[int]) -> Batch:
        """A sub-batch of the given rows (for minibatches), keeping the same padding."""
        index = torch.as_tensor(rows, dtype=torch.long, device=self.input_ids.device)
        return self._map_tensors(lambda t: t[index])


def collate(
    trajectories: Sequence[Trajectory], pad_id: int, device: torch.device | str = "cpu"
) -> Batch:
    """Left-pad prompts and right-pad responses into one :class:`Batch` on ``device``
    (the policy's: the tensors are built on the host, then moved in one go)."""
    if not trajectories:
        raise ValueError("collate() needs at least one trajectory")
    n = len(trajectories)
    p = max(len(t.prompt_ids) for t in trajectories)
    r = max(1, max(len(t.response_ids) for t in trajectories))
    input_ids = torch.full((n, p + r), pad_id, dtype=torch.long, device=HOST)
    attention_mask = torch.zeros((n, p + r), dtype=torch.long, device=HOST)
    loss_mask = torch.zeros((n, r), dtype=torch.float32, device=HOST)
    sample_logprobs = torch.zeros((n, r), dtype=torch.float32, device=HOST)
    for i, t in enumerate(trajectories):
        lp, lr = len(t.prompt_ids), len(t.response_ids)
        input_ids[i, p - lp : p] = torch.tensor(t.prompt_ids, dtype=torch.long, device=HOST)
        attention_mask[i, p - lp : p + lr] = 1
        if lr:
            input_ids[i, p : p + lr] = torch.tensor(t.response_ids, dtype=torch.long, device=HOST)
            loss_mask[i, :lr] = torch.tensor(t.loss_mask, dtype=torch.float32, device=HOST)
            sample_logprobs[i, :lr] = torch.tensor(
                t.sample_logprobs, dtype=torch.float32, device=HOST
            )
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return Batch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        loss_mask=loss_mask,
        sample_logprobs=sample_logprobs,
        rewards=torch.tensor([t.reward for t in trajectories], dtype=torch.float32, device=HOST),
        group_ids=torch.tensor([t.group for t in trajectories], dtype=torch.long, device=HOST),
        prompt_len=p,
        step_rewards=_step_rewards(trajectories, r),
    ).to(device)


def _step_rewards(trajectories: Sequence[Trajectory], width: int) -> torch.Tensor | None:
    """``(B, width)``: each turn's step reward on the last token of its turn span (where a
    token-level return picks it up for that turn and every earlier one); None if all 0."""
    if not any(any(t.turn_rewards) for t in trajectories):
        return None
    step_rewards = torch.zeros((len(trajectories), width), dtype=torch.float32, device=HOST)
    for i, t in enumerate(trajectories):
        if len(t.turn_rewards) != len(t.turn_spans):
            raise ValueError(
                f"trajectory {i} has {len(t.turn_rewards)} turn rewards for "
                f"{len(t.turn_spans)} turns; record one step reward per model turn"
            )
        for (start, end), reward in zip(t.turn_spans, t.turn_rewards, strict=True):
            if reward and end > start:
                step_rewards[i, end - 1] += reward
    return step_rewards


@dataclass
class UpdateBatch:
    """A collated rollout and the per-token tensors an update adds, all ``(B, R)`` on the
    policy's device. A field is None when the algorithm does not need it.

    Attributes:
        batch: the collated episodes.
        advantages: from the algorithm's advantage estimator.
        returns: the critic's targets (PPO).
        old_logprobs: pi_old recomputed by a no-grad pass; None means "the current policy,
            detached" (a single update step, ratio 1).
        ref_logprobs: the frozen reference policy's log-probs (KL).
        old_values: the critic's values before the update (GAE, value clipping).
    """

    batch: Batch
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    old_logprobs: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None
    old_values: torch.Tensor | None = None

    @property
    def mask(self) -> torch.Tensor:
        """The loss mask: 1 on generated tokens the loss trains on."""
        return self.batch.loss_mask

    def rows(self, index: torch.Tensor, trim: Any = None) -> UpdateBatch:
        """A sub-batch of rows; ``trim`` (e.g. ``scoring.trim_padding``) narrows the padded
        columns, and every per-token tensor is cut to the same response width."""
        batch = self.batch.select(index)
        if trim is not None:
            batch = trim(batch)
        r = batch.response_len
        changes = {
            name: value[index.to(value.device)][:, :r]
            for name, value in self.__dict__.items()
            if isinstance(value, torch.Tensor)
        }
        return replace(self, batch=batch, **changes)
