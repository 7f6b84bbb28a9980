"""Dynamic sampling (rollout.dynamic_sampling): which groups count as informative, which
extra questions a round draws, how rounds fill a step, and the loop's use of it."""

from __future__ import annotations

import pytest

from algorithms.buffer import Trajectory
from algorithms.config import TrainConfig
from algorithms.policy import load_policy
from algorithms.registry import make_algorithm
from algorithms.trainer.dynamic_sampling import extra_questions, fill_step, informative_groups


def episode(group: int, reward: float, em: float, step_reward: float = 0.0) -> Trajectory:
    t = Trajectory(prompt_ids=[1, 2], group=group, reward=reward, info={"em": em})
    t.add_model_tokens([3, 4], [-1.0, -1.0])
    t.turn_rewards = [step_reward]
    return t


def test_informative_groups_by_reward_and_by_answer():
    episodes = [
        episode(0, 1.0, 1.0), episode(0, 0.0, 0.0),    # right and wrong: both criteria
        episode(1, 0.1, 0.0), episode(1, 0.0, 0.0),    # format credit only: reward only
        episode(2, 0.1, 0.0), episode(2, 0.1, 0.0),    # flat: neither
        episode(3, 1.0, 1.0), episode(3, 1.0, 1.0),    # all right: neither
        episode(4, 0.0, 0.0, 0.2), episode(4, 0.0, 0.0),  # a step reward: reward only
        episode(5, 1.0, 1.0),                          # one episode: never
    ]  # fmt: skip
    assert informative_groups(episodes, "reward") == [0, 1, 4]
    assert informative_groups(episodes, "answer") == [0]


def test_extra_questions_are_seeded_fresh_and_distinct():
    played = [0, 1, 2, 3]
    drawn = extra_questions(7, step=3, round_=1, n_questions=20, count=4, played=played)
    assert len(drawn) == len(set(drawn)) == 4
    assert not set(drawn) & set(played)
    assert drawn == extra_questions(7, 3, 1, 20, 4, played)  # a pure function
    others = {tuple(extra_questions(7, 3, r, 20, 4, played)) for r in (1, 2, 3)}
    others.add(tuple(extra_questions(7, 3, 1, 20, 4, played, rank=1)))
    assert len(others) == 4  # rounds and ranks draw differently
    # A split too small to avoid the played questions repeats them, never within a draw.
    small = extra_questions(0, 0, 1, n_questions=5, count=4, played=[0, 1, 2])
    assert len(set(small)) == 4 and set(small) <= set(range(5))


def test_rounds_fill_the_step_renumber_groups_and_stop_at_the_limit():
    def round_of(good: list[bool]) -> list[Trajectory]:
        out = []
        for g, ok in enumerate(good):
            out += [episode(g, 1.0, 1.0), episode(g, 0.0, 0.0)] if ok else [
                episode(g, 0.0, 0.0), episode(g, 0.0, 0.0)]  # fmt: skip
        return out

    plan = {1: [False, True, False], 2: [True, True, True]}
    calls = []

    def draw(round_, played):
        calls.append((round_, list(played)))
        return [10 * round_ + i for i in range(3)], round_of(plan[round_])

    first = round_of([True, False, False])
    kept, drawn, stats = fill_step(
        first, draw, questions=[0, 1, 2], want=3, criterion="answer", max_rounds=4
    )
    # Round 0 gave group 0, round 1 its middle group (id 4), round 2 its first (id 6).
    assert sorted({t.group for t in kept}) == [0, 4, 6]
    assert len(kept) == 6 and len(drawn) == 18
    assert [c[0] for c in calls] == [1, 2]
    assert calls[1][1] == [0, 1, 2, 10, 11, 12]  # round 2 avoids what was played
    assert stats == {
        "sampling/rounds": 3.0, "sampling/drawn_groups": 9.0, "sampling/kept_groups": 3.0,
        "sampling/drawn_episodes": 18.0, "sampling/short_of_groups": 0.0,
    }  # fmt: skip

    calls.clear()
    kept, drawn, stats = fill_step(
        first, draw, questions=[0, 1, 2], want=3, criterion="answer", max_rounds=2
    )
    assert len(calls) == 1 and sorted({t.group for t in kept}) == [0, 4]
    assert stats["sampling/short_of_groups"] == 1.0 and stats["sampling/rounds"] == 2.0


def test_the_settings_are_checked_before_any_work():
    def check(**overrides):
        settings = {f"rollout.{k}": v for k, v in overrides.items()}
        TrainConfig(algo="reinforce").with_overrides(settings).validate(check_device=False)

    with pytest.raises(ValueError, match=r"set rollout.group_size >= 2"):
        check(dynamic_sampling="answer", group_size=1)
    with pytest.raises(ValueError, match=r"max_sampling_rounds must be >= 1"):
        check(max_sampling_rounds=0)
    with pytest.raises(ValueError, match="dynamic_sampling"):
        check(dynamic_sampling="sometimes")
    check(dynamic_sampling="reward", group_size=2)  # fine
    with pytest.raises(ValueError, match="dynamic_sampling=off for algo sft"):
        TrainConfig(algo="sft").with_overrides({"rollout.dynamic_sampling": "answer"}).validate(
            check_device=False
        )


@pytest.mark.usefixtures("one_thread")
def test_a_training_step_learns_only_from_groups_with_a_right_and_a_wrong_answer(
    tmp_path, monkeypatch
):
    cfg = TrainConfig(algo="grpo").with_overrides({
        "output_dir": str(tmp_path), "logging.wandb": False, "logging.progress_bar": False,
        "rollout.questions_per_step": 2, "rollout.group_size": 2,
        "rollout.dynamic_sampling": "answer", "rollout.max_sampling_rounds": 5,
        "rollout.max_total_tokens": 16, "optim.lr": 1e-3,
    })  # fmt: skip
    algo = make_algorithm("grpo", load_policy("tiny-random", device="cpu"), None, cfg)
    rounds, learned = [], []

    def scripted(questions, group_size, sampling=None, model=None):
        # The rollout engine, scripted: a question whose index is divisible by 3 gets one
        # right and one wrong answer; the others differ only by format credit (0.1 vs 0).
        rounds.append((sampling.seed, list(questions)))
        out = []
        for g, q in enumerate(questions):
            right = q % 3 == 0
            out += [episode(g, 1.0 if right else 0.1, float(right)), episode(g, 0.0, 0.0)]
        return out

    real_learn = algo.learn_from

    def spy(trajectories):
        learned.append(list(trajectories))
        return real_learn(trajectories)

    monkeypatch.setattr(algo.engine, "collect", scripted)
    algo.learn_from = spy
    metrics = algo.train_step()
    asked = [q for _, qs in rounds for q in qs]
    informative = [q for q in asked if q % 3 == 0]
    assert rounds[0][1] == algo.question_indices(0)  # the step's own questions first
    assert len({seed for seed, _ in rounds}) == len(rounds)  # each round seeded apart
    assert metrics["sampling/rounds"] == len(rounds)
    assert metrics["sampling/drawn_episodes"] == 2 * len(asked)
    assert metrics["sampling/kept_groups"] == min(2, len(informative))
    assert len(asked) == len(set(asked))  # extra rounds draw fresh questions
    # Only right-and-wrong groups reach the update, each with its own group id.
    kept = learned[0]
    assert len(kept) == 2 * min(2, len(informative))
    assert all(t.info["em"] == 1.0 for t in kept[0::2])
    assert len({t.group for t in kept}) == len(kept) // 2
    # The episode metrics describe every episode drawn, not only the kept ones.
    assert metrics["episode/em"] == pytest.approx(len(informative) / (2 * len(asked)))
