"""Dynamic sampling (after DAPO): draw more questions until a step holds enough groups
that can teach something.

A GRPO group whose episodes all scored the same has zero advantage everywhere: it costs
a rollout and teaches nothing. Where the policy rarely succeeds (multi-hop questions
early in training) most groups are like that, or differ only by format credit, and the
few that remain decide what the step teaches (benchmarks/RESULTS.md, "RL that teaches
search"). With ``rollout.dynamic_sampling`` on, a step plays its ``questions_per_step``
questions, keeps the *informative* groups, and while it has fewer than
``questions_per_step`` of them draws another round of fresh questions, up to
``rollout.max_sampling_rounds`` rounds in all; it then updates on at most
``questions_per_step`` informative groups (all of them when the rounds ran out first).

What counts as informative (:func:`informative_groups`):

- ``reward``: the episodes' returns differ (not a flat group: the rule
  ``trainer.filter_zero_variance_groups`` applies after the fact);
- ``answer``: the episodes' answers differ in correctness (EM), i.e. the group holds at
  least one right and one wrong answer: DAPO's accuracy filter. A group whose rewards
  differ only by format or evidence credit is dropped.

A round's questions are a seeded draw from the split that avoids the questions already
played in this step (:func:`extra_questions`), a pure function of (seed, step, round): a
resumed run draws what the uninterrupted run would have, and the regular schedule of
later steps is untouched. The extra episodes cost rollout time, not update time; the
step's metrics describe every episode drawn (the policy's behaviour), and
``sampling/*`` counts the rounds, the groups drawn and the groups kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Literal

import numpy as np

from algorithms.buffer import Trajectory, flat_groups

Criterion = Literal["reward", "answer"]


def informative_groups(trajectories: Sequence[Trajectory], criterion: Criterion) -> list[int]:
    """The groups (in first-seen order) whose episodes differ by ``criterion``."""
    order = list(dict.fromkeys(t.group for t in trajectories))
    if criterion == "reward":
        flat = flat_groups(trajectories)
        return [g for g in order if g not in flat]
    correct: dict[int, set[bool]] = {}
    for t in trajectories:
        correct.setdefault(t.group, set()).add(float(t.info.get("em") or 0.0) >= 1.0)
    return [g for g in order if len(correct[g]) == 2]


def extra_questions(
    seed: int,
    step: int,
    round_: int,
    n_questions: int,
    count: int,
    played: Sequence[int],
    *,
    rank: int = 0,
) -> list[int]:
    """``count`` question indices for extra round ``round_`` (>= 1) of ``step`` on this
    ``rank``: a draw without replacement from the ``n_questions`` of the split, avoiding
    ``played`` while enough others remain (a small split may repeat a question, never
    within the draw)."""
    rng = np.random.default_rng([seed, step, round_, rank, 0x5EED])
    seen = set(played)
    fresh = [i for i in range(n_questions) if i not in seen]
    pool = fresh if len(fresh) >= count else list(range(n_questions))
    picked = rng.choice(len(pool), size=min(count, len(pool)), replace=False)
    return [pool[int(i)] for i in picked]


def fill_step(
    first: list[Trajectory],
    draw: Callable[[int, list[int]], tuple[list[int], list[Trajectory]]],
    *,
    questions: list[int],
    want: int,
    criterion: Criterion,
    max_rounds: int,
) -> tuple[list[Trajectory], list[Trajectory], dict[str, float]]:
    """Keep drawing rounds until ``want`` informative groups are held or ``max_rounds``
    rounds (the first included) are played.

    ``first`` is round 0's episodes on ``questions``; ``draw(round, played)`` plays round
    ``round`` and returns (its questions, its episodes, groups numbered from 0).
    Returns (the episodes to learn from, every episode drawn, the ``sampling/*``
    metrics). Groups are renumbered so that every group of the step has its own id, in
    the order drawn."""
    kept: list[Trajectory] = []
    drawn: list[Trajectory] = []
    played = list(questions)
    n_groups = n_kept = rounds = 0
    episodes = first
    while True:
        rounds += 1
        offset = n_groups
        renumbered = [replace(t, group=t.group + offset) for t in episodes]
        n_groups += len({t.group for t in episodes})
        drawn += renumbered
        for g in informative_groups(renumbered, criterion):
            if n_kept < want:
                kept += [t for t in renumbered if t.group == g]
                n_kept += 1
        if n_kept >= want or rounds >= max_rounds:
            break
        asked, episodes = draw(rounds, played)
        played += asked
    stats = {
        "sampling/rounds": float(rounds),
        "sampling/drawn_groups": float(n_groups),
        "sampling/kept_groups": float(n_kept),
        "sampling/drawn_episodes": float(len(drawn)),
        "sampling/short_of_groups": float(want - n_kept),
    }
    return kept, drawn, stats
