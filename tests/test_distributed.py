"""Data-parallel training on this CPU: two Gloo ranks in one machine.

Two ranks that each update on half of a batch (one GRPO group each) must end with
identical parameters, equal to one process updating on the whole batch (same seed) up to
float summation order; a checkpoint written by two ranks resumes in one process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5  # max |difference| of a parameter after one update, 2 ranks vs 1 process


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _update_on(trajectories, out_dir, rank_count: int):
    from test_algorithms import config, policy

    from algorithms.registry import make_algorithm

    torch.manual_seed(0)
    cfg = config("grpo", out_dir, **{"grpo.kl_coef": 0.001, "trainer.micro_batch_size": 1})
    algo = make_algorithm("grpo", policy(), None, cfg)
    metrics = algo.learn_from(trajectories)
    params = torch.cat([p.detach().flatten() for p in algo.policy.model.parameters()])
    return params, metrics


def _rank_main(rank: int, world: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        from test_algorithms import two_groups

        mine = [t for t in two_groups() if t.group == rank]  # one whole group per rank
        params, metrics = _update_on(mine, Path(out) / f"rank{rank}", world)
        torch.save({"params": params, "metrics": metrics}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_ranks_update_like_one_process_on_the_whole_batch(tmp_path):
    from test_algorithms import two_groups

    mp.spawn(_rank_main, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert torch.equal(ranks[0]["params"], ranks[1]["params"])

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single, metrics = _update_on(two_groups(), tmp_path / "single", 1)
    finally:
        torch.set_num_threads(threads)
    moved = (single - ranks[0]["params"]).abs().max()
    assert float(moved) < TOLERANCE
    # The ranks report the whole batch's loss and grad norm, as one process does.
    for key in ("train/loss", "train/grad_norm", "train/entropy"):
        assert ranks[0]["metrics"][key] == pytest.approx(metrics[key], rel=1e-4, abs=1e-6), key


@pytest.mark.slow
def test_torchrun_trains_two_ranks_and_resumes_in_one_process(tmp_path):
    out = tmp_path / "run"
    common = [
        "train", "--algo", "grpo", "--model", "tiny-random", "--out", str(out), "--no-wandb",
        "--set", "rollout.questions_per_step=2", "--set", "rollout.group_size=2",
        "--set", "rollout.max_turn_tokens=6", "--set", "env.max_turns=1",
        "--set", "grpo.entropy_coef=0.1", "--set", "optim.lr=0.01",
        "--set", "logging.progress_bar=false", "--set", "checkpoint.every=1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                "--master-port", str(_free_port()), "-m", "research_app.cli"]  # fmt: skip
    done = subprocess.run(
        [*torchrun, *common, "--steps", "2"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoints = sorted((out / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["step-000001", "step-000002"]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # rank 0 alone logs

    resume = [sys.executable, "-m", "research_app.cli", "train", "--out", str(out),
              "--resume", "--steps", "3", "--no-wandb"]  # fmt: skip
    done = subprocess.run(resume, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "checkpoints" / "step-000003").exists()
