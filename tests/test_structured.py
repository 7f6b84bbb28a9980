"""ReSearch-MultiHop-Structured-v0: SB3 checks, shared episode code, gold-blind candidates,
control retrievers, and SB3 PPO / DQN (API and CLI) beating the random policy."""

from __future__ import annotations

import dataclasses
import json
import random

import gymnasium as gym
import numpy as np
import pytest

import research_env
from research_env import MultiHopSearchEnv
from research_env.data import corpus_path, load_split
from research_env.structured import StructuredSearchEnv, build_candidates, entity_spans

pytest.importorskip("stable_baselines3")


# One torch thread (the conftest fixture): results do not depend on it.
pytestmark = pytest.mark.usefixtures("one_thread")


def test_registered_and_passes_sb3_check_env():
    from stable_baselines3.common.env_checker import check_env

    env = gym.make(research_env.STRUCTURED_ENV_ID)
    assert isinstance(env.unwrapped, StructuredSearchEnv)
    assert isinstance(env.unwrapped.text_env, MultiHopSearchEnv)  # the same episodes
    assert env.action_space == gym.spaces.Discrete(4 + 6 + 1)
    check_env(env.unwrapped)
    check_env(StructuredSearchEnv(n_queries=2, n_answers=3, retriever="empty", max_turns=2))


def test_sb3_make_vec_env_one_liner():
    """SB3's ``make_vec_env`` passes ``render_mode="rgb_array"`` and falls back on
    ``TypeError``; a text env has no pixels, so it must take that fallback."""
    from stable_baselines3.common.env_util import make_vec_env

    from research_env.env import UnsupportedRenderMode

    envs = make_vec_env(research_env.STRUCTURED_ENV_ID, n_envs=2, env_kwargs={"max_turns": 2})
    assert envs.num_envs == 2 and envs.reset().shape[0] == 2
    assert envs.get_attr("render_mode") == [None, None]
    with pytest.raises(UnsupportedRenderMode, match=r"'rgb_array'.*no pixels"):
        gym.make(research_env.STRUCTURED_ENV_ID, render_mode="rgb_array")
    with pytest.raises(ValueError, match="render_mode must be one of"):  # as it always was
        MultiHopSearchEnv(render_mode="rgb_array")


def test_actions_are_text_turns_of_the_llm_env_with_its_reward():
    """Replaying the synthesized turns in ReSearch-MultiHop-v0 gives the same reward and info."""
    env = StructuredSearchEnv()
    rng = np.random.default_rng(0)
    for index in range(12):
        env.reset(options={"index": index})
        turns, done = [], False
        while not done:
            action = int(rng.integers(env.stop_action))  # searches and answers
            turns.append(env.turn_text(action))
            _, reward, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        text_env = MultiHopSearchEnv()
        text_env.reset(options={"index": index})
        for turn in turns:
            *_, text_reward, _, _, text_info = text_env.step(turn)
        assert reward == text_reward
        assert {k: info[k] for k in ("em", "f1", "format_valid", "searches", "termination")} == {
            k: text_info[k] for k in ("em", "f1", "format_valid", "searches", "termination")
        }


@pytest.mark.parametrize(
    "action",
    [2.7, -0.5, 3.0, "3", True, False, float("nan"), None, np.array([1]), np.array([1, 2]),
     np.float64(1.0), np.array(1.5), -1, 10**6],
    ids=repr,
)  # fmt: skip
def test_a_discrete_action_that_is_not_an_integer_in_the_space_is_one_value_error(action):
    env = StructuredSearchEnv()
    env.reset(options={"index": 0})
    with pytest.raises(ValueError, match=r"is not in Discrete\(\d+\): an action is an integer"):
        env.step(action)
    # The episode is untouched: a valid action still plays.
    for valid in (np.int64(0), np.array(0), 0):
        env.reset(options={"index": 0})
        _, _, terminated, truncated, _ = env.step(valid)
        assert not terminated and not truncated


def test_a_good_plan_is_rewarded_and_stop_ends_without_answer():
    env = StructuredSearchEnv(n_queries=4, n_answers=8)
    env.reset(options={"index": 2})  # "Who was the artist of the album The Sega Garden?"
    assert env.candidates.queries[1] == "Sega Garden"
    env.step(1)
    answers = env.candidates.answers
    assert "Konona Zyrfyn" in answers
    _, reward, terminated, _, info = env.step(env.n_queries + answers.index("Konona Zyrfyn"))
    assert terminated and info["em"] == 1.0 and info["format_valid"] and reward == 1.0
    env.reset(options={"index": 2})
    _, reward, terminated, truncated, info = env.step(env.stop_action)
    assert terminated and not truncated and info["termination"] == "eos" and reward == 0.0


def _candidate_trace(samples, actions):
    env = StructuredSearchEnv(dataset=samples, corpus=corpus_path("synthetic"), max_turns=4)
    trace = []
    for index, plan in enumerate(actions):
        env.reset(options={"index": index})
        trace.append((env.candidates.queries, env.candidates.answers))
        for action in plan:
            *_, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
            c = env.candidates
            trace.append(
                (c.queries, c.answers, c.query_features.tobytes(), c.answer_features.tobytes())
            )
    return trace


def test_candidates_never_look_at_the_gold_answers():
    """Shuffle the golden answers (and drop the metadata): every candidate set is the same."""
    samples = load_split("synthetic", "dev")[:40]
    golds = [s.golden_answers for s in samples]
    random.Random(0).shuffle(golds)
    shuffled = [
        dataclasses.replace(s, golden_answers=g, metadata={})
        for s, g in zip(samples, golds, strict=True)
    ]
    assert any(a.golden_answers != b.golden_answers for a, b in zip(samples, shuffled))
    rng = np.random.default_rng(1)
    actions = [[int(a) for a in rng.integers(0, 4, size=3)] for _ in samples]  # searches
    assert _candidate_trace(samples, actions) == _candidate_trace(shuffled, actions)


def test_candidate_builder_reads_only_its_arguments():
    c = build_candidates(
        "Who was born later, Veizard Beinmaekro or Ninrek Toxlok?",
        [
            '"Veizard Beinmaekro"\nVeizard Beinmaekro (born 1763) was a botanist. He was born in Dexnou.'
        ],
        ["Veizard Beinmaekro"],
        n_queries=4,
        n_answers=6,
    )
    assert c.queries[0].startswith("Who was born later")
    assert "Dexnou" in c.queries and "Ninrek Toxlok" in c.queries
    assert "Veizard Beinmaekro" not in c.queries  # already searched
    assert c.answers[:4] == ("yes", "no", "Veizard Beinmaekro", "Ninrek Toxlok")
    assert "1763" in c.answers
    assert c.query_features.shape == (4, 5) and c.answer_features.shape == (6, 7)
    assert entity_spans("Is Qismar located in the city of Toderora?") == ["Qismar", "Toderora"]


def test_control_retrievers():
    env = StructuredSearchEnv(retriever="empty")
    env.reset(options={"index": 0})
    env.step(1)
    assert "No documents found." in env.text_env.episode.record.observations[-1]
    env = StructuredSearchEnv(retriever="random", top_k=3)
    env.reset(options={"index": 0})
    env.step(1)
    assert env.text_env.episode.record.observations[-1].count("Doc ") == 3
    text = MultiHopSearchEnv(retriever="random", retriever_kwargs={"seed": 3})
    text.reset(seed=0)
    assert text.step("<search>x</search>")[0].count("(Title:") == 3


def test_sb3_ppo_beats_the_random_policy(tmp_path, monkeypatch):
    import tempfile

    from algorithms.sb3 import evaluate, model_actor, random_actor, train

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model = train("sb3-ppo", {}, timesteps=6_000, seed=0)
    assert not list(tmp_path.glob("SB3-*")), "SB3's default logger left a temp folder"
    dev = {"split": "dev"}
    trained = evaluate(model_actor(model), dev, questions=100)
    baseline = evaluate(random_actor(11, 0), dev, questions=100)
    assert trained["reward"] > baseline["reward"] + 0.05
    assert trained["em"] > baseline["em"] + 0.05


def test_sb3_dqn_from_the_cli_beats_the_random_policy(tmp_path):
    from research_app.cli import main

    out = tmp_path / "dqn"
    assert main(["train", "--algo", "sb3-dqn", "--steps", "6000", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "model.zip").exists() and metrics["hparams"]["gamma"] == 0.9
    assert metrics["trained"]["reward"] > metrics["random"]["reward"] + 0.05
    assert metrics["trained"]["em"] > metrics["random"]["em"]


def test_cli_rejects_llm_only_flags_and_bad_sets(tmp_path, capsys):
    from research_app.cli import main

    assert main(["train", "--algo", "sb3-ppo", "--model", "tiny-random"]) != 0
    assert main(["train", "--algo", "sb3-ppo", "--set", "grpo.kl_coef=0"]) != 0
    assert "sb3.KEY=VALUE" in capsys.readouterr().err


def test_sb3_cli_runs_are_first_class(tmp_path, capsys):
    """``--set sb3.verbose=1`` reaches SB3 (it was a duplicate-argument TypeError); the
    run writes fingerprint.json and rows ``compare`` reads; an existing run is not
    overwritten."""
    from research_app.cli import main
    from research_env.fingerprint import read_fingerprint

    out = tmp_path / "ppo"
    argv = ["train", "--algo", "sb3-ppo", "--steps", "128", "--out", str(out),
            "--set", "sb3.verbose=1", "--set", "sb3.n_steps=32", "--set", "env.max_turns=2"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "total_timesteps" in printed  # SB3's own verbose table
    assert read_fingerprint(out)["model"] == "sb3-ppo"
    assert (out / "curves.png").read_bytes().startswith(b"\x89PNG")  # as LLM runs draw
    curve = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert curve and all("episode/em" in r for r in curve) and curve[-1]["step"] <= 128
    assert read_fingerprint(out)["rules"]["max_turns"] == 2
    assert main(["compare", str(out), str(out)]) == 0
    assert "| trained |" in capsys.readouterr().out
    assert main(argv) == 2
    assert "already holds an SB3 run" in capsys.readouterr().err
