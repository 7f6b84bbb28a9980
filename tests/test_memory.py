"""research_app.memory: each stage's own resident peak."""

from __future__ import annotations

import sys

import pytest

from research_app.memory import StagePeaks, peak_mib


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM reset is Linux's")
def test_a_big_stage_then_a_small_one_each_get_their_own_peak():
    peaks = StagePeaks()
    with peaks.stage("big"):
        block = bytearray(300 * 2**20)  # 300 MiB, touched: zero-filled by the allocator
        block[::4096] = b"\x01" * len(block[::4096])
        del block
    with peaks.stage("small"):
        pass
    assert peaks.per_stage
    assert peaks.mib["big"] >= peaks.mib["small"] + 250
    assert peaks.mib["small"] <= peak_mib() + 1
    table = "\n".join(peaks.lines())
    assert "| big |" in table and "reset at the stage's start" in table


def test_give_back_drops_the_gradients_of_a_finished_stage():
    import torch

    from research_app.memory import give_back

    model = torch.nn.Linear(4, 2)
    model(torch.ones(3, 4)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    give_back(model)
    assert all(p.grad is None for p in model.parameters())
    give_back()  # nothing to drop: still collects and trims


def test_head_memory_benchmark_runs_each_variant_in_its_own_process(capsys):
    from benchmarks import head_memory

    head_memory.main(
        ["--model", "tiny-random", "--prompt", "4", "--response", "24", "--train-layers", "1",
         "--rounds", "1", "--variants", "plain", "chunk-64"]
    )  # fmt: skip
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows[1:]] == ["| plain", "| chunk-64"]
    for row in rows[1:]:
        cells = [float(cell.replace(",", "")) for cell in row.strip("| ").split(" | ")[1:]]
        peak, seconds, cpu_seconds = cells
        assert peak > 50 and seconds > 0 and cpu_seconds > 0


def _run_fresh(code: str, **env: str) -> str:
    """``code``'s stdout from a fresh interpreter (torch not yet imported), with ``env``
    added to the environment minus the two cache variables."""
    import os
    import subprocess

    from research_app.memory import KERNEL_CACHES

    clean = {k: v for k, v in os.environ.items() if k not in KERNEL_CACHES}
    done = subprocess.run([sys.executable, "-c", code], env={**clean, **env},
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.strip()


CAP = (
    "import os; from research_app.memory import cap_kernel_caches as c; "
    "{before}print(c(), os.environ.get('ONEDNN_PRIMITIVE_CACHE_CAPACITY'), "
    "os.environ.get('LRU_CACHE_CAPACITY'))"
)


def test_kernel_caches_are_capped_before_torch_and_a_users_setting_wins():
    from research_app.memory import KERNEL_CACHE_CAPACITY

    cap = str(KERNEL_CACHE_CAPACITY)
    assert _run_fresh(CAP.format(before="")) == f"True {cap} {cap}"
    # A capacity the user set is left alone; the other one is still capped.
    assert _run_fresh(CAP.format(before=""), LRU_CACHE_CAPACITY="512") == f"True {cap} 512"
    # Once torch is imported its kernels may exist already: nothing is set, and it says so.
    assert _run_fresh(CAP.format(before="import torch; ")) == "False None None"
