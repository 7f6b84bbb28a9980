"""What the 8-bit decoding copy costs in quality: greedy evaluation with the int8 copy
against float32 on the same questions, paired.

Both runs play the demo's evaluation (synthetic dev split, BM25, top-3, 5 turns, 96-token
turns, 1,024 tokens per episode, greedy) on the first ``--questions`` dev questions, one
with ``rollout_dtype`` float32 (the packed float32 copy), one with int8. Per question the
two episodes are compared; the report gives each run's EM, format validity and searches,
the paired change int8 - float32 with its 95% interval over questions
(:func:`research_env.intervals.paired_interval`), and the fraction of questions whose two
episodes are identical (same model text in every turn), with its Wilson interval.

    python -m benchmarks.int8_quality --model smollm2-135m --questions 50 --avx2
    python -m benchmarks.int8_quality --model runs/<demo>/grpo/final --questions 200 --avx2

``--avx2`` runs it with the AVX2 kernel limits of :mod:`benchmarks.int8_decode`.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from research_env.intervals import paired_interval, plus_minus, wilson

METRICS = ("em", "format_valid", "searches")
DTYPES = ("float32", "int8")


def paired_report(
    policy: Any,
    env_kwargs: dict[str, Any],
    questions: int,
    *,
    max_turn_tokens: int = 96,
    max_total_tokens: int = 1024,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Greedy evaluations of ``policy`` on the first ``questions`` questions with each of
    :data:`DTYPES`, and their paired comparison: ``{"runs": {dtype: {metric: mean}},
    "change": {metric: (mean, half)}, "identical": (rate, low, high), "n", "seconds"}``."""
    from algorithms.rollout import Sampling
    from research_app.harness import evaluate_model
    from research_env.env import MultiHopSearchEnv

    base = MultiHopSearchEnv(**env_kwargs)
    sampling = Sampling(
        greedy=True, max_turn_tokens=max_turn_tokens, max_total_tokens=max_total_tokens
    )
    episodes, runs, seconds = {}, {}, {}
    for dtype in DTYPES:
        result = evaluate_model(
            policy, env_kwargs, limit=questions, sampling=sampling, rollout_dtype=dtype,
            pack_weights=True, batch_size=batch_size, base_env=base, show_progress=False,
        )  # fmt: skip
        episodes[dtype] = sorted(result.episodes, key=lambda e: str(e["question_id"]))
        runs[dtype] = {m: float(result.overall.get(m, 0.0)) for m in METRICS}
        seconds[dtype] = result.seconds
    fp32, int8 = episodes["float32"], episodes["int8"]
    if [e["question_id"] for e in fp32] != [e["question_id"] for e in int8]:
        raise RuntimeError("the two evaluations played different questions")
    change = {
        m: paired_interval([float(e.get(m, 0)) for e in fp32], [float(e.get(m, 0)) for e in int8])
        for m in METRICS
    }
    same = sum(_turns(a) == _turns(b) for a, b in zip(fp32, int8, strict=True))
    low, high = wilson(same, len(fp32))
    return {
        "n": len(fp32),
        "runs": runs,
        "change": change,
        "identical": (same / len(fp32), low, high),
        "seconds": seconds,
    }


def _turns(episode: dict[str, Any]) -> list[str]:
    return [turn["model"] for turn in episode.get("turn_texts", [])]


def markdown(report: dict[str, Any]) -> str:
    """The report as a table: one row per metric, then the identical-episode share."""
    runs, change = report["runs"], report["change"]
    lines = [
        f"{report['n']} questions, greedy; seconds per question: float32 "
        f"{report['seconds']['float32'] / report['n']:.1f}, int8 "
        f"{report['seconds']['int8'] / report['n']:.1f}",
        "",
        "| metric | float32 | int8 | int8 - float32 (paired, 95%) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for m in METRICS:
        lines.append(
            f"| {m} | {runs['float32'][m]:.3f} | {runs['int8'][m]:.3f} | {plus_minus(*change[m])} |"
        )
    rate, low, high = report["identical"]
    lines.append(f"| identical episodes | | {rate:.3f} | Wilson 95% [{low:.3f}, {high:.3f}] |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="offline name or directory")
    parser.add_argument("--questions", type=int, default=50, help="first N dev questions")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--avx2", action="store_true", help="limit the kernels to AVX2 first")
    args = parser.parse_args(argv)
    if args.avx2:
        from benchmarks.int8_decode import rerun_under_avx2_limits

        rerun_under_avx2_limits("benchmarks.int8_quality", argv)
    import torch

    from algorithms.policy import load_policy

    torch.set_num_threads(args.threads)
    policy = load_policy(args.model, device="cpu")
    env_kwargs = {"split": "dev", "top_k": 3, "max_turns": 5}
    start = time.perf_counter()
    report = paired_report(policy, env_kwargs, args.questions)
    print(f"model {args.model}, ATen kernels {torch.backends.cpu.get_cpu_capability()}, "
          f"{time.perf_counter() - start:.0f} s in all")  # fmt: skip
    print(markdown(report))


if __name__ == "__main__":
    main()
