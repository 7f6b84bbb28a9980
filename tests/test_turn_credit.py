"""Per-turn credit for step rewards: where collate puts them, the ``grpo-turn`` estimator
against hand arithmetic (and equal to ``grpo``, bit for bit, without them), what the
rollout engine records, and how the config turns it on."""

from __future__ import annotations

import math

import pytest
import torch

from algorithms.buffer import Trajectory, collate
from algorithms.config import TrainConfig
from algorithms.objectives import AdvantageInputs, compute_advantages
from algorithms.trainer.step import filter_trajectories
from research_env.shaping import SearchShaping

# Verdicts depend on float rounding: `make test` runs them again with AVX2 kernels.
pytestmark = pytest.mark.numeric

# Two turns of 2 tokens around a 2-token observation: mask 1 1 0 0 1 1.
MASK = torch.tensor([[1.0, 1, 0, 0, 1, 1], [1, 1, 0, 0, 1, 1]])


def trajectory(turn_rewards, reward, group=0):
    t = Trajectory(prompt_ids=[5, 6], group=group, reward=reward)
    t.add_model_tokens([1, 2], [-0.1, -0.2])
    t.add_observation_tokens([3, 4])
    t.add_model_tokens([7, 8], [-0.3, -0.4])
    t.turn_rewards = list(turn_rewards)
    return t


def turn_advantages(rewards, step_rewards, groups, mask=MASK, **params):
    inputs = AdvantageInputs(
        torch.tensor(rewards), mask, torch.tensor(groups), step_rewards=step_rewards
    )
    return compute_advantages("grpo-turn", inputs, **params).advantages


# --------------------------------------------------------------------------------------
# The buffer
# --------------------------------------------------------------------------------------


def test_collate_puts_each_step_reward_on_its_turns_last_token():
    batch = collate([trajectory([0.5, -0.25], 1.0), trajectory([0.0, 0.0], 0.0)], pad_id=0)
    assert batch.step_rewards is not None
    torch.testing.assert_close(
        batch.step_rewards, torch.tensor([[0, 0.5, 0, 0, 0, -0.25], [0, 0, 0, 0, 0, 0]])
    )
    assert batch.rewards.tolist() == [1.0, 0.0]  # the final rewards, shaping apart


def test_collate_without_step_rewards_has_none():
    plain = Trajectory(prompt_ids=[1], reward=1.0)
    plain.add_model_tokens([2], [-0.5])
    assert collate([plain, trajectory([0.0, 0.0], 0.0)], pad_id=0).step_rewards is None


def test_collate_refuses_step_rewards_that_do_not_match_the_turns():
    with pytest.raises(ValueError, match="1 turn rewards for 2 turns"):
        collate([trajectory([0.5], 1.0)], pad_id=0)


def test_trajectory_keeps_turn_rewards_through_json():
    t = trajectory([0.5, -0.25], 1.0)
    assert t.episode_return == 1.25
    assert Trajectory.from_json(t.to_json()).turn_rewards == [0.5, -0.25]


# --------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------


def test_an_early_good_search_keeps_its_credit_when_the_answer_is_wrong():
    # A: search rewarded +0.5, then a wrong answer (0). B: no step reward, right answer (1).
    # Episode returns G_1: A 0.5, B 1.0; mean 0.75, unbiased std |1 - 0.5| / sqrt(2).
    # A's turns: G_1 = 0.5 and G_2 = 0.0; B's: 1.0 and 1.0.
    step = torch.tensor([[0, 0.5, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    centred = turn_advantages([0.5, 1.0], step, [0, 0], scale_by_std=False)
    torch.testing.assert_close(
        centred, torch.tensor([[-0.25, -0.25, 0, 0, -0.75, -0.75], [0.25, 0.25, 0, 0, 0.25, 0.25]])
    )
    std = 0.5 / math.sqrt(2)
    scaled = turn_advantages([0.5, 1.0], step, [0, 0])
    torch.testing.assert_close(scaled, centred / (std + 1e-6))
    # Plain grpo credits A's search with A's whole (wrong-answer) episode: -0.25 on both turns.
    inputs = AdvantageInputs(torch.tensor([0.5, 1.0]), MASK, torch.tensor([0, 0]))
    episode = compute_advantages("grpo", inputs, scale_by_std=False).advantages
    assert episode[0, 4].item() == pytest.approx(-0.25)


def test_a_group_with_equal_returns_is_only_centred():
    # Both episodes return 0.5: A earns it at turn 1 (+0.5, then answer 0), B at the end.
    # No spread to divide by: A's turn 2 gets G_2 - G_1 = -0.5, everything else 0 exactly.
    step = torch.tensor([[0, 0.5, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    adv = turn_advantages([0.5, 0.5], step, [0, 0])
    assert adv.tolist() == [[0, 0, 0, 0, -0.5, -0.5], [0, 0, 0, 0, 0, 0]]


def test_a_single_sample_group_gets_nothing():
    step = torch.tensor([[0, 0.5, 0, 0, 0, 0]])
    adv = turn_advantages([0.5], step, [0], mask=MASK[:1])
    assert adv.abs().sum().item() == 0.0


@pytest.mark.parametrize("scale_by_std", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_without_step_rewards_it_is_grpo_bit_for_bit(seed, scale_by_std):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.rand(12, generator=g)
    rewards[8:10] = 0.3  # a flat group
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 5])  # ... and two singletons
    mask = (torch.rand(12, 9, generator=g) > 0.3).float()
    inputs = AdvantageInputs(rewards, mask, groups)
    grpo = compute_advantages("grpo", inputs, scale_by_std=scale_by_std).advantages
    for step_rewards in (None, torch.zeros(12, 9)):
        inputs.step_rewards = step_rewards
        turn = compute_advantages("grpo-turn", inputs, scale_by_std=scale_by_std).advantages
        assert torch.equal(turn, grpo)


# --------------------------------------------------------------------------------------
# The engine and the config
# --------------------------------------------------------------------------------------


def test_engine_records_one_step_reward_per_turn_and_the_answers_reward():
    from algorithms.policy import load_policy
    from algorithms.rollout import RolloutEngine, Sampling
    from benchmarks.shaping_behaviour import env_kwargs

    policy = load_policy("tiny-random", device="cpu")
    engine = RolloutEngine(policy, env_kwargs({"no_search_multihop": 1.0}), prompt_format="text")
    trajectories = engine.collect([0, 1], 4, sampling=Sampling(max_turn_tokens=4, seed=0))
    answered_first = 0
    for t in trajectories:
        assert len(t.turn_rewards) == len(t.turn_spans) >= 1
        assert t.reward == t.info["answer_reward"] == 0.0  # em: random text is never right
        assert t.info["shaping"] == {"no_search_multihop": t.episode_return}
        if t.info["searches"] == 0 and t.finish_reason == "answered":
            answered_first += 1
            assert t.turn_rewards == [-1.0]
        else:
            assert set(t.turn_rewards) == {0.0}
    assert 0 < answered_first < len(trajectories)  # both behaviours occur: a real test


def test_config_turns_shaping_and_turn_credit_on():
    from algorithms.grpo import GRPO

    config = TrainConfig().with_overrides(
        {"env.shaping.redundant_query": 0.2, "grpo.credit": "turn"}
    )
    assert config.env.to_env_kwargs()["shaping"] == {
        "retrieval_gain": 0.0,
        "redundant_query": 0.2,
        "no_search_multihop": 0.0,
    }
    assert TrainConfig.from_dict(config.to_dict()).env.shaping == SearchShaping(redundant_query=0.2)
    algo = object.__new__(GRPO)
    algo.config = config
    assert algo.advantage_spec() == ("grpo-turn", {"scale_by_std": True})
    with pytest.raises(ValueError, match=r"grpo\.credit must be one of"):
        TrainConfig().with_overrides({"grpo.credit": "token"})
    with pytest.raises(ValueError, match=r"unknown key.*env\.shaping"):
        TrainConfig().with_overrides({"env.shaping.redundancy": 0.2})


def test_metrics_and_the_flat_group_filter_count_step_rewards(tmp_path):
    from algorithms.policy import load_policy
    from algorithms.registry import make_algorithm
    from algorithms.trainer.metrics import episode_metrics
    from benchmarks.shaping_behaviour import env_kwargs

    # Equal answer rewards, different step rewards: not a flat group.
    group = [trajectory([0.5, 0.0], 0.0), trajectory([0.0, 0.0], 0.0)]
    metrics = episode_metrics(group)
    assert metrics["episode/reward"] == 0.0 and metrics["episode/shaping"] == 0.25
    assert metrics["health/flat_group_fraction"] == 0.0
    assert "episode/shaping" not in episode_metrics([trajectory([0.0, 0.0], 1.0)])

    config = TrainConfig().with_overrides(
        {"output_dir": str(tmp_path), "trainer.filter_zero_variance_groups": True,
         "logging.wandb": False, "grpo.kl_coef": 0.0, "rollout.prompt_format": "text"}
    )  # fmt: skip
    algo = make_algorithm(
        "grpo", load_policy("tiny-random", device="cpu"), env_kwargs(None), config
    )
    flat = [trajectory([0.0, 0.0], 0.0, group=1), trajectory([0.0, 0.0], 0.0, group=1)]
    has_advantages = algo.recipe().advantage is not None
    kept, stats = filter_trajectories(group + flat, algo.config, has_advantages)
    assert kept == group and stats["filter/zero_variance_groups"] == 1.0
