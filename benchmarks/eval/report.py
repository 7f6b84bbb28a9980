"""Evaluation harness: play a policy over a dataset split and report EM/F1 and friends.

Scripted policies (``oracle``, ``random``) need nothing but the environment and are scored
here; language models are scored by :mod:`benchmarks.eval.harness` into the same
:class:`EvalResult`, so one :func:`report` puts scripted policies, LLM baselines and
trained checkpoints side by side.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gymnasium.vector import AutoresetMode
from tqdm import tqdm

from research_env.metrics import summarize, summarize_by
from research_env.policies import get_policy
from research_env.vector import SearchVectorEnv

COLUMNS = ("n", "em", "f1", "format_valid", "searches", "supporting_recall", "reward")
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
)
# Episode keys too bulky for results.json: they go to transcripts/<name>.jsonl instead.
TRANSCRIPT_KEYS = ("transcript", "prompt", "turn_texts")


@dataclass
class EvalResult:
    """Scores of one policy on one split, with the settings that make runs comparable.

    ``overall`` and each group of ``by_hops`` / ``by_type`` map metric names (see
    :data:`COLUMNS`, :data:`EXTRA_COLUMNS`, ``pass@k``) to means over episodes; ``n`` counts
    questions. ``episodes`` holds one record per episode (the env's final info plus what
    the evaluator adds, e.g. the transcript).
    """

    name: str
    settings: dict[str, Any]
    overall: dict[str, float]
    by_hops: dict[Any, dict[str, float]]
    seconds: float
    episodes: list[dict[str, Any]] = field(default_factory=list)
    by_type: dict[Any, dict[str, float]] = field(default_factory=dict)

    def to_json(self, *, with_episodes: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "settings": self.settings,
            "overall": self.overall,
            "by_hops": {str(k): v for k, v in self.by_hops.items()},
            "by_type": {str(k): v for k, v in self.by_type.items()},
            "seconds": self.seconds,
        }
        if with_episodes:
            data["episodes"] = self.episodes
        return data


def evaluate_scripted(
    policy_name: str,
    *,
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    show_progress: bool = True,
    **env_kwargs: Any,
) -> EvalResult:
    """Play ``policy_name`` once on each of the first ``limit`` questions of the split,
    ``batch_size`` questions at a time in a vector env (one retriever call per turn)."""
    envs = SearchVectorEnv(1, autoreset_mode=AutoresetMode.DISABLED, **env_kwargs)
    env = envs.envs[0]
    policy = get_policy(policy_name, seed=seed)
    n = len(env.samples) if limit is None else min(limit, len(env.samples))
    infos, rewards, episodes = [], [], []
    start = time.perf_counter()
    bar = tqdm(total=n, desc=policy_name, disable=not show_progress, leave=False)
    for first in range(0, n, batch_size):
        chunk = list(range(first, min(first + batch_size, n)))
        envs = envs.resized(len(chunk))
        envs.reset(seed=[seed] * len(chunk), options={"indices": chunk})
        totals = [0.0] * len(chunk)
        final: dict[int, dict[str, Any]] = {}
        while len(final) < len(chunk):
            live = [j for j in range(len(chunk)) if j not in final]
            outcomes = envs.step_turns({j: policy.act(envs.envs[j]) for j in live})
            for j, outcome in outcomes.items():
                totals[j] += outcome.reward
                if outcome.done:
                    final[j] = outcome.info
        for j in range(len(chunk)):
            infos.append(final[j])
            rewards.append(totals[j])
            transcript = envs.envs[j].render() or ""
            episodes.append({**final[j], "reward": totals[j], "transcript": transcript})
        bar.update(len(chunk))
    bar.close()
    elapsed = time.perf_counter() - start
    settings = {
        "policy": policy_name,
        **{k: str(v) for k, v in env_kwargs.items()},
        "top_k": env.rules.top_k,
        "max_turns": env.rules.max_turns,
        "template": env.template.name,
    }
    return EvalResult(
        name=policy_name,
        settings=settings,
        overall=summarize(infos, rewards),
        by_hops=summarize_by(infos, "hops", rewards),
        seconds=elapsed,
        episodes=episodes,
        by_type=summarize_by(infos, "type", rewards),
    )


def report(results: Sequence[EvalResult]) -> str:
    """Markdown: the settings of each run, one overall table with a row per result, then
    every result's scores by hop count and by question type (one table each)."""
    columns = _columns(r.overall for r in results)
    overall = {r.name: {**r.overall, "seconds": r.seconds} for r in results}
    parts = [
        "## Settings",
        _settings_table(results),
        "## Overall",
        format_table(overall, [*columns, "seconds"]),
    ]
    for title, attr, label in (("hop count", "by_hops", " hops"), ("question type", "by_type", "")):
        rows = {
            f"{r.name}, {key}{label}": scores
            for r in results
            for key, scores in getattr(r, attr).items()
        }
        if rows:
            parts += [f"## By {title}", format_table(rows, _columns(rows.values()))]
    return "\n\n".join(parts) + "\n"


def save_results(results: Sequence[EvalResult], out_dir: Path) -> None:
    """Write ``results.json`` and ``results.md``, and each result's per-episode transcripts
    to ``transcripts/<name>.jsonl`` (one JSON object per episode)."""
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


def format_table(rows: Mapping[str, Mapping[str, float]], columns: Sequence[str]) -> str:
    """A markdown table, one row per name; counts and times get one decimal, rates three."""
    lines = ["| | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, values in rows.items():
        cells = [_format_cell(col, values.get(col)) for col in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _format_cell(column: str, value: float | None) -> str:
    if value is None:
        return ""
    if column == "n":
        return str(int(value))
    if column in ("response_tokens", "seconds"):
        return f"{value:.1f}"
    return f"{value:.3f}"


def _columns(score_dicts: Iterable[Mapping[str, float]]) -> list[str]:
    """COLUMNS, then the extra columns and pass@k values that any of the dicts holds."""
    present: set[str] = set()
    for scores in score_dicts:
        present.update(scores)
    pass_at = sorted((c for c in present if c.startswith("pass@")), key=lambda c: int(c[5:]))
    return [*COLUMNS, *(c for c in EXTRA_COLUMNS if c in present), *pass_at]


def _settings_table(results: Sequence[EvalResult]) -> str:
    keys = [k for k in SETTING_COLUMNS if any(k in r.settings for r in results)]
    lines = ["| | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for r in results:
        cells = [str(r.settings.get(k, "")) for k in keys]
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _file_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "result"
