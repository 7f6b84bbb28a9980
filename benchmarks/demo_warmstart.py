"""The demo's warm start alone, saved: 10 SFT steps of behaviour cloning on oracle episodes
with ``research-env demo``'s own config (:func:`research_app.demo._config`), then
``policy.save(OUT/warm)``. For measurements that start where the demo's RL stage starts
(control retrievers, ablations) without running the demo's five evaluations.

    python -m benchmarks.demo_warmstart --out runs/warm   # about 11 minutes on a 2-core CPU
    python -m benchmarks.demo_warmstart --out runs/warm-s1 --seed 1 --eval 100  # and score it
    research-env eval --model runs/warm/warm --baselines agent --controls empty random

Cheaper warm starts, for measuring what they cost in EM: ``--train-layers 6`` fine-tunes
only the top 6 blocks (the demo's RL setting), ``--lora 16`` trains rank-16 LoRA adapters
on the attention and MLP projections and saves the merged model; ``--lr`` overrides the
demo's 1e-4 (LoRA usually wants about ten times more); ``--schedule cosine`` decays it to 0
by the last step, so the last steps move the weights least.
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
    parser.add_argument("--lr", type=float, default=1e-4, help="learning rate (the demo's)")
    parser.add_argument(
        "--schedule",
        default="constant",
        choices=("constant", "linear", "cosine"),
        help="learning-rate schedule over the steps (the demo's: constant)",
    )
    parser.add_argument(
        "--eval",
        type=int,
        default=0,
        metavar="N",
        help="then score it as the demo does on the first N dev questions (the demo's: 100)",
    )
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--train-layers", type=int, default=None, help="train the top N blocks")
    what.add_argument("--lora", type=int, default=None, metavar="R", help="LoRA of rank R")
    args = parser.parse_args(argv)

    from algorithms.policy import LoraSettings, load_policy
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
    lora = None
    if args.lora is not None:
        mlp = ("gate_proj", "up_proj", "down_proj")  # the default adapts attention only
        projections = LoraSettings().target_modules + mlp
        lora = LoraSettings(r=args.lora, alpha=2 * args.lora, target_modules=projections)
    policy = load_policy(args.model, lora=lora)
    steps = s["sft_steps"]
    config = demo._config(
        demo_args,
        args.out / "sft",
        "sft",
        steps,
        2 * s["questions_per_step"],
        args.lr,
        train_layers=args.train_layers,
    )
    config.optim.schedule = args.schedule
    start = time.perf_counter()
    SFT(policy, train_kwargs, config).learn(steps)
    seconds = time.perf_counter() - start
    if lora is not None:  # a plain model directory, which every command loads as it is
        policy.model = policy.model.merge_and_unload()
        policy.lora = None
    path = policy.save(args.out / "warm")
    print(
        f"warm start: {steps} SFT steps in {seconds:.0f} s ({seconds / steps:.1f} s per step) -> {path}"
    )
    if args.eval:
        eval_kwargs = {**base, "dataset": dev.samples, "retriever": dev.retriever}
        demo.evaluate(policy, eval_kwargs, dev, args.eval, "warm start", rollout_dtype="auto")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
