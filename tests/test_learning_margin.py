"""benchmarks.learning_margin, the script behind the learning tests' thresholds: it runs a
recipe in a fresh process limited to a kernel set, and that limit takes effect there."""

from __future__ import annotations

import pytest

from benchmarks.learning_margin import broken_update, main


def test_a_run_limited_to_avx2_kernels_reports_them(capsys):
    assert main(["--recipes", "grpo", "--seeds", "0", "--settings", "avx2", "--steps", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| grpo")]
    assert len(rows) == 1 and "| avx2 (AVX2) | none | 0: " in rows[0], rows


def test_an_unknown_mutation_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown mutation 'flip'; choose from none, sign"):
        with broken_update("flip"):
            pass
