"""``research-env compare RUN_A RUN_B``: two runs' results side by side, if comparable.

A run is an output directory holding ``fingerprint.json`` (:mod:`research_env.fingerprint`)
and either ``results.json`` (``research-env eval``: one row per baseline, policy or
control) or ``metrics.jsonl`` (``research-env train``: the last training step and the
last held-out evaluation). The table shows EM, F1, format validity and searches of every
row in both runs (EM ± half its 95% Wilson interval), with the EM difference B - A.

When the fingerprints differ (another dataset split, corpus, retriever, top-k, template,
turn budget, reward, model, or decoding: sampling, token limits and the precision the
evaluation decoded in, float32, bfloat16 or int8) the command refuses, listing the differing fields and both
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


EXAMPLES = """examples:
  research-env compare runs/k3 runs/k5             # refused when top-k differs
  research-env compare runs/k3 runs/k5 --force     # the table anyway
  research-env compare runs/base runs/trained --ignore model
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "compare",
        help=HELP,
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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

    absent = [str(p) for p in (args.run_a, args.run_b) if not Path(p).is_dir()]
    if absent:
        print(f"no such run folder: {', '.join(absent)}", file=sys.stderr)
        return 1
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
            lines += _precision_note(flat_a, flat_b, fields)
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


def _precision_note(a: dict[str, Any], b: dict[str, Any], fields: list[str]) -> list[str]:
    """Why a different decoding precision matters, and what measures it instead."""
    key = "decoding.decode_dtype"
    if key not in fields:
        return []
    return [
        f"the runs decoded in different precisions ({a.get(key)}, {b.get(key)}): a bf16 or "
        "int8 decoding copy changes which tokens greedy decoding picks, so EM moves with "
        "the precision as well as with the policy; to measure what a precision costs, "
        "score both on the same questions, paired: python -m benchmarks.int8_quality"
    ]


def read_rows(run_dir: Path) -> dict[str, dict[str, float]]:
    """The rows of a run: ``results.json`` rows by name, or the last training step and
    the last evaluation of ``metrics.jsonl``."""
    from research_env.storage import read_json_file

    results = run_dir / "results.json"
    if results.exists():
        return _result_rows(results, read_json_file(results, "research-env eval's rows"))
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        raise FileNotFoundError(f"{run_dir} holds neither results.json nor metrics.jsonl")
    rows: dict[str, dict[str, float]] = {}
    last: dict[str, tuple[int, dict[str, float]]] = {}
    try:
        text = metrics.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{metrics}: not UTF-8 text (at byte offset {err.start})") from None
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue  # a line cut short by a kill
        step = record.get("step") if isinstance(record, dict) else None
        if not isinstance(step, int) or isinstance(step, bool):
            continue  # not a step's record
        for prefix, label in (("episode", "train"), ("eval", "eval")):
            values = {
                k: record[f"{prefix}/{k}"]
                for k in METRIC_COLUMNS
                if _is_number(record.get(f"{prefix}/{k}"))
            }
            if values:
                last[label] = (step, values)
    for label, (step, values) in last.items():
        rows[f"{label} (step {step})"] = values
    return rows


def _result_rows(path: Path, rows: Any) -> dict[str, dict[str, float]]:
    """``results.json``'s rows by name, checked: a list of objects, each with a ``name``
    and an ``overall`` object of numbers."""
    if not isinstance(rows, list):
        raise ValueError(
            f"{path}: expected a list of rows (objects with 'name' and 'overall'), got "
            f"{type(rows).__name__}"
        )
    out: dict[str, dict[str, float]] = {}
    for i, row in enumerate(rows):
        name = row.get("name") if isinstance(row, dict) else None
        overall = row.get("overall") if isinstance(row, dict) else None
        if not isinstance(name, str) or not isinstance(overall, dict):
            raise ValueError(
                f"{path}: row {i} must be an object with a 'name' (text) and an 'overall' "
                f"object of metrics, got {type(row).__name__}"
            )
        out[name] = {k: v for k, v in overall.items() if _is_number(v)}
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
        cells = [_em(row_a), _em(row_b), delta]
        for metric in METRIC_COLUMNS[1:]:
            cells += [_number(row_a.get(metric)), _number(row_b.get(metric))]
        cells += [_number(row_a.get("n"), whole=True), _number(row_b.get("n"), whole=True)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _em(row: dict[str, float]) -> str:
    """EM ± half its 95% Wilson interval on the row's questions (EM alone without ``n``)."""
    from research_env.intervals import rate_half_width

    em, n = row.get("em"), row.get("n")
    if em is None or not n:
        return _number(em)
    return f"{float(em):.3f} ± {rate_half_width(float(em), float(n)):.3f}"


def _number(value: Any, whole: bool = False) -> str:
    if value is None:
        return ""
    return f"{int(value)}" if whole else f"{float(value):.3f}"
