"""`research-env ablate` end to end with the tiny random model: the runs, the table and
the curves; a second call retrains nothing."""

from __future__ import annotations

import json

import pytest

from research_env.cli import main

TINY = ["--model", "tiny-random", "--seeds", "2", "--budget-episodes", "2",
        "--eval-questions", "4",
        "--set", "rollout.questions_per_step=1", "--set", "rollout.group_size=2",
        "--set", "rollout.max_turn_tokens=8", "--set", "rollout.max_total_tokens=48",
        "--set", "model.device=cpu", "--set", "trainer.micro_batch_size=2"]  # fmt: skip


def test_ablate_end_to_end_then_skips_what_is_done(tmp_path, monkeypatch):
    import benchmarks.eval.ablate as ablate

    out = tmp_path / "abl"
    args = ["ablate", "--algos", "grpo", "reinforce", "--out", str(out), *TINY]
    assert main(args) == 0

    for variant in ("grpo", "reinforce"):
        for seed in (0, 1):
            run = out / variant / f"seed-{seed}"
            done = json.loads((run / "done.json").read_text())
            assert (done["algo"], done["seed"], done["steps"], done["episodes"]) == (
                variant, seed, 1, 2)  # fmt: skip
            assert (run / "eval.json").exists() and (run / "metrics.jsonl").exists()
            assert not (run / "checkpoints").exists()  # no optimizer state left behind
            record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
            for key in ("episode/think_chars", "episode/supporting_recall",
                        "health/flat_group_fraction", "train/entropy"):  # fmt: skip
                assert key in record, key
    subset = json.loads((out / "subset.json").read_text())
    assert len(subset["indices"]) == 4 and subset["seed"] == 0

    table = json.loads((out / "table.json").read_text())
    assert list(table["rows"]) == ["baseline", "grpo", "reinforce"]
    assert table["missing_runs"] == []
    grpo = table["rows"]["grpo"]
    assert grpo["seeds"] == [0, 1]
    groups = grpo["groups"]
    assert "all" in groups and any(g.startswith("hops=") for g in groups)
    for key in ("em", "f1", "searches", "supporting_recall"):
        cell = groups["all"][key]
        assert len(cell["values"]) == 2 and cell["ci95"] is not None
    assert table["baseline_em_one_run_ci95"] > 0

    md = (out / "table.md").read_text()
    header = "| | seeds | EM | F1 | searches | supporting recall | one-run EM ± |"
    assert md.count(header) == len(groups)  # one table per group: all, then per hop count
    assert "## All questions" in md and "95% interval half-width" in md
    for row in ("| baseline | 1 |", "| grpo | 2 |", "| reinforce | 2 |"):
        assert row in md
    png = (out / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000

    # A second call: everything is done, so nothing trains or re-evaluates.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("**/done.json")}
    assert len(stamps) == 5  # four runs and the baseline

    def no_training(*a, **k):
        raise AssertionError("a done run was trained again")

    monkeypatch.setattr(ablate, "train_run", no_training)
    monkeypatch.setattr(ablate.Evaluator, "evaluate", no_training)
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("**/done.json")} == stamps

    # Other settings in the same folder are refused, not mixed into the table.
    with pytest.raises(ValueError, match="other settings"):
        ablate.run(ablate_args(["--algos", "grpo", "--out", str(out), *TINY,
                                "--set", "optim.lr=1e-3"]))  # fmt: skip
    with pytest.raises(ValueError, match="another dev subset"):
        ablate.run(ablate_args(["--algos", "grpo", "--out", str(out),
                                *TINY, "--eval-seed", "1"]))  # fmt: skip


def ablate_args(argv):
    from research_env.cli import build_parser

    return build_parser(["ablate", *argv]).parse_args(["ablate", *argv])


def test_variants_parse_names_algorithms_and_overrides():
    from benchmarks.eval.ablate import parse_variant, variants_of

    v = parse_variant("em-no-kl:algo=ppo,env.reward=em,optim.betas=[0.9,0.99],ppo.kl_coef=0")
    assert (v.name, v.algo) == ("em-no-kl", "ppo")
    assert v.overrides == {"env.reward": "em", "optim.betas": [0.9, 0.99], "ppo.kl_coef": 0}
    assert parse_variant("plain:").algo == "grpo"
    with pytest.raises(ValueError, match="NAME:key=value"):
        parse_variant("no colon")
    names = [v.name for v in variants_of(ablate_args(["--model", "m", "--out", "o"]))]
    assert names == ["grpo", "ppo", "reinforce"]
    only = ablate_args(["--model", "m", "--out", "o", "--variant", "x:grpo.kl_coef=0"])
    assert [v.name for v in variants_of(only)] == ["x"]
    with pytest.raises(ValueError, match="distinct"):
        variants_of(ablate_args(["--model", "m", "--out", "o", "--algos", "grpo",
                                 "--variant", "grpo:grpo.kl_coef=0"]))  # fmt: skip


def test_interval_arithmetic():
    from benchmarks.eval.ablate_report import binomial_half_width, mean_ci95

    mean, half = mean_ci95([0.2, 0.4])
    assert mean == pytest.approx(0.3)
    assert half == pytest.approx(12.706 * 0.1414213 / 1.4142136, rel=1e-4)
    assert mean_ci95([0.5]) == (0.5, None)
    assert binomial_half_width(0.5, 200) == pytest.approx(0.0686, abs=1e-3)
    assert 0 < binomial_half_width(0.0, 200) < 0.02


def test_a_wall_time_budget_stops_after_the_step_that_spends_it(tmp_path):
    out = tmp_path / "timed"
    argv = ["ablate", "--algos", "grpo", "--out", str(out), *TINY]
    argv[argv.index("--budget-episodes") : argv.index("--budget-episodes") + 2] = [
        "--budget-minutes", "0.0001"]  # fmt: skip
    argv[argv.index("--seeds") + 1] = "1"
    assert main(argv) == 0
    done = json.loads((out / "grpo" / "seed-0" / "done.json").read_text())
    assert done["steps"] == 1 and done["fingerprint"]["budget_minutes"] == 0.0001
    table = json.loads((out / "table.json").read_text())
    assert table["rows"]["grpo"]["seeds"] == [0]
