"""The metrics logger: replayed steps are logged once, flat steps warn, output is named."""

from __future__ import annotations

import json

from algorithms.config import TrainConfig
from algorithms.trainer.metrics import MetricsLogger


def _config(tmp_path, **overrides):
    base = {"output_dir": str(tmp_path), "logging.wandb": False, "rollout.questions_per_step": 4}
    return TrainConfig().with_overrides({**base, **overrides})


def _records(tmp_path):
    return [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]


def test_a_resumed_run_replaces_the_records_of_the_steps_it_replays(tmp_path):
    killed = MetricsLogger(_config(tmp_path))
    for step in (1, 2, 3):
        killed.log(step, {"episode/reward": float(step)})
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "episode/rew')  # the kill cut this line short
    resumed = MetricsLogger(_config(tmp_path))  # from the checkpoint of step 1
    resumed.log(2, {"episode/reward": 20.0})
    resumed.log(3, {"episode/reward": 30.0})
    assert [(r["step"], r["episode/reward"]) for r in _records(tmp_path)] == [
        (1, 1.0), (2, 20.0), (3, 30.0),
    ]  # fmt: skip


def test_a_final_evaluation_of_a_finished_run_keeps_its_training_record(tmp_path):
    MetricsLogger(_config(tmp_path)).log(2, {"episode/reward": 1.0})
    MetricsLogger(_config(tmp_path)).log(2, {"eval/reward": 0.5})
    assert _records(tmp_path) == [
        {"step": 2, "episode/reward": 1.0},
        {"step": 2, "eval/reward": 0.5},
    ]


def test_resume_from_drops_later_steps(tmp_path):
    logger = MetricsLogger(_config(tmp_path))
    for step in (1, 2, 3):
        logger.log(step, {"x": 1.0})
    assert logger.resume_from(1) == 2
    assert [r["step"] for r in _records(tmp_path)] == [1]


def test_mostly_flat_steps_warn_loudly(tmp_path, capsys):
    logger = MetricsLogger(_config(tmp_path, **{"logging.every": 0}))
    assert "output: " + str(tmp_path.resolve()) in capsys.readouterr().err
    logger.log(1, {"filter/zero_variance_groups": 1.0, "filter/kept_episodes": 15.0})
    assert "warning" not in capsys.readouterr().err
    logger.log(2, {"filter/zero_variance_groups": 3.0, "filter/kept_episodes": 5.0})
    err = capsys.readouterr().err
    assert "warning" in err and "3 of 4 groups" in err
    logger.log(3, {"filter/zero_variance_groups": 4.0, "train/skipped_steps": 1.0})
    assert "update skipped" in capsys.readouterr().err


def test_wandb_follows_wandb_login_rules(tmp_path, monkeypatch):
    """A user logged in with ``wandb login`` (a netrc entry, no WANDB_API_KEY) gets online
    runs; it was offline unless WANDB_API_KEY was set."""
    from algorithms.trainer.metrics import wandb_mode

    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    netrc = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc))
    assert wandb_mode() == "offline"  # no key anywhere
    netrc.write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    netrc.chmod(0o600)
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert wandb_mode() == "offline"  # the key is for another host
    monkeypatch.setenv("WANDB_API_KEY", "k")
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"
