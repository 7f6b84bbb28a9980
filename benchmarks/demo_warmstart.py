"""The demo's warm start alone, saved: 10 SFT steps of behaviour cloning on oracle episodes
with ``research-env demo``'s own config (:func:`research_app.demo._config`), then
``policy.save(OUT/warm)``. For measurements that start where the demo's RL stage starts
(control retrievers, ablations) without running the demo's five evaluations.

    python -m benchmarks.demo_warmstart --out runs/warm   # about 11 minutes on a 2-core CPU
    research-env eval --model runs/warm/warm --baselines agent --controls empty random
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def demo_arguments(argv: list[str]) -> argparse.Namespace:
    """``research-env demo``'s arguments for ``argv``, parsed by the demo's own parser, so a
    flag the demo gains gets its default here too (a hand-made Namespace once missed one)."""
    from research_app.cli import build_parser

    return build_parser(["demo"]).parse_args(["demo", *argv])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="run directory")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=None, help="SFT steps (the demo's: 10)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from algorithms.policy import load_policy
    from algorithms.sft import SFT
    from research_app import demo
    from research_env.env import MultiHopSearchEnv

    demo_args = demo_arguments(
        ["--model", args.model, "--seed", str(args.seed)]
        + ([] if args.steps is None else ["--sft-steps", str(args.steps)])
    )
    s = demo._settings(demo_args)
    base = {"dataset": "synthetic", "retriever": "bm25", "top_k": 3, "max_turns": 5}
    dev = MultiHopSearchEnv(**base, split="dev")
    train = MultiHopSearchEnv(**base).samples
    train_kwargs = {**base, "split": "train", "dataset": train, "retriever": dev.retriever}
    policy = load_policy(args.model)
    steps = s["sft_steps"]
    config = demo._config(
        demo_args, args.out / "sft", "sft", steps, 2 * s["questions_per_step"], 1e-4
    )
    start = time.perf_counter()
    SFT(policy, train_kwargs, config).learn(steps)
    path = policy.save(args.out / "warm")
    print(f"warm start: {steps} SFT steps in {time.perf_counter() - start:.0f} s -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
