"""Evaluation results as files a reader opens: markdown tables (:func:`report`),
``results.json``, the run's ``fingerprint.json`` and each result's transcripts
(:func:`save_results`, :func:`write_transcripts_text`). The tables are
:func:`research_env.metrics.markdown_table`. When the results include control rows
(the agent under the ``empty`` and ``random`` retrievers), a "Controls" section puts them
beside the agent's own row (:func:`controls_section`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from research_env.intervals import rate_half_width
from research_env.metrics import METRICS, markdown_table

if TYPE_CHECKING:
    from research_app.harness import EvalResult

COLUMNS = ("n", *METRICS)
# Reported when some result has them (LLM evaluation adds these).
EXTRA_COLUMNS = ("retrievals", "response_tokens", "judge")
# Settings shown in the report's settings table, in this order, when present.
SETTING_COLUMNS = (
    "model",
    "policy",
    "dataset",
    "split",
    "corpus",
    "retriever",
    "top_k",
    "max_turns",
    "template",
    "samples",
    "decoding",
    "max_turn_tokens",
    "control",
    "retrieval_cache_hit_rate",
)
# The columns of the controls section.
CONTROL_COLUMNS = ("n", "em", "f1", "format_valid", "searches")
# Episode keys too bulky for results.json: they go to transcripts/<name>.jsonl instead.
TRANSCRIPT_KEYS = ("transcript", "prompt", "turn_texts")


def report(results: Sequence[EvalResult]) -> str:
    """Markdown: the settings of each run, one overall table with a row per result, then
    every result's scores by hop count and by question type (one table each)."""
    columns = _columns(r.overall for r in results)
    overall = {r.name: {**with_em_interval(r.overall), "seconds": r.seconds} for r in results}
    parts = [
        "## Settings",
        _settings_table(results),
        "## Overall",
        markdown_table(overall, [*columns, "seconds"]),
    ]
    for title, attr, label in (("hop count", "by_hops", " hops"), ("question type", "by_type", "")):
        rows = {
            f"{r.name}, {key}{label}": with_em_interval(scores)
            for r in results
            for key, scores in getattr(r, attr).items()
        }
        if rows:
            parts += [f"## By {title}", markdown_table(rows, _columns(rows.values()))]
    controls = controls_section(results)
    if controls:
        parts.insert(4, controls)
    return "\n\n".join(parts) + "\n"


def controls_section(results: Sequence[EvalResult]) -> str:
    """Each controlled policy's row beside its rows under the control retrievers, and a
    verdict: if EM does not drop under ``empty``, the policy is not using search. Empty
    when no result is a control (``settings["control"]``)."""
    parts = []
    by_name = {r.name: r for r in results}
    controlled = dict.fromkeys(
        r.settings["controls"] for r in results if r.settings.get("control") is not None
    )
    for name in controlled:
        rows: dict[str, dict[str, Any]] = {}
        own = by_name.get(name)
        if own is not None:
            rows[f"{name} ({own.settings.get('retriever', 'bm25')})"] = own.overall
        for r in results:
            if r.settings.get("controls") == name and r.settings.get("control") is not None:
                rows[f"{name} ({r.settings['control']})"] = r.overall
        parts.append(markdown_table(rows, CONTROL_COLUMNS))
        empty = next((r for r in results if r.settings.get("controls") == name
                      and r.settings.get("control") == "empty"), None)  # fmt: skip
        if own is not None and empty is not None:
            parts.append(_empty_verdict(name, own, empty))
    if not parts:
        return ""
    intro = (
        "## Controls\n\nThe same policy under control retrievers: `empty` returns no "
        "documents, `random` returns documents drawn at random from the corpus."
    )
    return "\n\n".join([intro, *parts])


def save_results(results: Sequence[EvalResult], out_dir: Path) -> None:
    """Write ``results.json`` and ``results.md``, each result's per-episode transcripts
    to ``transcripts/<name>.jsonl`` (one JSON object per episode), and ``fingerprint.json``:
    the fingerprint of the first result that is not a control (what ``research-env
    compare`` checks)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = []
    for result in results:
        light, transcripts = [], []
        for episode in result.episodes:
            light.append({k: v for k, v in episode.items() if k not in TRANSCRIPT_KEYS})
            transcripts.append(episode)
        data.append({**result.to_json(with_episodes=False), "episodes": light})
        if any(any(k in e for k in TRANSCRIPT_KEYS) for e in transcripts):
            directory = out_dir / "transcripts"
            directory.mkdir(exist_ok=True)
            with (directory / f"{_file_name(result.name)}.jsonl").open("w") as f:
                for episode in transcripts:
                    f.write(json.dumps(episode, ensure_ascii=False) + "\n")
    (out_dir / "results.json").write_text(json.dumps(data, indent=1, ensure_ascii=False))
    (out_dir / "results.md").write_text(report(results))
    main = [r.fingerprint for r in results if r.fingerprint and "control" not in r.settings]
    if main:
        from research_env.fingerprint import write_fingerprint

        write_fingerprint(out_dir, main[0])


def with_em_interval(scores: Mapping[str, float]) -> dict[str, float]:
    """``scores`` and ``em_ci95``: half the 95% Wilson interval of EM on its ``n`` questions."""
    em, n = scores.get("em"), scores.get("n")
    return {**scores, **({"em_ci95": rate_half_width(em, n)} if em is not None and n else {})}


def _columns(score_dicts: Iterable[Mapping[str, float]]) -> list[str]:
    """COLUMNS (EM followed by its interval), then the extra columns and pass@k values that
    any of the dicts holds."""
    present: set[str] = set()
    for scores in score_dicts:
        present.update(scores)
    pass_at = sorted((c for c in present if c.startswith("pass@")), key=lambda c: int(c[5:]))
    columns = [c for m in COLUMNS for c in ((m, "em_ci95") if m == "em" else (m,))]
    return [*columns, *(c for c in EXTRA_COLUMNS if c in present), *pass_at]


def _settings_table(results: Sequence[EvalResult]) -> str:
    keys = [k for k in SETTING_COLUMNS if any(k in r.settings for r in results)]
    rows = {r.name: {k: str(r.settings.get(k, "")) for k in keys} for r in results}
    return markdown_table(rows, keys, numeric=False)


def _file_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "result"


def transcript_text(episode: dict[str, Any]) -> str:
    """One episode as readable text: prompt, then each turn and its observation."""
    parts = [episode.get("prompt", "")]
    for turn in episode.get("turn_texts", []):
        parts += [turn["model"], turn["observation"]]
    return "".join(parts)


def write_transcripts_text(result: EvalResult, path: Path) -> None:
    """A human-readable transcript file: a header per episode, then its full text."""
    with Path(path).open("w") as f:
        for e in result.episodes:
            keys = ("question_id", "sample", "prediction", "golden_answers", "em", "f1")
            header = {k: e.get(k) for k in (*keys, "format_valid")}
            f.write(f"### {json.dumps(header, ensure_ascii=False)}\n{transcript_text(e)}\n\n")


def _empty_verdict(name: str, own: EvalResult, empty: EvalResult) -> str:
    """Does EM drop under the empty retriever? Judged on the paired per-question drop (the
    same questions under both retrievers) and its 95% t-interval, when the episodes are
    there to pair; a drop inside the interval is said to be not established."""
    from research_env.intervals import mean_interval

    em, em_empty = own.overall.get("em", 0.0), empty.overall.get("em", 0.0)
    if em_empty >= em:
        return (
            f"**{name}: EM does not drop under the empty retriever ({em_empty:.3f} vs "
            f"{em:.3f}): this policy is not using search.** Read it per question type too: "
            "a cheap prior answer (yes/no questions) can hide what search is worth on the rest."
        )
    drops = _paired(own.episodes, empty.episodes)
    half = mean_interval(drops)[1] if len(drops) >= 2 else None
    drop = em - em_empty
    if half is not None and drop <= half:
        return (
            f"{name}: EM drops from {em:.3f} to {em_empty:.3f} under the empty retriever, "
            f"inside the paired 95% interval of the drop (±{half:.3f} on {len(drops)} "
            "questions): not established; score more questions."
        )
    interval = f" (paired 95% interval ±{half:.3f})" if half is not None else ""
    return (
        f"{name}: EM drops from {em:.3f} to {em_empty:.3f} under the empty retriever"
        f"{interval}: the policy uses what search returns."
    )


def _paired(own: Sequence[dict[str, Any]], other: Sequence[dict[str, Any]]) -> list[float]:
    """Per-question EM differences (own minus other; samples of a question averaged) over
    the questions both results scored."""

    def per_question(episodes: Sequence[dict[str, Any]]) -> dict[Any, float]:
        scores: dict[Any, list[float]] = {}
        for e in episodes:
            if e.get("question_id") is not None:
                scores.setdefault(e["question_id"], []).append(float(e.get("em", 0.0)))
        return {q: sum(v) / len(v) for q, v in scores.items()}

    a, b = per_question(own), per_question(other)
    return [a[q] - b[q] for q in a if q in b]
