"""The ablation's outputs: ``table.md``/``table.json`` (mean and 95% interval across seeds,
overall and per hop count) and ``curves.png`` (per-step metrics, mean over seeds with a
min-max band). Read from the run directories alone, so a table can be rebuilt any time."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from research_app.ablate_changes import changes, hop_change_lines, hop_change_table, signed
from research_env.intervals import mean_interval, rate_half_width

# Metric key in eval.json -> column title.
TABLE_METRICS = {"em": "EM", "f1": "F1", "searches": "searches",
                 "supporting_recall": "supporting recall"}  # fmt: skip


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _groups(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{"all": overall, "hops=2": ..., ...}`` from one eval.json."""
    groups = {"all": result["overall"]}
    for hops, values in sorted(result.get("by_hops", {}).items(), key=lambda kv: str(kv[0])):
        groups[f"hops={hops}"] = values
    return groups


def collect(out: Path, variants: Sequence[Any], seeds: int) -> tuple[dict[str, Any], list[str]]:
    """Per row (baseline, then each variant): metric values per group over the done runs."""
    rows: dict[str, Any] = {}
    missing: list[str] = []
    baseline = _load(out / "baseline" / "eval.json")
    if baseline is not None:
        rows["baseline"] = {"algo": None, "overrides": {}, "seeds": [], "evals": [baseline]}
    for v in variants:
        evals, done_seeds = [], []
        for seed in range(seeds):
            run = out / v.name / f"seed-{seed}"
            result = _load(run / "eval.json") if (run / "done.json").exists() else None
            if result is None:
                missing.append(f"{v.name}/seed-{seed}")
                continue
            evals.append(result)
            done_seeds.append(seed)
        rows[v.name] = {"algo": v.algo, "overrides": v.overrides, "seeds": done_seeds,
                        "evals": evals}  # fmt: skip
    for row in rows.values():
        groups: dict[str, dict[str, Any]] = {}
        for result in row.pop("evals"):
            for group, values in _groups(result).items():
                cell = groups.setdefault(group, {"n": values.get("n", 0.0)})
                for key in TABLE_METRICS:
                    if values.get(key) is not None:
                        cell.setdefault(key, {"values": []})["values"].append(values[key])
        for cell in groups.values():
            for key in TABLE_METRICS:
                if key in cell:
                    mean, half = mean_interval(cell[key]["values"])
                    cell[key] |= {"mean": mean, "ci95": half}
            em = cell.get("em", {}).get("mean")
            cell["one_run_em_ci95"] = rate_half_width(em, cell["n"]) if em is not None else None
        row["groups"] = groups
    return rows, missing


def em_changes(out: Path, variants: Sequence[Any], seeds: int) -> dict[str, Any]:
    """Each variant's EM change from the starting model on all questions, across seeds and
    paired over questions (:func:`research_app.ablate_changes.change`). ``verdict`` is
    "gain" or "drop" when the across-seed interval excludes 0, else "inside" (or "one seed"
    when no across-seed interval exists)."""
    return changes(out, [v.name for v in variants], seeds, "em")


_VERDICTS = {
    "gain": "gain beyond the across-seed interval",
    "drop": "drop beyond the across-seed interval",
    "inside": "inside the across-seed interval: not established",
    "one seed": "one seed: no across-seed interval",
}


def _change_lines(changes: dict[str, Any]) -> list[str]:
    if not changes:
        return []
    lines = ["", "## EM change from the starting model", "",
             "Across seeds: each seed's EM minus the baseline's, mean ± 95% interval over seeds "
             "(the spread of training). Paired: per question, the seeds' mean EM minus the "
             "baseline's, mean ± 95% interval over questions (the noise of the question "
             "sample).", "",
             "| | seeds | EM change, across seeds | EM change, paired over questions | verdict |",
             "|---|---:|---:|---:|---|"]  # fmt: skip
    for name, c in changes.items():
        lines.append(f"| {name} | {c['seeds']} | {signed(c['across_seeds'])} | "
                     f"{signed(c['paired'])} | {_VERDICTS[c['verdict']]} |")  # fmt: skip
    return lines


def write_table(out: Path, variants: Sequence[Any], seeds: int, subset: dict[str, Any]) -> dict:
    """Write ``table.json`` and ``table.md``; returns the JSON."""
    rows, missing = collect(out, variants, seeds)
    em_change = em_changes(out, variants, seeds)
    base = rows.get("baseline", {}).get("groups", {}).get("all", {})
    base_em = base.get("em", {}).get("mean")
    n = subset.get("questions")
    half = rate_half_width(base_em, len(_load(out / "subset.json")["indices"])) if (
        base_em is not None) else None  # fmt: skip
    by_hops = hop_change_table(out, [v.name for v in variants], seeds)
    table = {"subset": subset, "baseline_em_one_run_ci95": half, "rows": rows,
             "em_change": em_change, "change_by_hops": by_hops,
             "missing_runs": missing}  # fmt: skip
    (out / "table.json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")

    lines = ["# Ablation", ""]
    lines.append(
        f"Every run is scored on the same {n} questions of the {subset.get('split')} split "
        f"of {subset.get('dataset')} (seed {subset.get('seed')}, listed in subset.json), "
        "greedy. Cells: mean ± 95% interval across seeds (Student t); the baseline row is "
        "the starting model, scored once."
    )
    if half is not None:
        count = len(_load(out / "subset.json")["indices"])
        lines.append(
            f"\nAt the baseline's EM of {base_em:.3f}, one run's EM on these {count} questions "
            f"has a 95% interval half-width of ±{half:.3f} (Wilson; at most "
            f"±{rate_half_width(0.5, count):.3f}, at EM 0.5); the last column gives it at "
            "each row's EM. Differences between single runs smaller than that are noise."
        )
    if missing:
        lines.append(f"\nNot done yet: {', '.join(missing)}.")
    group_names = list(dict.fromkeys(g for r in rows.values() for g in r["groups"]))
    for group in group_names:
        title = "All questions" if group == "all" else group.replace("hops=", "") + " hops"
        lines += ["", f"## {title}", "",
                  "| | seeds | " + " | ".join(TABLE_METRICS.values()) + " | one-run EM ± |",
                  "|---|---:|" + "---:|" * (len(TABLE_METRICS) + 1)]  # fmt: skip
        for name, row in rows.items():
            cell = row["groups"].get(group)
            if cell is None:
                continue
            seeds_done = len(row["seeds"]) if name != "baseline" else 1
            values = [_format(cell.get(k)) for k in TABLE_METRICS]
            one = cell.get("one_run_em_ci95")
            lines.append(f"| {name} | {seeds_done} | " + " | ".join(values)
                         + f" | {'' if one is None else f'±{one:.3f}'} |")  # fmt: skip
    lines += _change_lines(em_change) + hop_change_lines(by_hops)
    (out / "table.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return table


def _format(stat: dict[str, Any] | None) -> str:
    if not stat:
        return ""
    if stat.get("ci95") is None:
        return f"{stat['mean']:.3f}"
    return f"{stat['mean']:.3f} ± {stat['ci95']:.3f}"


def curve_panels() -> list[tuple[str, str, float | None]]:
    """(metric, title, threshold line) of each panel: the score, then the health metrics."""
    from algorithms.trainer.health import THRESHOLDS

    panels: list[tuple[str, str, float | None]] = [
        ("episode/reward", "reward", None),
        ("episode/em", "EM (training episodes)", None),
    ]
    titles = {"train/entropy": "policy entropy (nats/token)",
              "episode/think_chars": "<think> characters per turn",
              "response/generated_tokens": "generated tokens per episode",
              "episode/searches": "searches per episode",
              "episode/supporting_recall": "supporting-document recall",
              "health/flat_group_fraction": "flat (skipped) group fraction",
              "train/kl": "KL to the start policy", "train/clipfrac": "clip fraction"}  # fmt: skip
    for t in THRESHOLDS:
        line = t.value if t.kind in ("below", "above") else None
        panels.append((t.key, titles.get(t.key, t.key), line))
    return panels


def write_curves(out: Path, variants: Sequence[Any], seeds: int) -> Path | None:
    """``curves.png``: for each panel, each variant's mean over seeds against training
    episodes, with a band from the lowest to the highest seed; dashed: the health
    threshold. None when no run is done."""
    series: dict[str, list[tuple[float, dict[int, dict[str, float]]]]] = {}
    for v in variants:
        for seed in range(seeds):
            run = out / v.name / f"seed-{seed}"
            done = _load(run / "done.json")
            if done is None or not (run / "metrics.jsonl").exists():
                continue
            per_step = done["episodes"] / max(1, done["steps"])
            records: dict[int, dict[str, Any]] = {}
            for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
                if line.strip():
                    record = json.loads(line)
                    records.setdefault(int(record["step"]), {}).update(record)
            series.setdefault(v.name, []).append((per_step, records))
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = curve_panels()
    cols = 4
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (key, title, threshold) in zip(axes.flat, panels, strict=False):
        for name, runs in series.items():
            steps = sorted({s for _, records in runs for s in records})
            xs, means, lows, highs = [], [], [], []
            for step in steps:
                values = [r[step][key] for _, r in runs if key in r.get(step, {})]
                values = [float(v) for v in values if v is not None]
                if values:
                    xs.append(step * runs[0][0])
                    means.append(sum(values) / len(values))
                    lows.append(min(values))
                    highs.append(max(values))
            if xs:
                (line,) = ax.plot(xs, means, linewidth=1.8, marker="o", markersize=3, label=name)
                ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.2)
        if threshold is not None:
            ax.axhline(threshold, color="grey", linestyle="--", linewidth=1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("training episodes", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper right", fontsize=8)
    fig.suptitle("mean over seeds, band: lowest to highest seed; dashed: health threshold")
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
