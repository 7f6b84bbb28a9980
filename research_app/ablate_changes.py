"""An ablation variant's change from its starting model, in any per-episode metric (EM,
searches...), on all questions or on those of some hop counts, with two intervals:

- *across seeds*: one change per done seed (its mean minus the baseline's on the same
  questions), mean and Student-t 95% interval over seeds: the spread of training;
- *paired over questions*: per question, the seeds' mean minus the baseline's, mean and
  95% interval over questions: the noise of the question sample, seeds pooled.

A change is established ("up"/"down") only when it is beyond both. Per hop count, because
an overall gain can hide a policy that answers one-hop questions better while it searches
less on the questions that need searching (RESULTS.md, "RL that teaches search").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from research_env.intervals import mean_interval

HopFilter = Callable[[Any], bool]
# Name -> which questions, by their hop count (None: unknown).
HOP_GROUPS: dict[str, HopFilter] = {
    "all": lambda h: True,
    "1 hop": lambda h: h == 1,
    "2+ hops": lambda h: h is not None and h >= 2,
    "2 hops": lambda h: h == 2,
    "3 hops": lambda h: h == 3,
    "4 hops": lambda h: h == 4,
}


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def per_question(result: dict[str, Any], metric: str, keep: HopFilter) -> dict[str, float]:
    """``metric`` of each episode of an ``eval.json`` whose hop count ``keep`` accepts."""
    return {
        str(e["question_id"]): float(e[metric])
        for e in result.get("episodes", [])
        if e.get(metric) is not None and keep(e.get("hops"))
    }


def change(base: dict[str, float], per_seed: Sequence[dict[str, float]]) -> dict[str, Any] | None:
    """The change from ``base`` to each seed's values on the questions all of them have;
    None when there are none."""
    questions = [q for q in base if all(q in s for s in per_seed)]
    if not per_seed or not questions:
        return None
    seed_changes = [sum(s[q] - base[q] for q in questions) / len(questions) for s in per_seed]
    mean, half = mean_interval(seed_changes)
    diffs = [sum(s[q] for s in per_seed) / len(per_seed) - base[q] for q in questions]
    paired_mean, paired_half = mean_interval(diffs)
    return {
        "questions": len(questions),
        "seeds": len(per_seed),
        "per_seed": seed_changes,
        "across_seeds": {"mean": mean, "ci95": half},
        "paired": {"mean": paired_mean, "ci95": paired_half},
        "verdict": verdict(mean, half),
        "both": both_verdict(mean, half, paired_mean, paired_half),
    }


def verdict(mean: float, half: float | None) -> str:
    """ "gain"/"drop" when the across-seed interval excludes 0, else "inside" ("one seed"
    without an interval)."""
    if half is None:
        return "one seed"
    if mean - half > 0:
        return "gain"
    if mean + half < 0:
        return "drop"
    return "inside"


def both_verdict(mean: float, half: float | None, paired: float, paired_half: float | None) -> str:
    """ "up"/"down" when both intervals exclude 0 on the same side, else "inside"."""
    if half is None or paired_half is None:
        return "inside"
    if mean - half > 0 and paired - paired_half > 0:
        return "up"
    if mean + half < 0 and paired + paired_half < 0:
        return "down"
    return "inside"


def changes(
    out: Path,
    names: Sequence[str],
    seeds: int,
    metric: str = "em",
    keep: HopFilter = HOP_GROUPS["all"],
) -> dict[str, Any]:
    """Each variant's :func:`change` in ``metric`` on the questions ``keep`` accepts, read
    from ``out/baseline/eval.json`` and ``out/<name>/seed-<k>/eval.json`` (done runs only)."""
    baseline = _load(out / "baseline" / "eval.json")
    if baseline is None:
        return {}
    base = per_question(baseline, metric, keep)
    found: dict[str, Any] = {}
    for name in names:
        per_seed = []
        for seed in range(seeds):
            run = out / name / f"seed-{seed}"
            result = _load(run / "eval.json") if (run / "done.json").exists() else None
            if result is not None:
                per_seed.append(per_question(result, metric, keep))
        c = change(base, per_seed)
        if c is not None:
            found[name] = c
    return found


def hop_change_table(out: Path, names: Sequence[str], seeds: int) -> dict[str, Any]:
    """EM and searches changes of every variant per hop group: ``{group: {metric: ...}}``."""
    return {
        group: {metric: changes(out, names, seeds, metric, keep) for metric in ("em", "searches")}
        for group, keep in HOP_GROUPS.items()
    }


def hop_change_lines(table: dict[str, Any]) -> list[str]:
    """Markdown for :func:`hop_change_table`."""
    rows = [
        (group, name, by_metric["em"][name], by_metric["searches"].get(name))
        for group, by_metric in table.items()
        for name in by_metric["em"]
    ]
    if not rows:
        return []
    lines = ["", "## Change from the starting model, per hop count", "",
             "Each cell: the change across seeds (mean ± 95% interval over seeds) / paired over "
             "the questions (mean ± 95% interval over questions). *up*/*down*: both intervals "
             "exclude zero on that side; *inside*: not established.", "",
             "| questions | variant | n | EM change | | searches change | |",
             "|---|---|---:|---|---|---|---|"]  # fmt: skip
    for group, name, em, searches in rows:
        s_cells = f"{_pair(searches)} | {searches['both']}" if searches else " | "
        lines.append(f"| {group} | {name} | {em['questions']} | {_pair(em)} | {em['both']} | "
                     f"{s_cells} |")  # fmt: skip
    return lines


def _pair(c: dict[str, Any]) -> str:
    return f"{signed(c['across_seeds'])} / {signed(c['paired'])}"


def signed(stat: dict[str, Any]) -> str:
    if stat.get("ci95") is None:
        return f"{stat['mean']:+.3f}"
    return f"{stat['mean']:+.3f} ± {stat['ci95']:.3f}"
