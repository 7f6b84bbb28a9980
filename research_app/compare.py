"""``research-env compare RUN_A RUN_B``: two runs' results side by side, if comparable.

A run is an output directory holding ``fingerprint.json`` (:mod:`research_env.fingerprint`)
and either ``results.json`` (``research-env eval``: one row per baseline, policy or
control) or ``metrics.jsonl`` (``research-env train``: the last training step and the
last held-out evaluation). The table shows EM, F1, format validity and searches of every
row in both runs, with the EM difference B - A.

When the fingerprints differ (another dataset split, corpus, retriever, top-k, template,
turn budget, reward or model) the command refuses, listing the differing fields and both
values, because such numbers do not measure the same thing. ``--force`` prints the table
anyway (the differences still go to stderr); ``--ignore FIELD`` leaves fields out of the
check (``--ignore model`` compares a model before and after training).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HELP = "compare two eval/train runs side by side (refuses when their fingerprints differ)"
METRIC_COLUMNS = ("em", "f1", "format_valid", "searches")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("compare", help=HELP, description=__doc__)
    parser.add_argument("run_a", type=Path, metavar="RUN_A", help="an eval or train output dir")
    parser.add_argument("run_b", type=Path, metavar="RUN_B", help="another one")
    parser.add_argument(
        "--force", action="store_true", help="print the table even when fingerprints differ"
    )
    parser.add_argument(
        "--ignore",
        nargs="+",
        default=[],
        metavar="FIELD",
        help="fingerprint fields not to check (e.g. model, retriever, rules.top_k)",
    )
    parser.set_defaults(handler=run)


def make_parser() -> argparse.ArgumentParser:
    """A parser holding only this command (for tests and scripts)."""
    parser = argparse.ArgumentParser(prog="research-env")
    register(parser.add_subparsers(dest="command"))
    return parser


def run(args: argparse.Namespace) -> int:
    from research_env.fingerprint import differing_fields, flatten, read_fingerprint

    a, b = read_fingerprint(args.run_a), read_fingerprint(args.run_b)
    missing = [str(p) for p, fp in ((args.run_a, a), (args.run_b, b)) if fp is None]
    if missing:
        print(
            f"no fingerprint.json in {', '.join(missing)}: cannot tell whether the runs are "
            "comparable (--force to print anyway)",
            file=sys.stderr,
        )
        if not args.force:
            return 1
    elif a is not None and b is not None:
        fields = differing_fields(a, b, ignore=args.ignore)
        if fields:
            flat_a, flat_b = flatten(a), flatten(b)
            lines = [f"  {f}: {flat_a.get(f)!r} vs {flat_b.get(f)!r}" for f in fields]
            verdict = "comparing anyway (--force)" if args.force else "refusing to compare"
            print(
                f"the runs' fingerprints differ in {len(fields)} field(s); {verdict}:\n"
                + "\n".join(lines),
                file=sys.stderr,
            )
            if not args.force:
                return 1
    print(side_by_side(read_rows(args.run_a), read_rows(args.run_b), args.run_a, args.run_b))
    return 0


def read_rows(run_dir: Path) -> dict[str, dict[str, float]]:
    """The rows of a run: ``results.json`` rows by name, or the last training step and
    the last evaluation of ``metrics.jsonl``."""
    results = run_dir / "results.json"
    if results.exists():
        return {row["name"]: row["overall"] for row in json.loads(results.read_text())}
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        raise FileNotFoundError(f"{run_dir} holds neither results.json nor metrics.jsonl")
    rows: dict[str, dict[str, float]] = {}
    last: dict[str, tuple[int, dict[str, float]]] = {}
    for line in metrics.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        for prefix, label in (("episode", "train"), ("eval", "eval")):
            values = {
                k: record[f"{prefix}/{k}"] for k in METRIC_COLUMNS if f"{prefix}/{k}" in record
            }
            if values:
                last[label] = (int(record["step"]), values)
    for label, (step, values) in last.items():
        rows[f"{label} (step {step})"] = values
    return rows


def side_by_side(
    a: dict[str, dict[str, float]], b: dict[str, dict[str, float]], name_a: Any, name_b: Any
) -> str:
    """One markdown table: per row, each metric in A then B, and EM B - A."""
    header = ["", "em A", "em B", "em B-A"]
    for metric in METRIC_COLUMNS[1:]:
        header += [f"{metric} A", f"{metric} B"]
    header += ["n A", "n B"]
    lines = [
        f"A = {name_a}\nB = {name_b}\n",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    for name in [*a, *(n for n in b if n not in a)]:
        row_a, row_b = a.get(name, {}), b.get(name, {})
        em_a, em_b = row_a.get("em"), row_b.get("em")
        delta = f"{em_b - em_a:+.3f}" if em_a is not None and em_b is not None else ""
        cells = [_number(em_a), _number(em_b), delta]
        for metric in METRIC_COLUMNS[1:]:
            cells += [_number(row_a.get(metric)), _number(row_b.get(metric))]
        cells += [_number(row_a.get("n"), whole=True), _number(row_b.get("n"), whole=True)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _number(value: Any, whole: bool = False) -> str:
    if value is None:
        return ""
    return f"{int(value)}" if whole else f"{float(value):.3f}"
