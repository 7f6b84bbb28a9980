"""The GPU check script runs its whole path on CPU too (the suite has no GPU)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def test_gpu_check_runs_on_cpu_with_the_tiny_shape(tmp_path, capsys):
    from benchmarks.gpu_check import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(["--device", "cpu", "--shape", "tiny", "--dtype", "float32",
                     "--out", str(tmp_path), "--json", str(tmp_path / "figures.json")])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    out = capsys.readouterr().out
    assert "gpu_check passed" in out and "update_tokens_per_s" in out
    assert (tmp_path / "run" / "checkpoints" / "step-000002" / "trainer.pt").exists()


def test_gpu_check_refuses_cuda_without_a_device():
    from benchmarks.gpu_check import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit):
        main(["--device", "cuda"])
