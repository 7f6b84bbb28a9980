"""The full loop with real rollouts: each algorithm learns a small task, a killed run resumes
exactly, evaluation and predict work, and the train command runs end to end.

The task (``benchmarks/learning_margin.py``): a one-turn env (``max_turns=1``) whose reward
is the share of the turn's 12 token slots the policy fills with spaces. The tiny random
model starts near 0.65; writing space-prefixed (and whitespace) tokens is learnable in a
few dozen updates at a high learning rate.
"""

from __future__ import annotations

import json

import pytest
import torch

from algorithms.policy import load_policy
from algorithms.registry import algorithm_class
from algorithms.trainer import checkpoint as ckpt
from benchmarks.learning_margin import (
    RECIPES,
    TEST_SEEDS,
    THRESHOLD,
    TURN_TOKENS,
    broken_update,
    env_kwargs,
    learning_gain,
    make,
)

# One torch thread (the conftest fixture): results do not depend on it.
pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------
# Learning
# --------------------------------------------------------------------------------------


def mean_gain(recipe, out):
    runs = [learning_gain(recipe, seed, out / str(seed)) for seed in TEST_SEEDS]
    return sum(after - before for before, after in runs) / len(runs), runs


@pytest.mark.numeric
@pytest.mark.parametrize("algo_name", ["grpo", "ppo", "reinforce"])
def test_each_algorithm_learns_the_task(algo_name, tmp_path):
    """The mean gain over three seeds clears THRESHOLD on every kernel set measured, and no
    broken update comes near it (per-seed figures: RESULTS.md, "Tests on every CPU")."""
    gain, runs = mean_gain(algo_name, tmp_path)
    assert gain > THRESHOLD, runs
    records = [json.loads(x) for x in (tmp_path / "0" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, RECIPES[algo_name][1] + 1))


@pytest.mark.numeric
def test_a_sign_flipped_update_fails_the_learning_criterion(tmp_path):
    """The criterion tells a working update from a broken one: GRPO ascending the wrong way
    (advantages negated) ends far below THRESHOLD (the other mutations: RESULTS.md)."""
    with broken_update("sign"):
        gain, runs = mean_gain("grpo", tmp_path)
    assert gain < 0, runs


def test_zero_learning_rate_learns_nothing(tmp_path):
    """The control for the learning tests: the same run with lr = 0 is flat."""
    algo = make("grpo", tmp_path, **{"optim.lr": 0.0})
    before = algo.evaluate()["eval/reward"]
    algo.learn(3)
    assert algo.evaluate()["eval/reward"] == before


# --------------------------------------------------------------------------------------
# Resume
# --------------------------------------------------------------------------------------


class Killed(Exception):
    pass


def _kill_at(step):
    def callback(algo, metrics):
        if algo.step == step:
            raise Killed

    return callback


def test_killed_run_resumes_exactly(tmp_path):
    overrides = {"checkpoint.every": 2, "checkpoint.keep_last": 5, "optim.warmup_steps": 3}
    reference = make("grpo", tmp_path / "whole", **overrides)
    reference.learn(4)
    rng_after_whole = torch.get_rng_state()

    interrupted = make("grpo", tmp_path / "killed", **overrides)
    with pytest.raises(Killed):
        interrupted.learn(4, callback=_kill_at(3))  # dies after step 3; last checkpoint: 2
    latest = ckpt.latest_checkpoint(tmp_path / "killed")
    assert latest is not None and latest.name == "step-000002"
    resumed = algorithm_class("grpo").load(latest, env_kwargs())
    assert resumed.step == 2
    resumed.learn(2)  # two more, as SB3's learn(N): a loaded step-2 checkpoint ends at 4
    assert resumed.step == 4

    whole = reference.policy.model.state_dict()
    for name, tensor in resumed.policy.model.state_dict().items():
        assert torch.equal(tensor, whole[name]), name
    state_a = reference.optimizer.state_dict()["state"]
    state_b = resumed.optimizer.state_dict()["state"]
    for index in state_a:
        assert torch.equal(state_a[index]["exp_avg"], state_b[index]["exp_avg"])
        assert torch.equal(state_a[index]["exp_avg_sq"], state_b[index]["exp_avg_sq"])
    assert resumed.scheduler.state_dict() == reference.scheduler.state_dict()
    # The global RNG streams continued exactly too.
    assert torch.equal(torch.get_rng_state(), rng_after_whole)
    log = [json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    ref_log = [
        json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()
    ]
    resumed_rewards = {r["step"]: r["episode/reward"] for r in log}
    assert [resumed_rewards[s] for s in (3, 4)] == [r["episode/reward"] for r in ref_log[2:4]]


def test_a_spent_search_budget_stops_training_with_the_last_step_saved(tmp_path):
    from research_env.retrievers.web import BudgetExhausted

    algo = make("grpo", tmp_path, **{"checkpoint.every": 0})
    collect = algo.collect_rollouts

    def collect_until_spent(step):
        if step == 2:  # the third step's searches would pass the budget
            raise BudgetExhausted("https://api.example", "the serper search budget is spent")
        return collect(step)

    algo.collect_rollouts = collect_until_spent
    with pytest.raises(BudgetExhausted, match="Training stopped before step 3: step 2 is saved"):
        algo.learn(4)
    latest = ckpt.latest_checkpoint(tmp_path)
    assert latest is not None and latest.name == "step-000002"
    assert algorithm_class("grpo").load(latest, env_kwargs()).step == 2


# --------------------------------------------------------------------------------------
# evaluate / predict / CLI
# --------------------------------------------------------------------------------------


def test_evaluate_reports_episode_metrics(tmp_path):
    metrics = make("grpo", tmp_path, **{"eval.temperature": 0.0}).evaluate(questions=3)
    for key in ("eval/reward", "eval/em", "eval/f1", "eval/format_valid", "eval/searches"):
        assert key in metrics
    assert metrics["eval/generated_tokens"] == TURN_TOKENS


def test_predict_is_the_greedy_turn(tmp_path):
    algo = make("grpo", tmp_path)
    text = algo.predict("Question 3: say something.", max_new_tokens=6)
    assert isinstance(text, str) and text
    assert algo.predict("Question 3: say something.", max_new_tokens=6) == text


def test_train_command_runs_resumes_and_exports(tmp_path, capsys):
    import argparse

    from transformers import AutoModelForCausalLM

    from research_app.train import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    out = tmp_path / "run"
    common = [
        "train", "--model", "tiny-random", "--out", str(out), "--no-wandb",
        "--set", "rollout.questions_per_step=1", "--set", "rollout.group_size=2",
        "--set", "rollout.max_turn_tokens=6", "--set", "env.max_turns=1",
        "--set", "logging.progress_bar=false", "--set", "checkpoint.every=1",
    ]  # fmt: skip
    args = parser.parse_args([*common, "--steps", "1", "--algo", "reinforce"])
    assert args.handler(args) == 0
    assert (out / "final" / "config.json").exists()
    AutoModelForCausalLM.from_pretrained(out / "final")

    args = parser.parse_args([*common, "--steps", "1", "--algo", "reinforce"])
    with pytest.raises(ValueError, match="already holds checkpoints"):
        args.handler(args)

    args = parser.parse_args(["train", "--out", str(out), "--resume", "--steps", "2"])
    assert args.handler(args) == 0
    assert ckpt.latest_checkpoint(out).name == "step-000002"
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    assert "resuming reinforce" in capsys.readouterr().err


def test_help_lists_the_algorithms():
    import argparse

    from research_app.train import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    help_text = parser._subparsers._group_actions[0].choices["train"].format_help()
    for word in ("grpo", "ppo", "reinforce", "--resume", "--config", "--set"):
        assert word in help_text


@pytest.mark.parametrize("algo_name", ["ppo", "grpo", "reinforce"])
def test_train_command_is_reproducible_with_one_seed(algo_name, tmp_path):
    # The command used to build PPO's value head before seeding, so two runs with the same
    # seed differed from step 1. The tiny random model's answers all score 0, so an entropy
    # bonus makes the sampled episodes move the weights (lr 0.05): equal weights after two
    # steps then mean equal samples, equal critic and equal updates.
    import argparse

    from safetensors.torch import load_file

    from research_app.train import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    weights = []
    for run in ("a", "b"):
        out = tmp_path / run
        args = parser.parse_args([
            "train", "--algo", algo_name, "--model", "tiny-random", "--out", str(out),
            "--no-wandb", "--steps", "2", "--seed", "7",
            "--set", "rollout.questions_per_step=2", "--set", "rollout.group_size=2",
            "--set", "rollout.max_turn_tokens=6", "--set", "env.max_turns=1",
            "--set", "optim.lr=0.05", "--set", f"{algo_name}.entropy_coef=0.1",
            "--set", "logging.progress_bar=false", "--set", "checkpoint.every=2", "--set", "checkpoint.export_final=false",
        ])  # fmt: skip
        assert args.handler(args) == 0
        step = ckpt.latest_checkpoint(out)
        weights.append(load_file(step / "policy" / "model.safetensors"))
        if algo_name == "ppo":
            head = torch.load(step / "policy" / "value_head.pt")
            weights[-1] |= {f"value_head.{k}": v for k, v in head.items()}
    first, second = weights
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name
    initial = load_policy("tiny-random", device="cpu").model.state_dict()
    assert any(not torch.equal(first[k], initial[k]) for k in first if k in initial)


def test_learn_n_trains_n_more_steps_and_says_when_nothing_is_left(tmp_path, capsys):
    """SB3 semantics: ``learn(N)`` trains N more steps; ``learn()`` continues to
    ``trainer.steps`` and, when it is already there, says so and exports nothing again."""
    algo = make("grpo", tmp_path / "run")
    algo.learn(1)
    algo.learn(1)
    assert algo.step == 2 and algo.config.trainer.steps == 2
    saved = tmp_path / "run" / "checkpoints" / "step-000002" / "state.json"
    written = saved.stat().st_mtime_ns, (tmp_path / "run" / "metrics.jsonl").read_text()
    capsys.readouterr()
    algo.learn()  # nothing left: no new checkpoint, evaluation or metrics line
    assert algo.step == 2
    assert (saved.stat().st_mtime_ns, (tmp_path / "run" / "metrics.jsonl").read_text()) == written
    assert "nothing to train: the policy is at step 2" in capsys.readouterr().err
    with pytest.raises(ValueError, match="steps=0"):
        algo.learn(0)
