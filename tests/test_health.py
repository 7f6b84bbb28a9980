"""Reasoning-health monitors (algorithms/trainer/health.py) and the per-step metrics they
watch (episode_metrics)."""

from __future__ import annotations

from algorithms.buffer import Trajectory
from algorithms.trainer.health import THRESHOLDS, HealthMonitor, Threshold
from algorithms.trainer.metrics import episode_metrics, think_chars, think_metrics


def _healthy(step: int) -> dict[str, float]:
    wiggle = 0.05 * (step % 3)
    return {
        "train/entropy": 0.8 + wiggle,
        "episode/think_chars": 300.0 + 20 * (step % 4),
        "response/generated_tokens": 200.0 + 10 * (step % 2),
        "episode/searches": 2.1 + wiggle,
        "episode/supporting_recall": 0.6 + wiggle,
        "health/flat_group_fraction": 0.3 + wiggle,
        "train/kl": 0.01 * step / 30,
        "train/clipfrac": 0.05,
    }


def _collapsing(step: int) -> dict[str, float]:
    """Healthy for 10 steps, then the think text, searches and entropy decay."""
    m = _healthy(step)
    if step > 10:
        decay = 0.85 ** (step - 10)
        m["train/entropy"] *= decay
        m["episode/think_chars"] *= decay
        m["episode/searches"] = 1.0
        m["health/flat_group_fraction"] = 0.9
    return m


def _run(stream, steps=40):
    monitor = HealthMonitor()
    return [line for step in range(1, steps + 1) for line in monitor.update(step, stream(step))]


def test_a_healthy_stream_does_not_warn():
    assert _run(_healthy) == []


def test_a_collapsing_stream_warns_once_per_crossing():
    lines = _run(_collapsing)
    warned = {line.split("] ", 1)[1].split("=", 1)[0] for line in lines}
    assert warned == {
        "train/entropy",
        "episode/think_chars",
        "episode/searches",
        "health/flat_group_fraction",
    }
    assert len(lines) == 4  # each once, though they stay past their bounds
    searches = next(line for line in lines if "episode/searches" in line)
    assert "[health step 20]" in searches  # patience: 10 steps at one search
    think = next(line for line in lines if "think_chars" in line)
    step = int(think.split("step ", 1)[1].split("]")[0])
    assert 11 <= step <= 16  # well before the stream ends


def test_a_metric_that_recovers_and_crosses_again_warns_again():
    monitor = HealthMonitor([Threshold("train/clipfrac", "above", 0.3)])
    values = [0.1, 0.5, 0.6, 0.1, 0.4]
    lines = [monitor.update(i, {"train/clipfrac": v}) for i, v in enumerate(values)]
    assert [len(x) for x in lines] == [0, 1, 0, 0, 1]


def test_missing_kl_is_silent_and_every_threshold_is_documented():
    import algorithms.trainer.health as health

    assert HealthMonitor().update(1, {"episode/reward": 0.0}) == []
    for t in THRESHOLDS:
        assert f"``{t.key}``" in health.__doc__, t.key


def _trajectory(group, reward, info, turns=()):
    t = Trajectory(prompt_ids=[1, 2], group=group, reward=reward, info=info)
    for ids in turns:
        t.add_model_tokens(ids, [0.0] * len(ids))
        t.add_observation_tokens([9, 9])
    return t


class _CharTokenizer:
    """Token id i is chr(i): enough to decode hand-made turns."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(map(chr, ids))


def _ids(text):
    return [ord(c) for c in text]


def test_episode_metrics_has_recall_flat_fraction_and_think_length():
    trajectories = [
        _trajectory(0, 1.0, {"em": 1.0, "searches": 2, "supporting_recall": 1.0},
                    [_ids("abcd</think><search>q</search>"), _ids("<think>xy</think><answer>")]),
        _trajectory(0, 1.0, {"em": 1.0, "searches": 1, "supporting_recall": 0.5},
                    [_ids("<think>abcdef</think><answer>a</answer>")]),
        _trajectory(1, 0.0, {"searches": 0}, [_ids("no think at all")]),
        _trajectory(1, 0.5, {"searches": 1, "supporting_recall": 0.0}, [_ids("<think>ab")]),
    ]  # fmt: skip
    m = episode_metrics(trajectories)
    assert m["episode/supporting_recall"] == 0.5  # over the episodes that know it
    assert m["health/flat_group_fraction"] == 0.5  # group 0 flat, group 1 not
    assert m["episode/searches"] == 1.0
    assert "episode/think_chars" not in m  # no tokenizer, no decoding
    m = episode_metrics(trajectories, tokenizer=_CharTokenizer())
    assert m["episode/think_chars"] == (4 + 2 + 6 + 0 + 2) / 5  # per model turn


def test_think_chars_rules():
    assert think_chars("plan</think><search>x</search>") == 4  # began in the prefill
    assert think_chars("<think> a </think> b <think>cd</think>") == 3
    assert think_chars("<think>unclosed") == 8
    assert think_chars("<answer>x</answer>") == 0
    assert think_metrics([], _CharTokenizer()) == {}


def test_single_sample_groups_have_no_flat_fraction():
    trajectories = [_trajectory(g, 1.0, {}) for g in range(3)]
    assert "health/flat_group_fraction" not in episode_metrics(trajectories)


def test_the_logger_prints_one_health_line_per_crossing(tmp_path, capsys):
    from algorithms.config import TrainConfig
    from algorithms.trainer.metrics import MetricsLogger

    config = TrainConfig.from_dict({"output_dir": str(tmp_path), "logging": {"wandb": False}})
    logger = MetricsLogger(config)
    for step in range(1, 4):
        logger.log(step, {"train/entropy": 0.01, "episode/reward": 0.0})
    err = capsys.readouterr().err
    assert err.count("warning: [health step 1] train/entropy=0.01") == 1
    assert err.count("[health") == 1
