"""The demo's evaluations (:class:`Stage`) and what its RL stage changed: EM overall
(:class:`Change`), and EM and searches per episode on each hop count (:class:`HopChange`),
each with the paired 95% interval over the same dev questions.

RL that raises one-hop accuracy while the policy searches less looks like progress in the
overall EM; read per hop count it is the opposite of what a search agent should learn
(RESULTS.md, "RL that teaches search"). So the report shows both, per hop count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from research_env.intervals import paired_interval


@dataclass
class Stage:
    """One evaluation of the policy on the dev slice."""

    name: str
    overall: dict[str, float]
    by_hops: dict[Any, dict[str, float]]
    transcripts: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)  # per-question EM, in dev order
    searches: list[float] = field(default_factory=list)  # per-question searches, same order
    hops: list[Any] = field(default_factory=list)  # per-question hop count (None: unknown)


@dataclass(frozen=True)
class Change:
    """The RL stage's effect: EM after minus EM before, per question (the same questions,
    so the interval is the paired one: far tighter than two separate intervals)."""

    before: str
    after: str
    mean: float
    half_width: float | None  # 95% Student t over the per-question differences
    n: int

    @property
    def beyond_noise(self) -> bool:
        return self.half_width is not None and abs(self.mean) > self.half_width

    def sentence(self) -> str:
        if self.half_width is None:
            return (
                f"EM changed by {self.mean:+.3f} from '{self.before}' (one question: no interval)."
            )
        lo, hi = self.mean - self.half_width, self.mean + self.half_width
        verdict = (
            "outside the interval: a real change on these questions"
            if self.beyond_noise
            else "inside the interval: not distinguishable from no change"
        )
        return (
            f"EM changed by {self.mean:+.3f} from '{self.before}' to '{self.after}' over the "
            f"same {self.n} dev questions (paired 95% interval {lo:+.3f} to {hi:+.3f}); "
            f"zero is {verdict}."
        )


def rl_change(before: Stage, after: Stage) -> Change:
    """:class:`Change` from ``before`` to ``after`` (both scored on the same questions)."""
    mean, half = paired_interval(before.scores, after.scores)
    return Change(before.name, after.name, mean, half, len(before.scores))


@dataclass(frozen=True)
class Paired:
    """A per-question change: means before and after, the mean change and its 95% half-width
    (None with one question)."""

    before: float
    after: float
    change: float
    half_width: float | None

    @classmethod
    def of(cls, before: Sequence[float], after: Sequence[float]) -> Paired:
        change, half = paired_interval(before, after)
        return cls(sum(before) / len(before), sum(after) / len(after), change, half)

    def cell(self) -> str:
        """``0.088 -> 0.140 (+0.052, -0.010 to +0.114)``."""
        head = f"{self.before:.3f} -> {self.after:.3f} ({self.change:+.3f}"
        if self.half_width is None:
            return head + ", one question)"
        lo, hi = self.change - self.half_width, self.change + self.half_width
        return head + f", {lo:+.3f} to {hi:+.3f})"

    @property
    def verdict(self) -> str:
        if self.half_width is None or abs(self.change) <= self.half_width:
            return "inside"
        return "up" if self.change > 0 else "down"


@dataclass(frozen=True)
class HopChange:
    """RL's change on the questions of one hop count."""

    hops: Any
    n: int
    em: Paired
    searches: Paired


def changes_by_hops(before: Any, after: Any) -> list[HopChange]:
    """Per hop count, the paired change in EM and in searches per episode from ``before`` to
    ``after`` (two :class:`research_app.demo.Stage` scored on the same questions in the same
    order, with per-question ``scores``, ``searches`` and ``hops``)."""
    for stage in (before, after):
        if not (len(stage.scores) == len(stage.searches) == len(stage.hops)):
            raise ValueError(
                f"stage {stage.name!r}: {len(stage.scores)} scores, {len(stage.searches)} "
                f"search counts and {len(stage.hops)} hop counts; they must be per question"
            )
    if list(before.hops) != list(after.hops):
        raise ValueError(
            f"stages {before.name!r} and {after.name!r} were not scored on the same questions "
            "in the same order: a paired change needs them to be"
        )
    groups: dict[Any, list[int]] = {}
    for i, h in enumerate(before.hops):
        groups.setdefault(h, []).append(i)
    out = []
    for h in sorted(groups, key=lambda k: (k is None, k)):
        idx = groups[h]
        em = Paired.of([before.scores[i] for i in idx], [after.scores[i] for i in idx])
        searches = Paired.of([before.searches[i] for i in idx], [after.searches[i] for i in idx])
        out.append(HopChange(h, len(idx), em, searches))
    return out


def hop_change_lines(changes: Sequence[HopChange], before: str, after: str) -> list[str]:
    """A markdown table of :func:`changes_by_hops` with a sentence on how to read it."""
    lines = [
        f"From '{before}' to '{after}', on the same questions of each hop count. Cells: "
        "before -> after (change, paired 95% interval over those questions); *up*/*down*: "
        "the interval excludes zero, *inside*: no change can be told from noise.",
        "",
        "| hops | questions | EM | | searches per episode | |",
        "|---|---:|---|---|---|---|",
    ]
    for c in changes:
        hops = "?" if c.hops is None else c.hops
        lines.append(
            f"| {hops} | {c.n} | {c.em.cell()} | {c.em.verdict} | {c.searches.cell()} | "
            f"{c.searches.verdict} |"
        )
    return lines
