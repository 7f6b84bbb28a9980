"""The search-drift measurements (benchmarks/search_drift.py) against numbers by hand."""

from __future__ import annotations

import pytest

from benchmarks.search_drift import advantage_shares, group_advantages, summarize


def row(group, reward, *, em=0.0, f1=0.0, searches=1, cut=False, tokens=10):
    return {"group": group, "reward": reward, "em": em, "f1": f1, "valid": reward > 0,
            "searches": searches, "cut": cut, "tokens": tokens}  # fmt: skip


def test_group_advantages_use_the_unbiased_std():
    # rewards 1, 0, 0, 0: mean 0.25, unbiased std sqrt((0.5625 + 3 * 0.0625) / 3) = 0.5
    assert group_advantages([1.0, 0.0, 0.0, 0.0]) == pytest.approx(
        [1.5, -0.5, -0.5, -0.5], abs=1e-5
    )
    assert group_advantages([0.1, 0.1]) == [0.0, 0.0]


def test_summarize_tells_flat_from_format_only_from_answer_groups():
    rows = [
        # group a: flat (every episode got format credit only)
        row("a", 0.1), row("a", 0.1),
        # group b: spread from format credit alone (one malformed, cut by the budget)
        row("b", 0.1, searches=1), row("b", 0.0, searches=3, cut=True, tokens=30),
        # group c: one correct answer
        row("c", 1.0, em=1.0, f1=1.0, searches=2), row("c", 0.1, searches=2),
    ]  # fmt: skip
    s = summarize(rows)
    assert (s["groups"], s["flat_groups"], s["format_only_groups"]) == (3, 1 / 3, 1 / 3)
    assert s["cut"] == pytest.approx(1 / 6) and s["em"] == pytest.approx(1 / 6)
    # Pairs: advantages +-0.7071 in b and c, 0 in a. Mass 4 x 0.7071 over 3 groups.
    assert s["abs_advantage_per_group"] == pytest.approx(4 * 0.70711 / 3, rel=1e-4)
    tokens = (10 + 30 + 10 + 10) * 0.70711 / 3
    assert s["abs_advantage_tokens_per_group"] == pytest.approx(tokens, rel=1e-4)
    three = s["by_searches"]["3"]
    assert three["episodes"] == 1 and three["cut"] == 1.0
    assert three["advantage"] == pytest.approx(-0.70711, abs=1e-4)
    assert s["by_searches"]["2"]["advantage"] == pytest.approx(0.0, abs=1e-9)


def test_advantage_shares_weight_each_hop_count_by_the_split_mix():
    per_hop = {
        1: {"abs_advantage_per_group": 2.0, "abs_advantage_tokens_per_group": 20.0},
        2: {"abs_advantage_per_group": 1.0, "abs_advantage_tokens_per_group": 40.0},
    }
    shares = advantage_shares(per_hop, {1: 0.25, 2: 0.75})
    # per group: 0.25 x 2 = 0.5 against 0.75 x 1 = 0.75 -> 0.4 / 0.6
    assert shares[1]["share_per_group"] == pytest.approx(0.4)
    # token-weighted: 5 against 30 -> 1/7, 6/7
    assert shares[2]["share_tokens_per_group"] == pytest.approx(6 / 7)
