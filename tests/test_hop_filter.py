"""``env.hops``: train on the questions of chosen hop counts, evaluate on every question.

A lever of the search-drift study (RESULTS.md, "RL that teaches search"): when one-hop
questions make most of a step's gradient, RL learns what they reward (one search, then
answer); training on 2-4-hop questions only takes that signal away.
"""

from __future__ import annotations

import pytest

from algorithms.config import TrainConfig
from algorithms.policy import load_policy
from algorithms.registry import make_algorithm
from research_env import MultiHopSearchEnv
from research_env.data.types import QASample


def sample(i: int, hops: int | None) -> QASample:
    metadata = {} if hops is None else {"hops": hops}
    return QASample(f"q{i}", f"Question {i}?", ("answer",), metadata)


MIXED = [sample(0, 1), sample(1, 2), sample(2, 3), sample(3, 1), sample(4, 4), sample(5, None)]


def test_the_env_plays_only_the_chosen_hop_counts(retriever):
    env = MultiHopSearchEnv(dataset=MIXED, retriever=retriever, hops=[2, 4])
    assert [s.id for s in env.samples] == ["q1", "q4"]
    assert [s.id for s in MultiHopSearchEnv(dataset=MIXED, retriever=retriever).samples] == [
        s.id for s in MIXED
    ]


def test_a_filter_that_keeps_nothing_says_which_hop_counts_exist(retriever):
    with pytest.raises(
        ValueError, match=r"hops=\[5\] keeps no question .* hop counts \[1, 2, 3, 4\]"
    ):
        MultiHopSearchEnv(dataset=MIXED, retriever=retriever, hops=[5])
    bare = [sample(0, None)]
    with pytest.raises(ValueError, match="no 'hops' metadata"):
        MultiHopSearchEnv(dataset=bare, retriever=retriever, hops=[1])


@pytest.mark.parametrize("bad", [[], [0], [2, -1]])
def test_the_config_refuses_hop_counts_below_one(bad):
    with pytest.raises(ValueError, match=r"env\.hops must be a non-empty list"):
        TrainConfig().with_overrides({"env.hops": bad}).validate(
            check_names=False, check_device=False
        )


def test_training_plays_the_filtered_split_and_evaluation_the_whole_one(tmp_path, retriever):
    """Through the config: the trainer's training env keeps the hop filter, its held-out
    env plays every hop count."""
    config = TrainConfig(algo="grpo").with_overrides(
        {"output_dir": str(tmp_path), "env.hops": [2], "logging.wandb": False}
    )
    assert config.env.to_env_kwargs()["hops"] == [2]
    assert config.env.to_env_kwargs(split="dev")["hops"] is None
    algo = make_algorithm("grpo", load_policy("tiny-random", device="cpu"), None, config)
    try:
        small = {"dataset": MIXED, "retriever": retriever}
        train = MultiHopSearchEnv(**(algo.env_kwargs | small))
        held_out = MultiHopSearchEnv(**(algo.eval_env_kwargs | small))
        assert {s.metadata["hops"] for s in train.samples} == {2}
        assert len(held_out.samples) == len(MIXED)
    finally:
        algo.close()
