"""``research-env train`` refuses bad settings before any heavy work, with one line, and
resumes past damage: a damaged newest checkpoint, a killed save, replayed metrics.

Each refused case fails before the model loads: ``load_policy`` is replaced by a function
that fails the test, so a check that comes too late shows up as that failure.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from algorithms.trainer import checkpoint as ckpt
from research_app.cli import main

TINY = [
    "--model", "tiny-random", "--no-wandb",
    "--set", "rollout.max_turn_tokens=6", "--set", "env.max_turns=1",
    "--set", "rollout.questions_per_step=1", "--set", "rollout.group_size=2",
    "--set", "logging.progress_bar=false",
]  # fmt: skip


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the command gets as far as loading a model."""
    import algorithms.policy

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the settings were checked")

    monkeypatch.setattr(algorithms.policy, "load_policy", refuse)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--steps", "-5"], "trainer.steps"),
        (["--steps", "0"], "trainer.steps"),
        (["--algo", "grpo", "--set", "rollout.group_size=1"], "group_size >= 2"),
        (["--set", "trainer.epochs=0"], "trainer.epochs"),
        (["--set", "checkpoint.every=-1"], "checkpoint.every"),
        (["--set", "rollout.max_turn_tokens=0"], "max_turn_tokens"),
        (["--set", "rollout.max_total_tokens=-1"], "max_total_tokens"),
        (["--set", "rollout.questions_per_step=0"], "questions_per_step"),
        (["--set", "trainer.micro_batch_size=0"], "micro_batch_size"),
        (["--device", "cuda:7"], "cuda:7"),
        (["--set", "env.reward=nope"], "unknown reward"),
        (["--set", "env.template=nope"], "unknown template"),
        (["--dataset", "no/such/dataset"], "unknown dataset"),
        (["--split", "nope"], "no split 'nope'"),
        (["--set", "env.top_k=0"], "env.top_k"),
        (["--set", "rollout.temperature=0"], "rollout.temperature"),
        (["--set", "optim.lr=-1"], "optim.lr"),
        (["--retriever", "nope"], "unknown retriever"),
        (["--algo", "sft", "--from", "no-such-file.jsonl"], "sft.demonstrations"),
    ],
)
def test_bad_settings_are_one_line_errors_before_the_model_loads(
    extra, message, tmp_path, capsys, no_model
):
    if "cuda:7" in extra and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    code = main(["train", *TINY, "--out", str(tmp_path / "run"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "final").exists()


def test_invalid_yaml_names_the_file_and_line(tmp_path, capsys, no_model):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  steps: 3\n  epochs: [1\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "invalid YAML" in err and "line" in err


def test_a_dead_retrieval_server_fails_at_start(tmp_path, capsys, no_model):
    url = "http://127.0.0.1:9"  # the discard port: nothing listens
    assert main(["train", *TINY, "--retriever", url, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "probe query" in err and url in err and len(err.strip().splitlines()) == 1


class _EmptyAnswers(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = json.dumps({"result": [[]]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_server_with_no_documents_fails_at_start(tmp_path, capsys, no_model):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EmptyAnswers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/retrieve"
        code = main(["train", *TINY, "--retriever", url, "--out", str(tmp_path / "run")])
    finally:
        server.shutdown()
    err = capsys.readouterr().err
    assert code == 2 and "no documents" in err


def _steps(out):
    return [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_resume_skips_a_damaged_checkpoint_and_replays_cleanly(tmp_path, capsys):
    out = tmp_path / "run"
    common = [*TINY, "--out", str(out), "--set", "checkpoint.keep_last=5"]
    run = ["train", *common, "--algo", "reinforce", "--set", "checkpoint.every=1"]
    assert main([*run, "--steps", "2", "--set", "checkpoint.export_final=false"]) == 0
    curves = out / "curves.png"  # train draws the demo's curves, at the end of every run
    assert curves.read_bytes().startswith(b"\x89PNG")
    drawn = curves.stat().st_mtime_ns
    # Step 2's trainer.pt was cut short, and a later save was killed half-way.
    state = ckpt.step_dir(out, 2) / ckpt.TRAINER_STATE
    state.write_bytes(state.read_bytes()[:100])
    staging = out / ckpt.CHECKPOINTS_DIR / ".step-000003.x1y2.tmp"
    staging.mkdir()
    capsys.readouterr()

    assert main(["train", "--out", str(out), "--resume", "--steps", "3"]) == 0
    err = capsys.readouterr().err
    assert "step-000002" in err and "trainer.pt" in err and "resuming reinforce" in err
    assert "from " + str(ckpt.step_dir(out, 1)) in err
    assert not staging.exists()
    assert _steps(out) == [1, 2, 3]  # step 2 was replayed, and logged once
    assert ckpt.latest_checkpoint(out).name == "step-000003"
    assert curves.stat().st_mtime_ns != drawn and "curves in" in err  # redrawn on resume


def test_resume_of_a_finished_run_says_nothing_was_trained(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", *TINY, "--algo", "reinforce", "--out", str(out), "--steps", "1"]
    assert main([*args, "--set", "checkpoint.every=1"]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume"]) == 0
    assert "nothing to train" in capsys.readouterr().err
    assert _steps(out) == [1]


def test_checkpoint_every_zero_saves_at_the_end(tmp_path):
    out = tmp_path / "run"
    args = ["train", *TINY, "--algo", "reinforce", "--out", str(out), "--steps", "2"]
    assert main([*args, "--set", "checkpoint.every=0"]) == 0
    assert ckpt.latest_checkpoint(out).name == "step-000002"
    assert (out / "final" / "config.json").exists()


def test_reset_with_a_non_integer_index_is_a_clear_error(small_env):
    for bad in (None, "3", 2.5, True):
        with pytest.raises(ValueError, match="'index' must be an integer"):
            small_env.reset(options={"index": bad})
    import numpy as np

    assert small_env.reset(options={"index": np.int64(1)})[1]["index"] == 1


def test_eval_against_a_dead_retrieval_server_is_one_line(capsys):
    argv = ["eval", "--policy", "oracle", "--retriever", "http://127.0.0.1:9", "--limit", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "retrieval server http://127.0.0.1:9" in err and "Traceback" not in err


def test_gymnasium_checker_after_a_failed_first_reset_is_what_the_readme_says():
    """README, Troubleshooting: Gymnasium 1.4's passive checker breaks every step after a
    first reset that raised; the bare env and an env made without the checker recover."""
    import gymnasium as gym

    for disable in (True, False):
        env = gym.make("ReSearch-MultiHop-v0", disable_env_checker=disable)
        with pytest.raises(ValueError, match="out of range"):
            env.reset(options={"index": 10**9})
        env.reset(seed=0)
        if disable:
            assert env.step("<search>x</search>")[2] is False
        else:
            try:
                env.step("<search>x</search>")
            except TypeError as err:  # Gymnasium's own bug, documented in the README
                assert "NoneType" in str(err)
            env.unwrapped.reset(seed=0)
            assert env.unwrapped.step("<search>x</search>")[2] is False


def test_resuming_a_named_damaged_checkpoint_points_to_an_intact_one(tmp_path, capsys):
    from algorithms.grpo import GRPO
    from algorithms.policy import load_policy

    out = tmp_path / "run"
    algo = GRPO(load_policy("tiny-random", device="cpu"), None)
    algo.config.output_dir = str(out)
    good = algo.save(ckpt.step_dir(out, 1))
    bad = algo.save(ckpt.step_dir(out, 2))
    (bad / "config.yaml").write_text("algo: [\n")
    capsys.readouterr()
    assert main(["train", "--resume", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "config.yaml" in err and str(good) in err and len(err.strip().splitlines()) == 1


def test_a_failed_launch_leaves_no_false_warning_and_runs_get_their_own_folder(
    tmp_path, monkeypatch, capsys
):
    """A launch that fails after writing fingerprint.json (here: at the model) does not make
    the next run in that folder warn "fingerprint changed"; without --out, train writes to
    runs/<algo>-<time> (like eval), not one shared runs/default."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert main(["train", *TINY[2:], "--model", "no/such-model", "--out", str(out)]) == 2
    assert (out / "fingerprint.json").exists()
    capsys.readouterr()
    fixed = ["train", *TINY, "--algo", "reinforce", "--steps", "1", "--set", "env.top_k=2"]
    assert main([*fixed, "--out", str(out)]) == 0
    assert "fingerprint changed" not in capsys.readouterr().err
    assert main([*fixed, "--set", "checkpoint.export_final=false"]) == 0
    assert [p.name.startswith("reinforce-") for p in (tmp_path / "runs").iterdir()] == [True]
