"""The step pipeline's decisions, each made in one named place: where pi_old comes from,
which groups are flat, and which metrics add up over ranks instead of averaging."""

from __future__ import annotations

import pytest

from algorithms.buffer import Trajectory, flat_groups
from algorithms.config import TrainConfig
from algorithms.trainer import distributed
from algorithms.trainer.loop import COUNTERS
from algorithms.trainer.step import old_logprobs_source


def trainer(**settings) -> TrainConfig:
    return TrainConfig().with_overrides({f"trainer.{k}": v for k, v in settings.items()})


@pytest.mark.parametrize(
    ("settings", "rows", "kl_in_reward", "source"),
    [
        ({}, 8, False, "current"),  # one optimizer step: pi_old is the policy itself
        ({}, 8, True, "recompute"),  # the advantages need pi_old before the update
        ({"epochs": 2}, 8, False, "recompute"),
        ({"minibatch_size": 4}, 8, False, "recompute"),
        ({"minibatch_size": 8}, 8, False, "current"),
        ({"old_logprobs": "recompute"}, 8, False, "recompute"),
        ({"old_logprobs": "rollout"}, 8, True, "rollout"),
    ],
)
def test_old_logprobs_source(settings, rows, kl_in_reward, source):
    assert old_logprobs_source(trainer(**settings), rows, kl_in_reward) == source


def test_flat_groups_are_the_groups_whose_returns_have_no_range():
    def episode(group, reward, shaping=0.0):
        return Trajectory(prompt_ids=[1], group=group, reward=reward, turn_rewards=[shaping])

    episodes = [episode(0, 1.0), episode(0, 1.0),  # flat
                episode(1, 1.0), episode(1, 0.0),  # varied
                episode(2, 0.5, 0.5), episode(2, 1.0),  # flat once shaping counts
                episode(3, 0.0)]  # fmt: skip  # one sample: no baseline, flat
    assert flat_groups(episodes) == {0, 2, 3}


def test_counters_add_up_over_ranks_and_the_rest_averages(monkeypatch):
    ranks = [
        {"episode/reward": 1.0, "filter/kept_episodes": 4.0, "filter/zero_variance_groups": 1.0},
        {"episode/reward": 0.0, "filter/kept_episodes": 2.0, "filter/zero_variance_groups": 2.0},
    ]
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed, "gather_objects", lambda metrics: ranks)
    merged = distributed.mean_over_ranks(ranks[0], summed=COUNTERS)
    assert merged == {
        "episode/reward": 0.5,
        "filter/kept_episodes": 6.0,
        "filter/zero_variance_groups": 3.0,
    }
