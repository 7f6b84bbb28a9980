"""Training curves as PNG: one panel per metric over training steps, with a running mean
over noisy RL metrics. ``research-env train`` writes ``<out>/curves.png`` from its
``metrics.jsonl`` at the end of a run (a resumed run redraws it whole), and the demo's
report draws its stages with the same :func:`plot_curves`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CURVES = (
    ("episode/reward", "reward"),
    ("episode/em", "EM"),
    ("episode/searches", "searches per episode"),
    ("episode/format_valid", "format-valid rate"),
)
SFT_CURVES = (("train/nll", "negative log-likelihood"), ("train/grad_norm", "gradient norm"))
SMOOTH = 3  # steps in the running mean drawn over noisy per-step RL metrics
CURVES_FILE = "curves.png"


def running_mean(values: list[float], window: int) -> list[float]:
    """Mean of the last ``window`` values at each step (fewer at the start)."""
    return [sum(values[max(0, i + 1 - window) : i + 1]) / (i + 1 - max(0, i + 1 - window))
            for i in range(len(values))]  # fmt: skip


def plot_curves(
    metrics: list[dict[str, float]],
    path: Path,
    title: str,
    curves: Sequence[tuple[str, str]] = CURVES,
) -> Path | None:
    """One panel per curve over training steps; None when there is nothing to plot."""
    if not metrics:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.2), squeeze=False)
    steps = [m.get("step", i + 1) for i, m in enumerate(metrics)]
    for ax, (key, label) in zip(axes[0], curves, strict=True):
        values = [m.get(key, float("nan")) for m in metrics]
        ax.plot(steps, values, marker="o", linewidth=1, alpha=0.45, label="per step")
        if len(values) >= 2 * SMOOTH:
            ax.plot(steps, running_mean(values, SMOOTH), linewidth=2.2,
                    label=f"running mean of {SMOOTH}")  # fmt: skip
            ax.legend(fontsize=7)
        ax.set_title(label)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def read_step_metrics(path: Path) -> list[dict[str, Any]]:
    """The training steps' records of a ``metrics.jsonl`` (lines cut short by a kill and
    evaluation-only records skipped), in step order, the last record of a step winning."""
    by_step: dict[int, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "step" in record and "train/lr" in record:
                by_step[int(record["step"])] = record
    return [by_step[s] for s in sorted(by_step)]


def write_run_curves(output_dir: str | Path, algo: str) -> Path | None:
    """``<output_dir>/curves.png`` from its ``metrics.jsonl`` (SFT draws its loss, RL its
    episode metrics); None when no step was logged."""
    out = Path(output_dir)
    metrics = read_step_metrics(out / "metrics.jsonl")
    curves = SFT_CURVES if algo == "sft" else CURVES
    return plot_curves(metrics, out / CURVES_FILE, f"{algo} training ({out.name})", curves)
