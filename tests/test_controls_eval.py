"""Control retrievers in the eval harness: the agent (or a scripted policy) under ``empty``
and ``random``, reported beside the real retriever, and the CLI's --controls flag."""

from __future__ import annotations

import json

import pytest
from world import DOCS, SAMPLES

from algorithms.rollout import Sampling
from research_app import evaluate
from research_app.harness import (
    EvalResult,
    evaluate_baselines,
    evaluate_scripted,
    scripted_controls,
)
from research_app.report import controls_section, report, save_results
from research_env.data import write_corpus_jsonl, write_qa_jsonl

FAST = Sampling(greedy=True, max_turn_tokens=4, max_total_tokens=60)


@pytest.fixture
def files(tmp_path):
    write_qa_jsonl(SAMPLES, tmp_path / "dev.jsonl")
    write_corpus_jsonl(DOCS, tmp_path / "corpus.jsonl")
    return tmp_path


def env_kwargs(files):
    return {
        "dataset": str(files),
        "split": "dev",
        "corpus": str(files / "corpus.jsonl"),
        "retriever": "bm25",
        "top_k": 2,
        "max_turns": 3,
        "cache_dir": str(files / "cache"),
    }


def test_oracle_em_drops_under_the_empty_control(files):
    kwargs = env_kwargs(files)
    own = evaluate_scripted("oracle", show_progress=False, **kwargs)
    controls = scripted_controls("oracle", **kwargs)
    assert [r.name for r in controls] == ["oracle@empty", "oracle@random"]
    assert own.overall["em"] == 1.0
    # Empty: nothing to read. Random: 2 of 4 documents at random may still hold the answer.
    assert controls[0].overall["em"] == 0.0 and controls[1].overall["em"] <= 1.0
    assert [r.fingerprint["retriever"]["name"] for r in controls] == ["empty", "random"]
    section = controls_section([own, *controls])
    assert "| oracle (bm25) |" in section and "| oracle (empty) |" in section
    assert "| oracle (random) |" in section and "EM drops from 1.000 to 0.000" in section


def row(name, em, **settings):
    return EvalResult(name, settings, {"n": 2, "em": em}, {}, 0.0)


def scored(name, ems, **settings):
    """A result whose episodes are questions 0.. with these EMs."""
    episodes = [{"question_id": f"q{i}", "em": float(em)} for i, em in enumerate(ems)]
    overall = {"n": len(ems), "em": sum(ems) / len(ems)}
    return EvalResult(name, settings, overall, {}, 0.0, episodes)


def test_a_small_drop_inside_the_paired_interval_is_not_established():
    # Drops per question 1,0,0,0,0,0: mean 1/6, sd 0.4082, t(5) 2.5706 -> +-0.4284.
    own = scored("agent", [1, 1, 0, 0, 0, 0], retriever="bm25")
    empty = scored("agent@empty", [0, 1, 0, 0, 0, 0], control="empty", controls="agent")
    verdict = controls_section([own, empty])
    assert "not established" in verdict and "±0.428 on 6 questions" in verdict
    # Drops 1 on 9 of 10 questions: mean 0.9 +- 2.262 * 0.316 / sqrt(10) = 0.226.
    own = scored("agent", [1] * 10, retriever="bm25")
    empty = scored("agent@empty", [0] * 9 + [1], control="empty", controls="agent")
    verdict = controls_section([own, empty])
    assert "uses what search returns" in verdict and "±0.226" in verdict


def test_a_policy_whose_em_does_not_drop_is_flagged():
    results = [
        row("agent", 0.5, retriever="bm25"),
        row("agent@empty", 0.5, control="empty", controls="agent"),
    ]
    assert "not using search" in controls_section(results)
    assert "## Controls" in report(results)
    assert controls_section([row("agent", 0.5)]) == "" and "## Controls" not in report(
        [row("agent", 0.5)]
    )


def test_agent_under_controls_with_the_tiny_model(files, tmp_path):
    from algorithms.policy import load_policy

    policy = load_policy("tiny-random")
    results = evaluate_baselines(
        policy,
        env_kwargs(files),
        baselines=["agent"],
        controls=["empty", "random"],
        sampling=FAST,
        show_progress=False,
        limit=1,
    )
    assert [r.name for r in results] == ["agent", "agent@empty", "agent@random"]
    assert [r.settings["retriever"] for r in results] == ["bm25", "empty", "random"]
    assert results[0].fingerprint["model"] == "tiny-random"
    out = tmp_path / "out"
    save_results(results, out)
    # fingerprint.json is the agent's own run, not a control's.
    saved = json.loads((out / "fingerprint.json").read_text())
    assert saved == results[0].fingerprint and saved["retriever"]["name"] == "bm25"
    text = (out / "results.md").read_text()
    assert "## Controls" in text and "| agent (random) |" in text


def make_parser():
    import argparse

    parser = argparse.ArgumentParser(prog="research-env")
    evaluate.register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_controls_and_query_cache_for_scripted_policies(files, capsys):
    out = files / "out"
    argv = [
        "eval", "--policy", "oracle", "--dataset", str(files), "--corpus",
        str(files / "corpus.jsonl"), "--controls", "--out", str(out),
        "--retriever-cache", str(files / "q.sqlite"),
    ]  # fmt: skip
    args = make_parser().parse_args(argv)
    assert args.controls == []
    assert args.handler(args) == 0
    printed = capsys.readouterr().out
    assert "## Controls" in printed and "| oracle (empty) |" in printed
    assert json.loads((out / "fingerprint.json").read_text())["retriever"]["name"] == "bm25"
    first = json.loads((out / "results.json").read_text())[0]
    assert first["settings"]["retrieval_cache_hit_rate"] == 0.0
    # The second run replays every search from the cache.
    assert args.handler(args) == 0
    again = json.loads((out / "results.json").read_text())[0]
    assert again["settings"]["retrieval_cache_hit_rate"] == 1.0
    assert again["overall"] == first["overall"]
    only_empty = make_parser().parse_args([*argv[:7], "--controls", "empty"])
    assert only_empty.controls == ["empty"]
