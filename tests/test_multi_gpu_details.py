"""The details of a multi-GPU run that a CPU can check: the process group's timeout,
counters summed over ranks, and a resume that sees another number of GPUs."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from algorithms.trainer import checkpoint as ckpt
from algorithms.trainer import distributed
from algorithms.trainer.loop import COUNTERS


def _ranks_report(rank: int, world: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        mine = {
            "filter/kept_episodes": [3.0, 5.0][rank],
            "filter/zero_variance_groups": [1.0, 0.0][rank],
            "perf/update_tokens": [100.0, 60.0][rank],
            "train/loss": [1.0, 3.0][rank],
            "train/skipped_updates": 1.0,  # decided on all-reduced values: equal everywhere
        }
        merged = distributed.mean_over_ranks(mine, summed=COUNTERS)
        torch.save(merged, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_counts_of_each_ranks_share_are_summed_and_statistics_averaged(tmp_path):
    mp.spawn(_ranks_report, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        assert torch.load(tmp_path / f"rank{rank}.pt") == {
            "filter/kept_episodes": 8.0,
            "filter/zero_variance_groups": 1.0,
            "perf/update_tokens": 160.0,
            "train/loss": 2.0,
            "train/skipped_updates": 1.0,
        }


def test_the_summed_names_are_the_ones_a_step_reports(tmp_path):
    from test_algorithms import config, policy, two_groups

    from algorithms.registry import make_algorithm
    from algorithms.trainer.dynamic_sampling import fill_step

    algo = make_algorithm("grpo", policy(), None, config("grpo", tmp_path))
    reported = set(algo.learn_from(two_groups())) | {"perf/rollout_tokens_per_s"}
    # What a step under rollout.dynamic_sampling adds.
    _, _, sampled = fill_step(
        [], lambda r, p: ([], []), questions=[], want=0, criterion="reward", max_rounds=1
    )
    assert COUNTERS <= reported | set(sampled)


def test_the_process_group_waits_long_enough_for_rank_0_and_is_configurable(monkeypatch):
    calls: list[dict] = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed.init_from_environment("cpu") == "cpu"
    assert calls[-1] == {"backend": "gloo", "timeout": timedelta(minutes=120)}
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "7.5")
    distributed.init_from_environment("cpu")
    assert calls[-1]["timeout"] == timedelta(minutes=7.5)
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match=r"RESEARCH_ENV_DIST_TIMEOUT_MINUTES.*> 0.*'soon'"):
        distributed.init_from_environment("cpu")


@pytest.mark.parametrize("visible", [1, 3])
def test_a_resume_restores_the_cuda_rng_of_the_gpus_it_sees(visible, monkeypatch, caplog):
    """A checkpoint saved with 2 GPUs visible, resumed with 1 (or 3): torch's
    ``set_rng_state_all`` would index a GPU that is not there."""
    saved = ckpt.capture_rng_state()
    saved["cuda"] = [
        torch.full((16,), 1, dtype=torch.uint8),
        torch.full((16,), 2, dtype=torch.uint8),
    ]
    restored: list[tuple[int, int]] = []

    def set_rng_state(state, device):
        assert 0 <= device < visible, f"GPU {device} is not visible"
        restored.append((int(state[0]), device))

    def set_rng_state_all(states):
        for index, state in enumerate(states):
            set_rng_state(state, index)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", set_rng_state_all)
    ckpt.restore_rng_state(saved)
    assert restored == [(1, 0), (2, 1)][:visible]
    assert f"2 GPUs and {visible} are visible" in caplog.text
