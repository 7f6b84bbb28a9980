"""The oracle on data without gold decompositions, and through Gymnasium's wrappers."""

from __future__ import annotations

import gymnasium as gym
import pytest
from world import DOCS, KeywordRetriever

import research_env  # noqa: F401  (registers the env id)
from research_env import MultiHopSearchEnv
from research_env.data.types import QASample
from research_env.policies import OraclePolicy, RandomPolicy

# HotpotQA-shaped: supporting facts and documents, no decomposition.
HOTPOT = QASample(
    "h1",
    "In which city is the company founded by Brisa Telk headquartered?",
    ("Ostravel",),
    {
        "dataset": "hotpotqa",
        "supporting_facts": [["Brisa Telk", 0], ["Quimby Forge", 0]],
        "supporting_doc_ids": ["d1", "d2"],
    },
)
BARE = QASample("b1", "Who wrote The Glass Tide?", ("Tamsy Orr",), {"dataset": "nq"})


def play(env, policy):
    env.reset(options={"index": 0})
    while True:
        _, reward, terminated, truncated, info = env.step(policy.act(env))
        if terminated or truncated:
            return reward, info


def test_oracle_plays_data_with_supporting_facts_only():
    env = MultiHopSearchEnv(dataset=[HOTPOT], retriever=KeywordRetriever(DOCS), max_turns=4)
    reward, info = play(env, OraclePolicy())
    assert info["em"] == 1.0 and info["searches"] == 2 and reward == 1.0


def test_oracle_refuses_data_with_neither_decomposition_nor_facts():
    env = MultiHopSearchEnv(dataset=[BARE], retriever=KeywordRetriever(DOCS))
    env.reset(options={"index": 0})
    with pytest.raises(ValueError, match=r"cannot play question 'b1'.*decomposition"):
        OraclePolicy().act(env)


def test_scripted_policies_accept_the_wrapped_env():
    env = gym.make(
        "ReSearch-MultiHop-v0", dataset=[HOTPOT], retriever=KeywordRetriever(DOCS), max_turns=4
    )
    assert env is not env.unwrapped
    reward, info = play(env, OraclePolicy())
    assert info["em"] == 1.0
    env.reset(options={"index": 0})
    assert isinstance(RandomPolicy(seed=0).act(env), str)
