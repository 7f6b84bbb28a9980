"""``research-env train --model tiny-random`` with nothing else set finishes a step in
seconds (the general defaults let the random model's never-ending turns run 256 tokens
each, minutes a step), says which settings it chose, and prints no shard-writing bars."""

import json

import yaml

from research_app.cli import main


def train(tmp_path, capfd, *extra):
    out = tmp_path / "run"
    code = main(["train", "--model", "tiny-random", "--steps", "1", "--out", str(out),
                 "--no-wandb", *extra])  # fmt: skip
    captured = capfd.readouterr()
    return code, out, captured.out + captured.err


def saved_rollout(out):
    config = yaml.safe_load((out / "checkpoints" / "step-000001" / "config.yaml").read_text())
    return config["rollout"]


def test_one_step_with_only_the_model_named_completes_and_says_what_it_chose(tmp_path, capfd):
    code, out, text = train(tmp_path, capfd)
    assert code == 0
    lines = [line for line in text.splitlines() if line.startswith("tiny-random: using")]
    assert len(lines) == 1
    assert "rollout.max_turn_tokens=32" in lines[0]
    rollout = saved_rollout(out)
    assert rollout["max_turn_tokens"] == 32
    assert rollout["questions_per_step"] * rollout["group_size"] <= 4
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1]["step"] == 1
    assert (out / "final" / "model.safetensors").exists()
    # Checkpoint and export are written without transformers' progress bars.
    assert "Writing model shards" not in text


def test_what_the_user_sets_wins(tmp_path, capfd):
    code, out, text = train(
        tmp_path, capfd, "--set", "rollout.max_turn_tokens=8", "--set", "rollout.group_size=3"
    )
    assert code == 0
    (line,) = [line for line in text.splitlines() if line.startswith("tiny-random: using")]
    assert "max_turn_tokens" not in line and "group_size" not in line
    assert "rollout.questions_per_step=2" in line
    rollout = saved_rollout(out)
    assert (rollout["max_turn_tokens"], rollout["group_size"]) == (8, 3)
