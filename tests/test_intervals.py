"""research_env.intervals, the one source of the 95% intervals every report prints, checked
against numbers worked by hand (z = 1.959964; Student t_0.975 with 3 degrees of freedom =
3.182446, from the table), and the commands that print them."""

from __future__ import annotations

import json
import math

import pytest

from research_env.intervals import (
    mean_interval,
    paired_interval,
    plus_minus,
    rate_half_width,
    wilson,
)


def test_wilson_is_not_zero_at_a_rate_of_zero():
    # 0 of 10: low 0, high z^2 / (n + z^2) = 3.841459 / 13.841459 = 0.277533.
    low, high = wilson(0, 10)
    assert low == 0.0
    assert high == pytest.approx(0.277533, abs=1e-6)
    assert rate_half_width(0.0, 10) == pytest.approx(0.138766, abs=1e-6)


def test_wilson_half_width_at_23_of_100():
    # z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/(4 n^2)) = 1.887457 * 0.0432092 = 0.081556.
    assert rate_half_width(0.23, 100) == pytest.approx(0.081556, abs=1e-6)
    low, high = wilson(23, 100)
    assert (low + high) / 2 == pytest.approx((0.23 + 0.019207) / 1.038415, abs=1e-6)
    assert math.isnan(rate_half_width(0.5, 0))
    with pytest.raises(ValueError, match="successes must be between 0 and n=10"):
        wilson(11, 10)


def test_student_t_across_seeds():
    # [1, 2, 3, 4]: mean 2.5, sd sqrt(5/3) = 1.290994, se 0.645497, x 3.182446 = 2.054260.
    mean, half = mean_interval([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert half == pytest.approx(2.054260, abs=1e-6)
    assert mean_interval([0.5]) == (0.5, None)
    assert plus_minus(0.5, None) == "0.500 (one value)"
    assert plus_minus(2.5, half) == "2.500 ± 2.054"


def test_paired_change_over_questions():
    # differences [1, 0, 0, 0]: mean 0.25, sd 0.5, se 0.25, x 3.182446 = 0.795612.
    mean, half = paired_interval([0, 1, 0, 1], [1, 1, 0, 1])
    assert mean == 0.25
    assert half == pytest.approx(0.795612, abs=1e-6)
    with pytest.raises(ValueError, match="same, non-empty, list of questions; got 2 and 3"):
        paired_interval([0, 1], [0, 1, 1])


def test_structured_ablation_prints_no_interval_for_one_seed():
    pytest.importorskip("stable_baselines3")
    from benchmarks.structured_ablation import interval

    assert interval([0.25]) == "0.250 (one value)"  # was "0.250 ± 0.000"
    assert interval([1.0, 2.0, 3.0, 4.0]) == "2.500 ± 2.054"


def test_eval_report_and_compare_print_wilson_intervals(tmp_path, capsys):
    """``eval``'s table has an EM interval column and ``compare`` prints EM ± its interval:
    10 questions at EM 0 read ± 0.139, not the normal approximation's ± 0.000."""
    from research_app.cli import main

    out = tmp_path / "oracle"
    assert main(["eval", "--policy", "random", "--limit", "10", "--out", str(out)]) == 0
    report = (out / "results.md").read_text()
    header = next(line for line in report.splitlines() if "| em |" in line)
    assert "| em | em_ci95 |" in header
    rows = {r["name"]: r["overall"] for r in json.loads((out / "results.json").read_text())}
    em = rows["random"]["em"]
    capsys.readouterr()
    assert main(["compare", str(out), str(out)]) == 0
    table = capsys.readouterr().out
    assert f"| {em:.3f} ± {rate_half_width(em, 10):.3f} |" in table
