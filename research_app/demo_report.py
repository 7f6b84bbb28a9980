"""The demo's report: a results table, training curves as PNG, example transcripts and a
link to the token view (``view.html``, :mod:`research_app.view`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from algorithms.trainer.curves import CURVES, SFT_CURVES, plot_curves
from research_env.metrics import markdown_table

COLUMNS = ("n", "em", "em_ci95", "f1", "format_valid", "searches", "supporting_recall", "reward")
HOP_COLUMNS = ("n", "em", "f1", "format_valid", "searches", "supporting_recall", "reward")


# The reference result the report quotes: the multi-seed ablation's section of RESULTS.md.
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "RESULTS.md"
REFERENCE_HEADING = "## Multi-seed ablation: GRPO, PPO and REINFORCE after one warm start"


def results_section(path: Path, heading: str) -> str | None:
    """The section of a markdown file from ``heading`` to the next heading of the same
    level (None when the file or the heading is missing, e.g. in an installed wheel)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    lines = text.splitlines()
    try:
        start = lines.index(heading)
    except ValueError:
        return None
    level = heading.split(" ", 1)[0] + " "
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(level)),
               len(lines))  # fmt: skip
    return "\n".join(lines[start:end]).strip()


def demote_headings(markdown: str) -> list[str]:
    """``markdown``'s lines with every heading one level down (lines inside code fences,
    such as shell comments, left alone)."""
    out, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        out.append("#" + line if line.startswith("#") and not fenced else line)
    return out


def write_report(
    out: Path,
    *,
    stages: list[Any],
    curves: dict[str, list[dict[str, float]]],
    settings: dict,
    view: Path | None = None,
    change: Any = None,
    memory: list[str] | None = None,
    by_hops: list[str] | None = None,
) -> Path:
    """Write ``out/report.md`` (and its PNGs); return its path. ``view``: the token view
    page to link (a path inside ``out``); ``change``: the RL stage's paired EM change
    (:class:`research_app.demo.Change`), said in words under the table; ``memory``: the
    per-stage peak table (:meth:`research_app.memory.StagePeaks.lines`); ``by_hops``: RL's
    change in EM and searches per hop count (:func:`research_app.demo_change.hop_change_lines`)."""
    lines = ["# ReSearch-Gym demo report", ""]
    path_name = "warm start + RL" if settings.get("warm_start") else "pure RL (no warm start)"
    lines += [f"Path: **{path_name}**. Settings: "
              + ", ".join(f"{k}={v}" for k, v in settings.items()), ""]  # fmt: skip
    lines += ["## Results on the dev slice (greedy decoding)", ""]
    lines.append(markdown_table({s.name: s.overall for s in stages}, COLUMNS))
    lines += ["", "*em_ci95*: half-width of a 95% confidence interval for EM on this many "
              "questions (half the Wilson interval): differences smaller than that are noise.",
              ""]  # fmt: skip
    untrained, turn = settings.get("untrained_turn_tokens"), settings.get("turn_tokens")
    if untrained is not None and turn is not None and untrained != turn:
        lines += [f"The untrained agent's turns were cut at {untrained} tokens (every other "
                  f"row: {turn}): an untrained model rarely closes a tag, so its turns run to "
                  "whatever budget they get, and its row only shows where the agent starts "
                  f"(`--untrained-turn-tokens {turn}` scores it like the others).", ""]  # fmt: skip
    if change is not None:
        lines += [f"**What RL did:** {change.sentence()} The reference result, several seeds "
                  "of each algorithm on 200+ questions, is in benchmarks/RESULTS.md.", ""]  # fmt: skip
    if by_hops:
        lines += ["## What RL changed, per hop count", "", *by_hops, ""]
    reference = results_section(RESULTS, REFERENCE_HEADING)
    if reference is not None:
        # One level down, under the report's own headings.
        lines += ["## Reference result (from benchmarks/RESULTS.md)", "",
                  *demote_headings(reference), ""]  # fmt: skip
    if memory:
        lines += ["## Memory", "", *memory, ""]
    lines += ["## By hop count", ""]
    rows = {f"{s.name}, hops={h}": v for s in stages for h, v in sorted(s.by_hops.items())}
    lines.append(markdown_table(rows, HOP_COLUMNS))
    lines += ["", "## Training curves", ""]
    for name, metrics in curves.items():
        keys = SFT_CURVES if name == "sft" else CURVES
        png = plot_curves(metrics, out / f"curves_{name}.png", f"{name} training", keys)
        if png is not None:
            lines.append(f"![{name} curves]({png.name})")
            lines.append("")
    agents = [s for s in stages if "agent" in s.name] or stages
    lines += ["## Example transcripts", ""]
    for stage in agents[:1] + agents[1:][-1:]:
        lines += [f"### {stage.name}", ""]
        for text in stage.transcripts:
            lines += ["```", text.strip(), "```", ""]
    if view is not None:
        lines += ["## Token view", "",
                  f"[{view.relative_to(out)}]({view.relative_to(out).as_posix()}): every "
                  "evaluated episode and a few trained ones per step, token by token, coloured "
                  "by what the loss did with each (prompt, trained, generated but untrained, "
                  "retrieved and masked, environment text); hover a token for its loss mask, "
                  "sampling log-prob and advantage. Filters by EM, hops, searches and stage.",
                  ""]  # fmt: skip
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report
