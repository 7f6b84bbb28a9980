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


def test_the_full_check_writes_one_json_with_every_section(tmp_path, monkeypatch, capsys):
    """``--full`` at tiny shapes on CPU: every section runs and passes (the training path,
    which the test above runs, is stubbed here to keep the suite quick)."""
    import json

    from benchmarks import gpu_check
    from benchmarks.gpu_figures import SECTIONS

    monkeypatch.setattr(gpu_check, "run_check", lambda **kwargs: {"steps": 2.0})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = gpu_check.main(["--full", "--device", "cpu", "--json", str(tmp_path / "g.json")])
    finally:
        torch.set_num_threads(threads)
    figures = json.loads((tmp_path / "g.json").read_text())
    assert code == 0 and figures["passed"], figures
    assert set(SECTIONS) | {"versions", "training_path"} <= set(figures)
    assert all("error" not in figures[name] for name in SECTIONS)
    assert figures["bf16_learning"]["masters_moved_fraction"] > 0.99
    assert figures["parity"]["float32"]["logprob_max_abs_diff"] == 0.0  # CPU against CPU
    assert (
        figures["decode"]["ours_tokens_per_s"] > 0 and figures["update"]["float32_tokens_per_s"] > 0
    )
    assert abs(figures["planner"]["tiny"]["error_pct"]) < 50
    assert '"size": "tiny"' in capsys.readouterr().out
