"""Aggregate finished episodes into the numbers papers report, and print them as tables.

The one home of episode metrics: the evaluation harness, the demo's report and the
trainer's per-step episode metrics (all above this package) average with :func:`mean_over`. An episode is a
mapping: the env's final ``info`` (``em``, ``f1``, ``format_valid``, ``searches``,
``supporting_recall``, ``question_id``, ``hops``, ``type``...) plus what the caller adds
(``reward``, token counts, a judge's verdict). Torch-free.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

METRICS = ("em", "f1", "format_valid", "searches", "supporting_recall", "reward")
# Columns printed with one decimal (counts of tokens, times); ``n`` is whole; rates get three.
ONE_DECIMAL = ("response_tokens", "seconds")


def mean_over(episodes: Iterable[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, float]:
    """The mean of each of ``keys`` over the episodes that have it (missing or None values
    are skipped, not zeroed); a key no episode has is left out."""
    episodes = list(episodes)
    out: dict[str, float] = {}
    for key in keys:
        values = [float(e[key]) for e in episodes if e.get(key) is not None]
        if values:
            out[key] = sum(values) / len(values)
    return out


def summarize(
    episodes: Iterable[Mapping[str, Any]], keys: Sequence[str] = METRICS
) -> dict[str, float]:
    """:func:`mean_over` the ``keys`` (default :data:`METRICS`), plus ``n``, the number of
    questions (distinct ``question_id``; an episode without one counts as its own), and,
    when every question was played more than once, ``pass@k`` on exact match."""
    episodes = list(episodes)
    out = mean_over(episodes, keys)
    by_question: dict[Any, list[bool]] = defaultdict(list)
    for i, e in enumerate(episodes):
        question = e.get("question_id", ("episode", i))
        by_question[question].append(float(e.get("em") or 0.0) >= 1.0)
    out["n"] = float(len(by_question))
    samples = min((len(g) for g in by_question.values()), default=1)
    if samples > 1:
        out |= pass_at_k_values(list(by_question.values()), reported_ks(samples))
    return out


def summarize_by(
    episodes: Iterable[Mapping[str, Any]], key: str, keys: Sequence[str] = METRICS
) -> dict[Any, dict[str, float]]:
    """:func:`summarize` per value of ``key`` (e.g. ``hops`` or ``type``), in order of the
    values; episodes without ``key`` are left out."""
    groups: dict[Any, list[Mapping[str, Any]]] = defaultdict(list)
    for e in episodes:
        if e.get(key) is not None:
            groups[e[key]].append(e)
    return {
        value: summarize(members, keys)
        for value, members in sorted(groups.items(), key=lambda kv: str(kv[0]))
    }


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al., 2021) from ``n`` samples of which ``c`` are correct:
    the chance that at least one of ``k`` samples drawn without replacement is correct,
    ``1 - C(n - c, k) / C(n, k)``."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def pass_at_k_values(correct: Sequence[Sequence[bool]], ks: Sequence[int]) -> dict[str, float]:
    """Mean pass@k over questions, for each ``k`` in ``ks``; ``correct[q]`` lists whether
    each sample of question ``q`` was right."""
    out = {}
    for k in ks:
        scores = [pass_at_k(len(c), sum(c), k) for c in correct]
        out[f"pass@{k}"] = sum(scores) / len(scores) if scores else 0.0
    return out


def reported_ks(samples: int) -> list[int]:
    """1, the powers of two below ``samples``, and ``samples`` itself."""
    ks = {1, samples}
    k = 2
    while k < samples:
        ks.add(k)
        k *= 2
    return sorted(ks)


def markdown_table(
    rows: Mapping[str, Mapping[str, Any]], columns: Sequence[str], *, numeric: bool = True
) -> str:
    """A markdown table with one row per name and the given columns, right-aligned when
    ``numeric``. Numbers: ``n`` whole, :data:`ONE_DECIMAL` columns to one decimal, the rest
    to three; text as it is; a missing value leaves its cell empty."""
    rule = "---:|" if numeric else "---|"
    lines = ["| | " + " | ".join(columns) + " |", "|---|" + rule * len(columns)]
    for name, values in rows.items():
        cells = [_cell(column, values.get(column)) for column in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if column == "n":
        return str(int(value))
    if column in ONE_DECIMAL:
        return f"{value:.1f}"
    return f"{value:.3f}"
