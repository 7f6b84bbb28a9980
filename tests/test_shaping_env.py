"""Step-level search rewards in the env: each term by hand, the answer's reward kept apart
in ``info``, and shaping off (the default) changes nothing at all."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from world import SAMPLES

from research_env import MultiHopSearchEnv, SearchVectorEnv
from research_env.episode import EpisodeRules
from research_env.shaping import SearchShaping

T = "<think>t</think>"
ANSWER = "<think>t</think><answer>\\boxed{Ostravel}</answer>"  # q1's golden answer


def make_env(retriever, **kwargs):
    # Loose format: the answer reward is just F1, whatever the think tags do.
    return MultiHopSearchEnv(
        dataset=SAMPLES, retriever=retriever, top_k=2, max_turns=4, format_mode="loose", **kwargs
    )


def play(env, turns, index=0):
    env.reset(options={"index": index})
    return [env.step(turn) for turn in turns]


def test_retrieval_gain_pays_per_supporting_document_found_first(retriever):
    env = make_env(retriever, shaping={"retrieval_gain": 0.25})
    steps = play(
        env,
        [
            f"{T}<search>Brisa Telk</search>",  # d1 (supporting): +0.25
            f"{T}<search>Brisa Telk founded</search>",  # d1 again: nothing new
            f"{T}<search>Quimby Forge headquartered</search>",  # d2 new (+ d1 seen): +0.25
            ANSWER,
        ],
    )
    assert [s[1] for s in steps[:3]] == [0.25, 0.0, 0.25]
    info = steps[-1][4]
    # The answer turn pays the answer reward (research: F1 = 1.0) and no term of its own.
    assert steps[-1][1] == info["answer_reward"] == 1.0
    assert info["shaping"] == {"retrieval_gain": 0.5}
    assert info["em"] == 1.0 and info["supporting_recall"] == 1.0


def test_retrieval_gain_counts_each_new_supporting_document(retriever):
    env = make_env(retriever, shaping={"retrieval_gain": 1.0})
    env.reset(options={"index": 0})
    # "Quimby Forge Brisa" ranks d1 then d2: both of q1's supporting documents at once.
    _, reward, *_ = env.step(f"{T}<search>Quimby Forge Brisa</search>")
    assert env.episode.record.retrieved_doc_ids == ["d1", "d2"]
    assert reward == 2.0


def test_redundant_query_penalizes_a_normalized_repeat(retriever):
    env = make_env(retriever, shaping={"redundant_query": 0.1})
    steps = play(
        env,
        [
            f"{T}<search>Brisa Telk</search>",
            f"{T}<search>  the BRISA telk? </search>",  # same after normalization: -0.1
            f"{T}<search>Quimby Forge</search>",
            f"{T}<search>brisa, telk</search>",  # -0.1 again; 4th turn = turn budget
        ],
    )
    assert [s[1] for s in steps[:3]] == [0.0, -0.1, 0.0]
    last_reward, truncated, info = steps[-1][1], steps[-1][3], steps[-1][4]
    assert truncated and info["termination"] == "turn_budget"
    # The turn that hits the budget still pays its own term, on top of the final reward.
    assert info["answer_reward"] == 0.0  # research reward of a malformed response
    assert last_reward == pytest.approx(-0.1)
    assert info["shaping"] == {"redundant_query": pytest.approx(-0.2)}


def test_no_search_multihop_penalizes_only_unsearched_multihop_answers(retriever):
    env = make_env(retriever, shaping={"no_search_multihop": 0.5})
    (step,) = play(env, [ANSWER])  # q1 has hops = 2
    assert step[1] == pytest.approx(step[4]["answer_reward"] - 0.5)
    assert step[4]["shaping"] == {"no_search_multihop": -0.5}

    searched = play(env, [f"{T}<search>Brisa Telk</search>", ANSWER])
    assert [s[1] for s in searched] == [0.0, 1.0]

    (one_hop,) = play(env, ["<think>t</think><answer>\\boxed{Tamsy Orr}</answer>"], index=1)
    assert one_hop[1] == one_hop[4]["answer_reward"]  # q2 has hops = 1


def test_invalid_turns_and_early_ends_pay_no_term(retriever):
    env = make_env(retriever, shaping={"redundant_query": 1.0, "no_search_multihop": 1.0})
    env.reset(options={"index": 0})
    assert env.step("no tags at all")[1] == 0.0
    _, reward, _, truncated, info = env.end_early()
    assert truncated and reward == info["answer_reward"] == 0.0
    assert info["shaping"] == {"redundant_query": 0.0, "no_search_multihop": 0.0}


def test_shaping_off_is_todays_env_exactly(retriever):
    turns = [f"{T}<search>Brisa Telk</search>", f"{T}<search>Brisa Telk</search>", ANSWER]
    plain = play(make_env(retriever), turns)
    zeros = play(make_env(retriever, shaping={"retrieval_gain": 0, "redundant_query": 0}), turns)
    assert plain == zeros
    assert "answer_reward" not in plain[-1][4] and "shaping" not in plain[-1][4]


def test_vector_env_steps_carry_the_step_rewards(retriever):
    envs = SearchVectorEnv(
        2,
        autoreset_mode=AutoresetMode.DISABLED,
        dataset=SAMPLES,
        retriever=retriever,
        top_k=2,
        format_mode="loose",
        shaping={"retrieval_gain": 0.5, "redundant_query": 0.25},
    )
    envs.reset(options={"index": 0})
    _, rewards, *_ = envs.step(
        [f"{T}<search>Brisa Telk</search>", f"{T}<search>port city</search>"]
    )
    np.testing.assert_array_equal(rewards, [0.5, 0.0])  # d1 is supporting, d3 is not
    _, rewards, *_ = envs.step([f"{T}<search>brisa telk</search>", ANSWER])
    np.testing.assert_array_equal(rewards, [-0.25, 1.0])
    outcomes = envs.step_turns({0: f"{T}<search>Quimby Forge</search>"})
    assert outcomes[0].reward == outcomes[0].shaping == 0.5


def test_gym_make_takes_shaping():
    env = gym.make("ReSearch-MultiHop-v0", shaping={"redundant_query": 0.1})
    assert env.unwrapped.rules.shaping == SearchShaping(redundant_query=0.1)
    env.close()


@pytest.mark.parametrize(
    "shaping,message",
    [
        ({"redundant_query": -0.1}, "must be a finite number >= 0"),
        ({"retrieval_gain": float("nan")}, "must be a finite number >= 0"),
        ({"retrieval_gain": "big"}, "must be a number"),
        ({"redundancy": 0.1}, "unknown shaping term"),
        ("on", "must be a mapping"),
    ],
)
def test_bad_shaping_is_a_clear_error(retriever, shaping, message):
    with pytest.raises(ValueError, match=message):
        make_env(retriever, shaping=shaping)


def test_rules_take_a_mapping_too():
    assert EpisodeRules(shaping={"retrieval_gain": 1}).shaping == SearchShaping(retrieval_gain=1)
