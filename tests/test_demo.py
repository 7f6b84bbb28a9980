"""`research-env demo --quick` end to end with a tiny model: the report and its parts."""

import re

from research_env.cli import main


def test_demo_quick_writes_report(tmp_path):
    out = tmp_path / "run"
    code = main(
        ["demo", "--quick", "--model", "tiny-random", "--out", str(out),
         "--eval-questions", "2", "--sft-steps", "1", "--steps", "1"]
    )  # fmt: skip
    assert code == 0
    report = (out / "report.md").read_text()
    for row in (
        "direct answer (no search) |",
        "naive RAG (retrieve once) |",
        "search agent: untrained |",
        "search agent: warm start |",
        "search agent: after GRPO |",
    ):
        assert f"| {row}" in report, row
    assert re.search(r"^\| search agent: after GRPO, hops=\d \| 2 \|", report, re.M)
    assert "Path: **warm start + RL**" in report
    assert "## Example transcripts" in report and "Question: " in report
    assert "### search agent: untrained" in report and "(gold: " in report
    for png in ("curves_sft.png", "curves_rl.png"):
        data = (out / png).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000


def test_running_mean_of_the_curves():
    from benchmarks.report import running_mean

    assert running_mean([1.0, 2.0, 3.0, 4.0, 8.0], 3) == [1.0, 1.5, 2.0, 3.0, 5.0]
