"""``research-env eval --suite searchr1``: the seven standard search-QA benchmarks in one
command, with intervals, fingerprints, and the published numbers beside ours.

Why ``searchr1``: the suite *is* Search-R1's evaluation protocol (its seven datasets, its
split of each, exact match on SQuAD-normalized answers), which ZeroSearch, StepSearch and
most later search agents reuse; naming it after its origin says whose numbers it is
meant to be compared with, and leaves room for other suites.

The datasets are read from a local folder in FlashRAG's layout
(``<data-dir>/<name>/<split>.jsonl``, rows with ``id``, ``question``,
``golden_answers``, ``metadata``; the files of huggingface.co/datasets/RUC-NLPIR/
FlashRAG_datasets), each at the split Search-R1 evaluates:

==================  ==================  =====
dataset             folder              split
==================  ==================  =====
NQ                  ``nq``              test
TriviaQA            ``triviaqa``        test
PopQA               ``popqa``           test
HotpotQA            ``hotpotqa``        dev
2WikiMultiHopQA     ``2wikimultihopqa`` dev
MuSiQue             ``musique``         dev
Bamboogle           ``bamboogle``       test
==================  ==================  =====

Sample size: the whole split by default (what the paper evaluates); ``--limit N`` takes
the first N questions of each (the report prints the n of every row, so a subset is never
mistaken for the full set). All seven share one retriever (built once) and one model.

The report (:func:`suite_report`) has one row per dataset: n, EM with its 95% Wilson
interval, F1 with its 95% t interval, the judge's accuracy when one was asked, and the
run's fingerprint; then the published rows at the same model size
(:mod:`research_app.published`) with their settings (corpus, retriever, top-k, metric)
and sources, marked as quoted; an empty cell is a number or setting we could not verify.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from research_app.harness import EvalResult
from research_app.published import PublishedRow, published_for_size
from research_env.intervals import mean_interval, rate_half_width

__all__ = ["SUITES", "Benchmark", "SuiteRow", "load_suite", "run_suite", "suite_report"]


@dataclass(frozen=True)
class Benchmark:
    """One dataset of a suite: its FlashRAG folder, the name printed, the split used."""

    folder: str
    label: str
    split: str


SUITES: dict[str, tuple[Benchmark, ...]] = {
    "searchr1": (
        Benchmark("nq", "NQ", "test"),
        Benchmark("triviaqa", "TriviaQA", "test"),
        Benchmark("popqa", "PopQA", "test"),
        Benchmark("hotpotqa", "HotpotQA", "dev"),
        Benchmark("2wikimultihopqa", "2Wiki", "dev"),
        Benchmark("musique", "MuSiQue", "dev"),
        Benchmark("bamboogle", "Bamboogle", "test"),
    ),
}


@dataclass
class SuiteRow:
    """One dataset's result."""

    benchmark: Benchmark
    result: EvalResult


def load_suite(name: str, data_dir: str | Path) -> list[tuple[Benchmark, Path]]:
    """The suite's datasets and their files; every missing file is named in one error."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; choose one of {sorted(SUITES)}")
    root = Path(data_dir)
    found = [(b, root / b.folder / f"{b.split}.jsonl") for b in SUITES[name]]
    missing = [str(path) for _b, path in found if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"suite {name!r} needs {len(missing)} file(s) missing under {root}: "
            + ", ".join(missing)
            + " (FlashRAG layout <data-dir>/<dataset>/<split>.jsonl, as in "
            "huggingface.co/datasets/RUC-NLPIR/FlashRAG_datasets)"
        )
    return found


def run_suite(
    name: str,
    data_dir: str | Path,
    evaluate: Callable[[dict[str, Any]], EvalResult],
    env_kwargs: dict[str, Any],
    on_row: Callable[[SuiteRow], None] | None = None,
) -> list[SuiteRow]:
    """``evaluate(env_kwargs)`` on each dataset of suite ``name``, with ``env_kwargs``'s
    retriever (a name is built once, here, and shared) and the dataset's file and split."""
    from research_env.sources import resolve_retriever
    from research_env.storage import cache_root

    datasets = load_suite(name, data_dir)
    shared = dict(env_kwargs)
    if isinstance(shared.get("retriever", "bm25"), str):
        shared["retriever"] = resolve_retriever(
            shared.get("retriever", "bm25"),
            shared.get("corpus"),
            cache_root(shared.get("cache_dir")),
            shared.pop("retriever_kwargs", None),
        )
    named = env_kwargs.get("retriever", "bm25")
    rows = []
    for benchmark, path in datasets:
        result = evaluate({**shared, "dataset": str(path), "split": benchmark.split})
        result.settings["dataset"] = f"{benchmark.folder}/{benchmark.split}"
        if isinstance(named, str):
            result.settings["retriever"] = named
        row = SuiteRow(benchmark, result)
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def model_size(model: str | None) -> str | None:
    """``"Qwen2.5-3B-Instruct"`` -> ``"3b"``; None when the name states no size."""
    match = re.search(r"(?<![\d.])(\d+(?:\.\d+)?)\s*[bB](?![a-zA-Z])", model or "")
    return f"{match.group(1)}b".lower() if match else None


def _row_numbers(result: EvalResult) -> dict[str, Any]:
    episodes = result.episodes
    n = int(result.overall.get("n", len(episodes)))
    em = result.overall.get("em", 0.0)
    f1_mean, f1_half = mean_interval([float(e.get("f1") or 0.0) for e in episodes] or [0.0])
    out = {
        "n": n,
        "em": em,
        "em_ci95": rate_half_width(em, n),
        "f1": f1_mean,
        "f1_ci95": f1_half,
        "fingerprint": (result.fingerprint or {}).get("hash"),
    }
    if "judge" in result.overall:
        out["judge"] = result.overall["judge"]
        out["judge_ci95"] = rate_half_width(result.overall["judge"], n)
    return out


def _pm(value: float, half: float | None) -> str:
    return f"{100 * value:.1f} ± {100 * half:.1f}" if half is not None else f"{100 * value:.1f}"


def suite_report(rows: Sequence[SuiteRow], suite: str = "searchr1") -> str:
    """The markdown report: our rows (percent, 95% intervals), then the published rows."""
    if not rows:
        raise ValueError("no results to report")
    settings = rows[0].result.settings
    model = str(settings.get("model", settings.get("policy", "?")))
    numbers = [_row_numbers(row.result) for row in rows]
    judged = any("judge" in n for n in numbers)
    lines = [
        f"## Suite {suite}: {model}",
        "",
        f"Retriever {settings.get('retriever', '?')}, corpus {settings.get('corpus', '?')}, "
        f"top-k {settings.get('top_k', '?')}, max turns {settings.get('max_turns', '?')}; "
        "EM = exact match after SQuAD normalization, F1 = token F1 (max over golden "
        "answers), in percent with 95% intervals (EM: Wilson; F1: Student t).",
        "",
        "| dataset | split | n | EM | F1 |" + (" judge |" if judged else "") + " fingerprint |",
        "|---|---|---:|---:|---:|" + ("---:|" if judged else "") + "---|",
    ]
    for row, num in zip(rows, numbers, strict=True):
        judge = f" {_pm(num['judge'], num['judge_ci95'])} |" if "judge" in num else " |"
        lines.append(
            f"| {row.benchmark.label} | {row.benchmark.split} | {num['n']} | "
            f"{_pm(num['em'], num['em_ci95'])} | {_pm(num['f1'], num['f1_ci95'])} |"
            + (judge if judged else "")
            + f" {str(num['fingerprint'] or '')[:12]} |"
        )
    mean_em = sum(n["em"] for n in numbers) / len(numbers)
    lines.append(
        f"| average (unweighted, {len(numbers)} datasets) | | | {100 * mean_em:.1f} | "
        f"{100 * sum(n['f1'] for n in numbers) / len(numbers):.1f} |"
        + (" |" if judged else "")
        + " |"
    )
    lines += ["", *_published_section(rows, model)]
    return "\n".join(lines) + "\n"


def _published_section(rows: Sequence[SuiteRow], model: str) -> list[str]:
    size, published = published_for_size(model_size(model))
    labels = [row.benchmark.label for row in rows]
    folders = [row.benchmark.folder for row in rows]
    shown = model_size(model)
    note = (
        f"at the same model size ({size.upper()})"
        if shown == size
        else f"at {size.upper()} (no published rows at this model's size)"
    )
    lines = [
        f"### Published results {note}: quoted from the papers, not run here",
        "",
        "EM (F1 where the paper gives it), percent, exactly as the paper's text gives "
        "them. An empty cell is a number or setting not found in the paper's text (the "
        "notes say why). A row compares with ours only where corpus, retriever, top-k, "
        "metric and the questions evaluated all match.",
        "",
        "| system | model | corpus | retriever | top-k | metric | " + " | ".join(labels) + " |",
        "|---|---|---|---|---|---|" + "---:|" * len(labels),
    ]
    for row in published:
        lines.append(
            f"| {row.system} | {row.model} | {row.corpus or ''} | {row.retriever or ''} | "
            f"{row.top_k or ''} | {row.metric or ''} | "
            + " | ".join(_published_cell(row, folder) for folder in folders)
            + " |"
        )
    sources = dict.fromkeys(row.source for row in published)
    lines += ["", "Sources:", *(f"- {source}" for source in sources)]
    notes = dict.fromkeys(row.note for row in published if row.note)
    if notes:
        lines += ["", "Notes:", *(f"- {note}" for note in notes)]
    return lines


def _published_cell(row: PublishedRow, folder: str) -> str:
    em, f1 = row.em.get(folder), row.f1.get(folder)
    if em is None:
        return ""
    return f"{em:g}" if f1 is None else f"{em:g} / {f1:g}"  # as printed in the source


def save_suite(rows: Sequence[SuiteRow], out_dir: Path, suite: str = "searchr1") -> None:
    """``suite.md`` (the report), ``suite.json`` (per dataset: numbers, settings,
    fingerprint) and each dataset's episodes in ``<folder>.jsonl``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "suite.md").write_text(suite_report(rows, suite), encoding="utf-8")
    data = [
        {
            "dataset": row.benchmark.folder,
            "split": row.benchmark.split,
            **_row_numbers(row.result),
            "settings": row.result.settings,
        }
        for row in rows
    ]
    (out_dir / "suite.json").write_text(json.dumps(data, indent=1, default=str), "utf-8")
    for row in rows:
        with open(out_dir / f"{row.benchmark.folder}.jsonl", "w", encoding="utf-8") as f:
            for episode in row.result.episodes:
                f.write(json.dumps(episode, default=str) + "\n")
