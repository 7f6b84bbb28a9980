"""`research-env ablate` end to end with the tiny random model: the runs, the table and
the curves; a second call retrains nothing."""

from __future__ import annotations

import json

import pytest

from research_app.cli import main

TINY = ["--model", "tiny-random", "--seeds", "2", "--budget-episodes", "2",
        "--eval-questions", "4",
        "--set", "rollout.questions_per_step=1", "--set", "rollout.group_size=2",
        "--set", "rollout.max_turn_tokens=8", "--set", "rollout.max_total_tokens=48",
        "--set", "model.device=cpu", "--set", "trainer.micro_batch_size=2"]  # fmt: skip


def test_ablate_end_to_end_then_skips_what_is_done(tmp_path, monkeypatch):
    import research_app.ablate as ablate

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
    from research_app.cli import build_parser

    return build_parser(["ablate", *argv]).parse_args(["ablate", *argv])


def test_variants_parse_names_algorithms_and_overrides():
    from research_app.ablate import parse_variant, variants_of

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


def _eval_json(path, ems):
    path.parent.mkdir(parents=True, exist_ok=True)
    episodes = [{"question_id": f"q{i}", "hops": 2, "em": em} for i, em in enumerate(ems)]
    overall = {"em": sum(ems) / len(ems), "n": len(ems)}
    path.write_text(json.dumps({"overall": overall, "episodes": episodes}))


def test_em_change_across_seeds_and_paired_over_questions_by_hand(tmp_path):
    from research_app.ablate import Variant
    from research_app.ablate_report import write_table

    out = tmp_path / "abl"
    _eval_json(out / "baseline" / "eval.json", [1, 0, 0, 1])
    for seed, ems in ((0, [1, 1, 0, 1]), (1, [0, 1, 0, 1])):
        _eval_json(out / "grpo" / f"seed-{seed}" / "eval.json", ems)
        (out / "grpo" / f"seed-{seed}" / "done.json").write_text("{}")
    _eval_json(out / "ppo" / "seed-0" / "eval.json", [1, 1, 1, 1])
    (out / "ppo" / "seed-0" / "done.json").write_text("{}")
    (out / "subset.json").write_text(json.dumps({"indices": [0, 1, 2, 3]}))

    table = write_table(out, [Variant("grpo", "grpo"), Variant("ppo", "ppo")], 2,
                        {"questions": 4, "split": "dev", "dataset": "d", "seed": 0})  # fmt: skip
    grpo = table["em_change"]["grpo"]
    # Seed changes: (1+1+0+1)/4 - 2/4 = +0.25 and (0+1+0+1)/4 - 2/4 = 0.
    assert grpo["per_seed"] == [0.25, 0.0]
    assert grpo["across_seeds"]["mean"] == pytest.approx(0.125)
    assert grpo["across_seeds"]["ci95"] == pytest.approx(12.706 * 0.1767767 / 2**0.5, rel=1e-4)
    # Per question, seeds' mean minus baseline: -0.5, +1, 0, 0 (sd 0.62915, t(3) = 3.182446).
    assert grpo["paired"]["mean"] == pytest.approx(0.125)
    assert grpo["paired"]["ci95"] == pytest.approx(3.182446 * 0.6291529 / 2, rel=1e-5)
    assert grpo["verdict"] == "inside"
    ppo = table["em_change"]["ppo"]
    assert ppo["per_seed"] == [0.5] and ppo["verdict"] == "one seed"
    md = (out / "table.md").read_text()
    assert "## EM change from the starting model" in md
    assert "| grpo | 2 | +0.125 ± 1.588 | +0.125 ± 1.001 | inside the across-seed" in md
    assert table["missing_runs"] == ["ppo/seed-1"]


def _episodes_json(path, rows):
    """``rows``: (hops, em, searches) per question."""
    path.parent.mkdir(parents=True, exist_ok=True)
    episodes = [{"question_id": f"q{i}", "hops": h, "em": em, "searches": n}
                for i, (h, em, n) in enumerate(rows)]  # fmt: skip
    path.write_text(json.dumps({"overall": {"n": len(rows)}, "episodes": episodes}))


def test_changes_per_hop_count_in_em_and_searches_by_hand(tmp_path):
    """A variant that gains EM on one-hop questions while searching less on multi-hop ones
    shows both, per hop group, with both intervals."""
    from research_app.ablate import Variant
    from research_app.ablate_report import write_table

    out = tmp_path / "abl"
    base = [(1, 0, 2), (1, 0, 2), (2, 0, 2), (2, 1, 3), (3, 0, 3)]
    _episodes_json(out / "baseline" / "eval.json", base)
    seeds = (
        [(1, 1, 1), (1, 1, 1), (2, 0, 1), (2, 1, 1), (3, 0, 1)],
        [(1, 1, 1), (1, 0, 1), (2, 0, 1), (2, 1, 2), (3, 0, 1)],
    )
    for seed, rows in enumerate(seeds):
        _episodes_json(out / "rl" / f"seed-{seed}" / "eval.json", rows)
        (out / "rl" / f"seed-{seed}" / "done.json").write_text("{}")
    (out / "subset.json").write_text(json.dumps({"indices": [0, 1, 2, 3, 4]}))
    table = write_table(out, [Variant("rl", "grpo")], 2,
                        {"questions": 5, "split": "dev", "dataset": "d", "seed": 0})  # fmt: skip
    hops = table["change_by_hops"]
    one_em = hops["1 hop"]["em"]["rl"]
    # One hop: seed changes (1+1)/2 - 0 = 1 and (1+0)/2 = 0.5; paired diffs 1, 0.5.
    assert one_em["questions"] == 2 and one_em["per_seed"] == [1.0, 0.5]
    multi = hops["2+ hops"]["searches"]["rl"]
    # 2+ hops (q2, q3, q4; baseline searches 2, 3, 3 -> mean 8/3): seed 0 searches 1, 1, 1
    # (change -5/3), seed 1 searches 1, 2, 1 (change -4/3): mean -1.5, sd 0.2357, t(1) 12.706.
    assert multi["per_seed"] == pytest.approx([-5 / 3, -4 / 3])
    assert multi["across_seeds"]["ci95"] == pytest.approx(12.706 * 0.235702 / 2**0.5, rel=1e-4)
    # Paired per question: -1, -1.5, -2 (mean -1.5, sd 0.5, t(2) 4.303 -> 1.242): excludes 0,
    # but the across-seed interval (2.118) does not, so the drop is not established.
    assert multi["paired"]["ci95"] == pytest.approx(4.302653 * 0.5 / 3**0.5, rel=1e-5)
    assert multi["both"] == "inside" and multi["verdict"] == "inside"
    md = (out / "table.md").read_text()
    assert "## Change from the starting model, per hop count" in md
    assert "| 2+ hops | rl | 3 | " in md and "-1.500 ± 2.118 / -1.500 ± 1.242 | inside |" in md


def test_a_run_claimed_by_a_live_process_is_left_to_it(tmp_path, capsys):
    import socket
    import subprocess

    from research_app import claims

    out = tmp_path / "abl"
    other = subprocess.Popen(["sleep", "60"])
    try:
        held = out / "grpo" / "seed-1"
        held.parent.mkdir(parents=True)
        claims.lock_path(held).write_text(json.dumps(
            {"pid": other.pid, "host": socket.gethostname(), "since": "now"}))  # fmt: skip
        assert main(["ablate", "--algos", "grpo", "--out", str(out), *TINY]) == 0
        assert (out / "grpo" / "seed-0" / "done.json").exists()
        assert not claims.lock_path(out / "grpo" / "seed-0").exists()  # released
        assert not (out / "grpo" / "seed-1").exists()  # left to the other process
        table = json.loads((out / "table.json").read_text())
        assert table["missing_runs"] == ["grpo/seed-1"]
        said = capsys.readouterr().err
        assert f"left to the processes that hold them: grpo/seed-1 (held by pid {other.pid}" in said
    finally:
        other.kill()
        other.wait()
    # Its process has ended: the claim is stale and this process takes the run over.
    assert claims.claim(held) and json.loads(claims.lock_path(held).read_text())["pid"] > 0
    claims.release(held)
    assert not claims.lock_path(held).exists()


def test_claims_respect_other_hosts_and_take_over_only_stale_ones(tmp_path):
    import subprocess

    from research_app import claims

    unit = tmp_path / "run"
    assert claims.claim(unit) and claims.claim(unit)  # taking one's own claim again is fine
    claims.release(unit)
    ended = subprocess.Popen(["true"])
    ended.wait()
    claims.lock_path(unit).write_text(json.dumps({"pid": ended.pid, "host": "elsewhere"}))
    assert not claims.claim(unit)  # cannot check a process on another host
    assert "remove" in claims.describe(unit) and "elsewhere" in claims.describe(unit)
    claims.release(unit)  # not ours: left alone
    assert claims.lock_path(unit).exists()
    claims.lock_path(unit).write_text("{torn")
    assert not claims.claim(unit)  # unreadable: treated as held, never clobbered


def _take(units, start, done, results):
    import time

    from research_app import claims

    judge = claims.is_stale

    def slow_judge(claim):  # widen the window between judging a claim and replacing it
        time.sleep(0.005)
        return judge(claim)

    claims.is_stale = slow_judge
    for i, unit in enumerate(units):
        start.wait()
        results.put((i, claims.claim(unit)))
        done.wait()  # every taker has tried before the holder lets go
        claims.release(unit)


def test_a_stale_claim_is_taken_over_by_exactly_one_of_many_concurrent_takers(tmp_path):
    import multiprocessing
    import socket
    import subprocess

    from research_app import claims

    ended = subprocess.Popen(["true"])
    ended.wait()
    stale = json.dumps({"pid": ended.pid, "host": socket.gethostname(), "since": "then"})
    units = [tmp_path / f"run-{i}" for i in range(25)]
    for unit in units:
        claims.lock_path(unit).write_text(stale)
    takers = 12
    context = multiprocessing.get_context("fork")
    start, done = context.Barrier(takers, timeout=60), context.Barrier(takers, timeout=60)
    results = context.Queue()
    workers = [context.Process(target=_take, args=(units, start, done, results))
               for _ in range(takers)]  # fmt: skip
    for worker in workers:
        worker.start()
    got = [results.get(timeout=120) for _ in range(takers * len(units))]
    for worker in workers:
        worker.join(timeout=60)
    holders = [sum(ok for i, ok in got if i == n) for n in range(len(units))]
    assert holders == [1] * len(units)


def test_an_empty_claim_file_is_stale_once_its_writer_has_had_time(tmp_path):
    import os

    from research_app import claims

    unit = tmp_path / "run"
    claims.lock_path(unit).write_text("")
    assert not claims.claim(unit)  # a writer may be filling it in this instant
    then = claims.lock_path(unit).stat().st_mtime - claims.EMPTY_GRACE_S - 1
    os.utime(claims.lock_path(unit), (then, then))
    assert claims.claim(unit)  # its writer died: taken over
    assert json.loads(claims.lock_path(unit).read_text())["pid"] == os.getpid()
