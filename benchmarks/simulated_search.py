"""What a policy's EM is when a language model writes its search results.

Plays one policy (greedy, one episode per question) on the same first N questions of a
split under each retriever: ``bm25`` (the real corpus), ``simulated/useful`` (every passage
written from the question's gold facts), ``simulated/noisy`` (every passage plausible but
irrelevant or wrong) and ``empty`` (no documents), and prints one Markdown row each: EM with
its Wilson 95% interval, F1 and the paired EM change against the first retriever with
Student-t 95% intervals over the same questions, format validity, searches per episode and
the share of retrieved passages written noisy. The two simulated retrievers share one
simulator model (:class:`algorithms.simulated_search.LMPassageWriter`).

    python -m benchmarks.simulated_search --model runs/demo-warm/warm --questions 200 \\
        --out runs/simulated-search.json

(the default simulator is the offline ``smollm2-135m``; ``--simulator tiny-random`` and
``--questions 4`` make a smoke run).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

RETRIEVERS = ("bm25", "simulated/useful", "simulated/noisy", "empty")
# What --out keeps of each episode: enough to judge its answer again
# (python -m benchmarks.judge_agreement) without replaying it.
EPISODE_KEYS = (
    "question_id", "question", "golden_answers", "prediction", "em", "f1",
    "format_valid", "searches", "hops",
)  # fmt: skip


def noisy_share(episodes: list[dict[str, Any]]) -> float:
    """The share of retrieved passages that a simulated retriever wrote in noisy mode
    (NaN when nothing simulated was retrieved)."""
    ids = [i for e in episodes for i in e.get("retrieved_doc_ids") or [] if i.startswith("sim-")]
    return sum(i.startswith("sim-noisy-") for i in ids) / len(ids) if ids else math.nan


def row(name: str, episodes: list[dict[str, Any]], reference: list[dict[str, Any]]) -> dict:
    """One retriever's numbers (episodes in question order, as ``reference``'s)."""
    from research_env.intervals import mean_interval, paired_interval, wilson

    em = [float(e.get("em") or 0.0) for e in episodes]
    f1 = [float(e.get("f1") or 0.0) for e in episodes]
    low, high = wilson(sum(em), len(em))
    f1_mean, f1_half = mean_interval(f1)
    change, change_half = paired_interval([float(e.get("em") or 0.0) for e in reference], em)
    return {
        "retriever": name,
        "questions": len(em),
        "em": sum(em) / len(em),
        "em_interval": [low, high],
        "f1": f1_mean,
        "f1_half_width": f1_half,
        "em_change": change,
        "em_change_half_width": change_half,
        "format_valid": sum(bool(e.get("format_valid")) for e in episodes) / len(episodes),
        "searches": sum(float(e.get("searches") or 0) for e in episodes) / len(episodes),
        "noisy_share": noisy_share(episodes),
    }


def table(rows: list[dict[str, Any]]) -> str:
    from research_env.intervals import plus_minus

    first = rows[0]["retriever"]
    lines = [
        f"| retriever | EM [95% CI] | F1 | EM change vs {first} | format | searches | noisy share |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        low, high = r["em_interval"]
        share = "-" if math.isnan(r["noisy_share"]) else f"{r['noisy_share']:.2f}"
        lines.append(
            f"| {r['retriever']} | {r['em']:.3f} [{low:.3f}, {high:.3f}] | "
            f"{plus_minus(r['f1'], r['f1_half_width'])} | "
            f"{plus_minus(r['em_change'], r['em_change_half_width'])} | "
            f"{r['format_valid']:.2f} | {r['searches']:.2f} | {share} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the policy: offline name or directory")
    parser.add_argument("--simulator", default="smollm2-135m", help="the model writing passages")
    parser.add_argument("--questions", type=int, default=200, help="first N of the split")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--retrievers", nargs="+", default=list(RETRIEVERS))
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--max-turns", type=int, default=5)
    parser.add_argument("--template", default="research")
    parser.add_argument("--max-turn-tokens", type=int, default=256)
    parser.add_argument("--max-total-tokens", type=int, default=2048)
    parser.add_argument("--passage-tokens", type=int, default=96, help="simulator budget")
    parser.add_argument("--simulator-temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0, help="the simulator's seed")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.questions < 1:
        parser.error("--questions must be >= 1")

    from algorithms.policy import load_policy
    from algorithms.rollout import Sampling
    from algorithms.simulated_search import LMPassageWriter
    from research_app.harness import evaluate_model

    policy = load_policy(args.model, device=args.device)
    writer = None
    if any(r.startswith("simulated") for r in args.retrievers):
        writer = LMPassageWriter(
            args.simulator, seed=args.seed, max_new_tokens=args.passage_tokens,
            temperature=args.simulator_temperature, device=args.device,
        )  # fmt: skip
    sampling = Sampling(
        greedy=True, max_turn_tokens=args.max_turn_tokens, max_total_tokens=args.max_total_tokens
    )
    rows, reference, played = [], None, {}
    for retriever in args.retrievers:
        env_kwargs: dict[str, Any] = {
            "dataset": args.dataset, "split": args.split, "retriever": retriever,
            "top_k": args.top_k, "max_turns": args.max_turns, "template": args.template,
        }  # fmt: skip
        if retriever.startswith("simulated"):
            env_kwargs["retriever_kwargs"] = {"writer": writer, "seed": args.seed}
        result = evaluate_model(
            policy, env_kwargs, limit=args.questions, sampling=sampling,
            batch_size=args.batch_size, name=retriever, show_progress=False,
        )  # fmt: skip
        episodes = sorted(result.episodes, key=lambda e: str(e["question_id"]))
        reference = reference or episodes
        rows.append(row(retriever, episodes, reference))
        played[retriever] = [{k: e.get(k) for k in EPISODE_KEYS} for e in episodes]
        print(f"{retriever}: EM {rows[-1]['em']:.3f} ({result.seconds:.0f} s)", file=sys.stderr)
    print(table(rows))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        args.out.write_text(
            json.dumps({"settings": settings, "rows": rows, "episodes": played}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
