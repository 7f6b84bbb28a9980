"""The 95% intervals every report prints, in one place.

- a **rate** measured on ``n`` questions (EM, format validity): the Wilson score interval,
  which, unlike the normal approximation, is not ``± 0`` at a rate of 0 or 1;
- a **mean across seeds** (or any small sample of numbers): Student t over ``n - 1``
  degrees of freedom;
- a **change on the same questions** (before vs after training, agent vs control
  retriever): Student t over the per-question differences, far tighter than two separate
  intervals because each question's difficulty cancels.

Student t quantiles come from scipy (imported when first needed, so ``import research_env``
stays light), the normal one from the standard library (so a Wilson interval needs nothing
else). A half-width of ``None`` means one value: no interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

LEVEL = 0.95


def _quantile(level: float, df: float | None = None) -> float:
    """The two-sided ``level`` quantile: normal when ``df`` is None, else Student t."""
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    q = 0.5 + level / 2
    if df is None:
        return NormalDist().inv_cdf(q)
    from scipy import stats

    return float(stats.t.ppf(q, df))


def wilson(successes: float, n: float, level: float = LEVEL) -> tuple[float, float]:
    """``(low, high)`` of the Wilson score interval of ``successes`` out of ``n``."""
    if n <= 0:
        raise ValueError(f"a rate needs n > 0 questions, got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n={n}, got {successes}")
    z = _quantile(level)
    p, z2 = successes / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # Exactly 0 (1) at a rate of 0 (1): centre - half cancels there only up to rounding.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    return low, 1.0 if successes == n else min(1.0, centre + half)


def rate_half_width(rate: float, n: float, level: float = LEVEL) -> float:
    """Half the length of the Wilson interval of ``rate`` measured on ``n`` questions (NaN
    for none): how far one run's EM may move by the luck of the draw."""
    if not n:
        return float("nan")
    low, high = wilson(rate * n, n, level)
    return (high - low) / 2


def mean_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float | None]:
    """Mean of ``values`` and the half-width of its Student-t interval (None for one value)."""
    n = len(values)
    if n == 0:
        raise ValueError("a mean needs at least one value")
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, _quantile(level, n - 1) * sd / math.sqrt(n)


def paired_interval(
    before: Sequence[float], after: Sequence[float], level: float = LEVEL
) -> tuple[float, float | None]:
    """Mean change ``after - before`` over the same items (in the same order) and the
    half-width of its Student-t interval over the per-item differences."""
    if len(before) != len(after) or not before:
        raise ValueError(
            f"a paired change needs the same, non-empty, list of questions; got "
            f"{len(before)} and {len(after)} scores"
        )
    return mean_interval([b - a for a, b in zip(before, after, strict=True)], level)


def plus_minus(mean: float, half: float | None) -> str:
    """``"0.230 ± 0.082"``; one value (no interval) prints as ``"0.230 (one value)"``."""
    return f"{mean:.3f} (one value)" if half is None else f"{mean:.3f} ± {half:.3f}"
