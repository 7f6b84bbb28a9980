"""research_env.metrics: the one home of episode means and markdown tables, checked by hand."""

import pytest

from research_env.metrics import markdown_table, mean_over, summarize, summarize_by


def test_mean_over_skips_missing_and_none_values_and_absent_keys():
    episodes = [{"em": 1.0, "f1": None}, {"em": 0.0, "f1": 0.5}, {"f1": 1.0}]
    assert mean_over(episodes, ["em", "f1", "judge"]) == {"em": 0.5, "f1": 0.75}


def test_summarize_counts_questions_and_adds_pass_at_k_only_for_repeated_questions():
    once = [{"question_id": q, "em": em, "reward": em} for q, em in (("a", 1.0), ("b", 0.0))]
    assert summarize(once) == {"em": 0.5, "reward": 0.5, "n": 2.0}
    # Episodes without a question id count one question each.
    assert summarize([{"em": 1.0}, {"em": 1.0}])["n"] == 2.0
    twice = [*once, {"question_id": "a", "em": 0.0}, {"question_id": "b", "em": 0.0}]
    out = summarize(twice, ["em"])
    assert out["n"] == 2.0 and out["pass@1"] == pytest.approx(0.25) and out["pass@2"] == 0.5


def test_summarize_by_groups_in_order_and_leaves_out_episodes_without_the_key():
    episodes = [{"hops": 2, "em": 1.0}, {"hops": 1, "em": 0.0}, {"hops": 2, "em": 0.0}, {}]
    groups = summarize_by(episodes, "hops", ["em"])
    assert list(groups) == [1, 2]
    assert groups[2] == {"em": 0.5, "n": 2.0}


def test_markdown_table_formats_counts_rates_times_and_text():
    rows = {"agent": {"n": 30.0, "em": 0.25, "seconds": 12.345, "response_tokens": 80.04}}
    table = markdown_table(rows, ["n", "em", "judge", "seconds", "response_tokens"])
    assert table.splitlines() == [
        "| | n | em | judge | seconds | response_tokens |",
        "|---|---:|---:|---:|---:|---:|",
        "| agent | 30 | 0.250 |  | 12.3 | 80.0 |",
    ]
    settings = markdown_table({"agent": {"model": "tiny", "top_k": "3"}}, ["model", "top_k"],
                              numeric=False)  # fmt: skip
    assert settings.splitlines()[1:] == ["|---|---|---|", "| agent | tiny | 3 |"]
