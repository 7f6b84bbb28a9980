"""The 8-bit copy in evaluation: its precision in the fingerprint, ``compare``'s refusal,
and the paired int8-vs-float32 quality report."""

import dataclasses
import json

import pytest
from world import SAMPLES, KeywordRetriever

from algorithms.policy import load_policy
from benchmarks.int8_quality import DTYPES, markdown, paired_report
from research_env.intervals import wilson

# Four questions: the tiny world's two, and each again under another id.
FOUR = [*SAMPLES, *(dataclasses.replace(s, id=f"{s.id}-again") for s in SAMPLES)]


@pytest.fixture(scope="module")
def policy():
    return load_policy("tiny-random")


def test_int8_and_float32_evaluations_are_paired_on_the_same_questions(policy):
    env = {"dataset": FOUR, "retriever": KeywordRetriever(), "top_k": 2, "max_turns": 2}
    report = paired_report(policy, env, 4, max_turn_tokens=6, max_total_tokens=120)
    assert report["n"] == 4 and set(report["runs"]) == set(DTYPES)
    for metric, (change, half) in report["change"].items():
        # The paired mean change is the difference of the two runs' means.
        runs = report["runs"]
        assert change == pytest.approx(runs["int8"][metric] - runs["float32"][metric])
        assert half is not None and half >= 0
    rate, low, high = report["identical"]
    same = round(rate * 4)
    assert rate == same / 4 and (low, high) == pytest.approx(wilson(same, 4))
    table = markdown(report)
    assert "| em |" in table and "| identical episodes |" in table
    assert "4 questions, greedy" in table


def test_compare_refuses_an_int8_run_beside_a_float32_run(tmp_path, capsys):
    """``eval --rollout-dtype int8`` records int8 as the decoding precision in the run's
    fingerprint, and ``compare`` refuses to put it beside a float32 run, saying why."""
    from research_app.cli import main
    from research_env.fingerprint import read_fingerprint

    cheap = ["eval", "--model", "tiny-random", "--baselines", "direct", "--limit", "1",
             "--max-turn-tokens", "4", "--max-total-tokens", "40"]  # fmt: skip
    for dtype in ("float32", "int8"):
        assert main([*cheap, "--rollout-dtype", dtype, "--out", str(tmp_path / dtype)]) == 0
    settings = json.loads((tmp_path / "int8" / "results.json").read_text())[0]["settings"]
    assert settings["rollout_dtype"] == settings["decode_dtype"] == "int8"
    assert read_fingerprint(tmp_path / "int8")["decoding"]["decode_dtype"] == "int8"
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "float32"), str(tmp_path / "int8")]) == 1
    err = capsys.readouterr().err
    assert "decoding.decode_dtype: 'float32' vs 'int8'" in err
    assert "decoded in different precisions (float32, int8)" in err
    assert "benchmarks.int8_quality" in err
