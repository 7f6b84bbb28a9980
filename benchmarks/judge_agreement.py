"""How often an LLM judge agrees with exact match on the same answered episodes.

Reads episodes that were played already (``benchmarks.simulated_search --out``, or any JSON
whose ``episodes`` is a list, or a mapping of names to lists, of episode records with
``question``, ``golden_answers``, ``prediction`` and ``em``), asks one judge about every
answered episode (:func:`research_env.judge.judge_episodes`, the code the ``judge`` reward
and ``research-env eval --judge`` use), and prints one Markdown row per group of episodes
and one for all of them: the 2x2 table of judge against EM, the raw agreement with its
Wilson 95% interval, Cohen's kappa with a bootstrap 95% interval over episodes, and the
paired change in the accept rate (judge minus EM) with its Student-t interval.

    python -m benchmarks.judge_agreement --episodes runs/simulated-search.json \\
        --judge smollm2-135m --out runs/judge-agreement.json

``--judge`` takes what ``research-env eval --judge`` takes: an offline model name or
directory (a local judge), or an ``http(s)://`` OpenAI-compatible endpoint with
``--judge-model`` and the key in the environment variable ``--api-key-env`` names.
Episodes without a prediction are counted apart and left out of the agreement: the judge
is never asked about them (their judge score is 0 by definition, as their EM is).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

BOOTSTRAP_RESAMPLES = 2000


def kappa(pairs: Sequence[tuple[int, int]]) -> float:
    """Cohen's kappa of two yes/no raters over ``(em, judge)`` pairs: observed agreement
    beyond what the two accept rates alone would give. NaN when both raters say the same
    thing every time (chance agreement is then 1)."""
    n = len(pairs)
    if n == 0:
        return float("nan")
    observed = sum(a == b for a, b in pairs) / n
    first = sum(a for a, _ in pairs) / n
    second = sum(b for _, b in pairs) / n
    chance = first * second + (1 - first) * (1 - second)
    return float("nan") if chance == 1 else (observed - chance) / (1 - chance)


def kappa_interval(
    pairs: Sequence[tuple[int, int]], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of :func:`kappa`, resampling episodes (a fixed
    seed, so a re-run prints the same interval); resamples where kappa is undefined are
    dropped."""
    if not pairs:
        return float("nan"), float("nan")
    rng = random.Random(seed)
    values = sorted(
        k for k in (kappa(rng.choices(pairs, k=len(pairs))) for _ in range(resamples)) if k == k
    )
    if not values:
        return float("nan"), float("nan")
    return values[int(0.025 * (len(values) - 1))], values[int(0.975 * (len(values) - 1))]


def agreement(name: str, episodes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The numbers for one group of episodes that carry ``em`` and ``judge`` scores."""
    from research_env.intervals import paired_interval, wilson

    answered = [e for e in episodes if e.get("prediction")]
    pairs = [(int(float(e["em"]) >= 1.0), int(float(e["judge"]) >= 1.0)) for e in answered]
    n = len(pairs)
    both = sum(a and b for a, b in pairs)
    judge_only = sum(b and not a for a, b in pairs)
    em_only = sum(a and not b for a, b in pairs)
    agree = n - judge_only - em_only
    low, high = wilson(agree, n) if n else (float("nan"), float("nan"))
    change, half = paired_interval([a for a, _ in pairs], [b for _, b in pairs])
    k_low, k_high = kappa_interval(pairs)
    return {
        "name": name,
        "episodes": len(episodes),
        "answered": n,
        "both_accept": both,
        "judge_only": judge_only,
        "em_only": em_only,
        "neither": n - both - judge_only - em_only,
        "agreement": agree / n if n else float("nan"),
        "agreement_interval": [low, high],
        "kappa": kappa(pairs),
        "kappa_interval": [k_low, k_high],
        "em_rate": sum(a for a, _ in pairs) / n if n else float("nan"),
        "judge_rate": sum(b for _, b in pairs) / n if n else float("nan"),
        "accept_change": change,
        "accept_change_half_width": half,
    }


def table(rows: Sequence[Mapping[str, Any]], judge: str) -> str:
    from research_env.intervals import plus_minus

    lines = [
        f"| episodes | answered | both accept | judge only | EM only | neither | "
        f"agreement [95% CI] | kappa [95% CI] | accept rate EM -> {judge} (change) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        a_low, a_high = r["agreement_interval"]
        k_low, k_high = r["kappa_interval"]
        lines.append(
            f"| {r['name']} | {r['answered']} of {r['episodes']} | {r['both_accept']} | "
            f"{r['judge_only']} | {r['em_only']} | {r['neither']} | "
            f"{r['agreement']:.3f} [{a_low:.3f}, {a_high:.3f}] | "
            f"{r['kappa']:.2f} [{k_low:.2f}, {k_high:.2f}] | "
            f"{r['em_rate']:.3f} -> {r['judge_rate']:.3f} "
            f"({plus_minus(r['accept_change'], r['accept_change_half_width'])}) |"
        )
    return "\n".join(lines)


def read_episodes(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Named groups of episodes from ``path`` (see the module's docstring for shapes); a
    clear error when it holds none or they lack what a judge needs."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"cannot read episodes from {path}: {err}") from None
    found = data.get("episodes") if isinstance(data, dict) else data
    groups = {path.stem: found} if isinstance(found, list) else found
    if not isinstance(groups, dict) or not groups:
        raise SystemExit(
            f"{path} holds no episodes: expected a list of episode records, or a JSON "
            "object whose 'episodes' is such a list or maps names to such lists (what "
            "`python -m benchmarks.simulated_search --out` writes)"
        )
    need = ("question", "golden_answers", "prediction", "em")
    for name, episodes in groups.items():
        missing = sorted({k for e in episodes for k in need if k not in e})
        if missing:
            raise SystemExit(
                f"{path}: episodes under {name!r} lack {', '.join(missing)}; a judge needs "
                "each episode's question, golden answers, prediction and EM"
            )
    return groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: python -m benchmarks.judge_agreement --episodes "
        "runs/simulated-search.json --judge smollm2-135m",
    )
    parser.add_argument("--episodes", type=Path, required=True, help="JSON of played episodes")
    parser.add_argument("--judge", default="smollm2-135m", help="model name/dir or endpoint URL")
    parser.add_argument("--judge-model", default="default", help="the endpoint's model name")
    parser.add_argument("--api-key-env", default=None, help="env variable with the endpoint key")
    parser.add_argument("--examples", type=int, default=3, help="disagreements printed per kind")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    groups = read_episodes(args.episodes)
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            parser.error(f"--api-key-env {args.api_key_env}: that variable is not set")

    from research_app.judge import judge_episodes, make_judge

    judge = make_judge(args.judge, args.judge_model, api_key=api_key)
    everything = [e for episodes in groups.values() for e in episodes]
    judge_episodes(judge, everything)
    rows = [agreement(name, episodes) for name, episodes in groups.items()]
    if len(groups) > 1:
        rows.append(agreement("all", everything))
    print(table(rows, args.judge))
    for kind, em, verdict in (("judge accepts, EM rejects", 0, 1), ("EM accepts, judge rejects", 1, 0)):  # fmt: skip
        shown = [
            e for e in everything
            if e.get("prediction") and int(float(e["em"]) >= 1) == em and int(e["judge"]) == verdict
        ][: args.examples]  # fmt: skip
        for e in shown:
            print(f"{kind}: {e['question']!r:.80} gold {e['golden_answers']} -> {e['prediction']!r:.60}")  # fmt: skip
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        settings = {"episodes": str(args.episodes), "judge": args.judge}
        args.out.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n")
    print(f"judged {sum(bool(e.get('prediction')) for e in everything)} answers", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
