"""RL episodes per CPU-minute: today's demo RL settings against each cost lever, in one run.

An RL step of the demo (``research-env demo``: GRPO, 2 questions x group 4, the
``research`` template with its worked example, top-3 documents, bf16 rollout copy and bf16
autocast) costs 16-57 s on this 2-core CPU, most of it in the update. This script measures
what each lever buys, on the real SmolLM2-135M (the offline ``load_policy()`` default):

- ``demo``: the demo's RL config (``research_app.demo._config``) with its bf16 settings
  as they were before precision ``auto``: a bf16 rollout copy and bf16 autocast;
- ``fp32``: the same in float32 (what ``auto`` now picks on a CPU without native bf16);
  every lever below is on top of it;
- ``compact``: the ``research-compact`` template (~70 prompt tokens instead of ~350);
- ``top-k 2``: two documents per search instead of three;
- ``doc cap``: each document cut to ``--doc-words`` words (``env.max_doc_words``);
- ``top layers``: ``trainer.train_layers = --layers`` (the rest frozen);
- ``group 8``: one question x 8 samples instead of 2 x 4 (same episodes per step; the
  group's prompt is shared in the update, so micro-batches of 8);
- ``combined``: all of them but the doc cap (see RESULTS.md).

Fairness under a shared CPU: every arm starts each step from the same weights (a copy of
one warm-started policy, so the episodes look like the demo's RL stage rather than an
untrained model's), with ``--rounds 2`` or more the arms run interleaved (round 1: A B C ..., round 2: A B C
...),
every step uses the same questions and seed for all arms, torch runs one thread, and the
cost is the process's CPU time (``time.process_time``) of the rollout plus the update, so
time spent descheduled by other users' work is not charged. The zero-variance group
filter is off: a step then always pays for its update, as a learning step does (with it
on, a step whose groups all tie skips the update, which says more about the policy than
about the cost of an episode).

    python -m benchmarks.episode_cost            # 8 arms x 1 round (~15-25 min under load)
    python -m benchmarks.episode_cost --quick    # 1 round of demo, fp32, combined (~3 min)
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

SECTION = "## Episode cost (issue 15)"
MODEL = "smollm2-135m"


@dataclass
class Arm:
    """One setting: config overrides on top of the demo's RL config, and env overrides."""

    name: str
    config: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)


def arms(layers: int, doc_words: int, quick: bool) -> list[Arm]:
    fp32 = {"rollout.rollout_dtype": None, "trainer.autocast_dtype": None}
    # The demo as it was before precision "auto": bf16 decoding copy and bf16 autocast.
    bf16 = {"rollout.rollout_dtype": "bfloat16", "trainer.autocast_dtype": "bfloat16"}
    group8 = {"rollout.questions_per_step": 1, "rollout.group_size": 8,
              "trainer.micro_batch_size": 8}  # fmt: skip
    compact = {"template": "research-compact"}
    combined = Arm(
        "combined",
        {**fp32, **group8, "trainer.train_layers": layers},
        {**compact, "top_k": 2},
    )
    if quick:
        return [Arm("demo", bf16), Arm("fp32", fp32), combined]
    return [
        Arm("demo", bf16),
        Arm("fp32", fp32),
        Arm("compact", fp32, compact),
        Arm("top-k 2", fp32, {"top_k": 2}),
        Arm(f"doc cap {doc_words}w", fp32, {"max_doc_words": doc_words}),
        Arm(f"top {layers} layers", {**fp32, "trainer.train_layers": layers}),
        Arm("group 8", {**fp32, **group8}),
        combined,
    ]


@dataclass
class Measured:
    cpu_s: list[float] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)
    episodes: int = 0
    prompt: list[int] = field(default_factory=list)
    generated: list[int] = field(default_factory=list)
    observed: list[int] = field(default_factory=list)
    reward: list[float] = field(default_factory=list)
    valid: list[float] = field(default_factory=list)


def demo_setup(
    model: str, warmstart_steps: int, workdir: Path, warm_dir: Path | None = None
) -> tuple[Any, dict[str, Any], Any]:
    """The warm-started policy (read from ``warm_dir`` when it holds one, else made and,
    with ``warm_dir``, saved there), the demo's RL env kwargs, and its RL config."""
    import torch

    from algorithms.policy import load_policy
    from algorithms.registry import make_algorithm
    from research_app import demo
    from research_env.env import MultiHopSearchEnv

    ns = argparse.Namespace(model=model, seed=0)
    base = {"dataset": "synthetic", "retriever": "bm25", "top_k": 3, "max_turns": 5}
    dev = MultiHopSearchEnv(**base, split="dev")
    train = MultiHopSearchEnv(**base).samples
    settings = demo.FULL
    questions = demo._with_hops(train, settings["rl_min_hops"], settings["rl_max_hops"])
    rl_kwargs = {**base, "split": "train", "dataset": questions, "retriever": dev.retriever,
                 "reward": "research"}  # fmt: skip
    config = demo._config(ns, workdir / "rl", "grpo", 100, settings["questions_per_step"], 2e-5)
    config = config.with_overrides(
        {"trainer.filter_zero_variance_groups": False, "logging.progress_bar": False}
    )
    if warm_dir is not None and (warm_dir / "config.json").exists():
        policy = load_policy(str(warm_dir), device="cpu")
        policy.name = model
        return policy, rl_kwargs, config
    policy = load_policy(model, device="cpu")
    torch.manual_seed(0)
    # The warm start, as the demo's (oracle behaviour cloning, lr 1e-4, float32 here), half
    # its steps on each template so that the compact-prompt arms see a policy that knows the
    # protocol from either prompt.
    for i in range(warmstart_steps):
        template = "research" if i % 2 == 0 else "research-compact"
        sft_cfg = demo._config(ns, workdir / "sft", "sft", warmstart_steps, 2, 1e-4)
        sft_cfg = sft_cfg.with_overrides({"rollout.rollout_dtype": None,
                                          "trainer.autocast_dtype": None})  # fmt: skip
        sft = make_algorithm("sft", policy, {**rl_kwargs, "template": template}, sft_cfg)
        sft.step = i
        t0 = time.perf_counter()
        sft.train_step()
        print(f"warm start {i + 1}/{warmstart_steps} ({template}): "
              f"{time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
    if warm_dir is not None:
        policy.save(warm_dir)
    return policy, rl_kwargs, config


def one_step(policy: Any, rl_kwargs: dict[str, Any], config: Any, arm: Arm, step: int) -> Any:
    """A GRPO step of ``arm`` from a copy of ``policy``; the cost of rollout plus update."""
    from algorithms.registry import make_algorithm

    fresh = copy.copy(policy)
    fresh.model = copy.deepcopy(policy.model)
    algo = make_algorithm(
        "grpo", fresh, {**rl_kwargs, **arm.env}, config.with_overrides(arm.config)
    )
    _ = algo.engine, algo.num_questions  # the env and its engine: setup, not per step
    cpu0, wall0 = time.process_time(), time.perf_counter()
    trajectories = algo.collect_rollouts(step)
    algo.learn_from(trajectories)
    return trajectories, time.process_time() - cpu0, time.perf_counter() - wall0


def measure(args: argparse.Namespace) -> tuple[list[Arm], dict[str, Measured]]:
    import tempfile

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        policy, rl_kwargs, config = demo_setup(
            args.model, args.warmstart_steps, Path(tmp), args.warm_dir
        )
        chosen = arms(args.layers, args.doc_words, args.quick)
        if args.arms:
            unknown = set(args.arms) - {a.name for a in chosen}
            if unknown:
                raise SystemExit(
                    f"--arms: unknown {sorted(unknown)}; known {[a.name for a in chosen]}"
                )
            chosen = [a for a in chosen if a.name in args.arms]
        results = {arm.name: Measured() for arm in chosen}
        # With --warmup, round 0 is one uncounted step of the first arm (the process's
        # one-off costs: oneDNN's first kernels, the index's first queries); the warm
        # start pays most of those already. Each step builds its own algorithm and engine,
        # so no arm carries state into another's step.
        for round_ in range(int(args.warmup) + args.rounds):
            warmup = args.warmup and round_ == 0
            for arm in chosen[:1] if warmup else chosen:
                trajectories, cpu, wall = one_step(policy, rl_kwargs, config, arm, round_)
                tokens = [(len(t.prompt_ids), t.n_generated, len(t.response_ids) - t.n_generated)
                          for t in trajectories]  # fmt: skip
                print(f"round {round_} {arm.name:>14}: {cpu:6.1f} s CPU, {wall:6.1f} s wall, "
                      f"{len(trajectories)} episodes, tokens {tokens}, rewards "
                      f"{[round(t.reward, 2) for t in trajectories]}, valid "
                      f"{[int(bool(t.info.get('format_valid'))) for t in trajectories]}",
                      flush=True)  # fmt: skip
                if warmup:
                    continue
                m = results[arm.name]
                m.cpu_s.append(cpu)
                m.wall_s.append(wall)
                m.episodes += len(trajectories)
                for t in trajectories:
                    m.prompt.append(len(t.prompt_ids))
                    m.generated.append(t.n_generated)
                    m.observed.append(len(t.response_ids) - t.n_generated)
                    m.reward.append(t.reward)
                    m.valid.append(float(bool(t.info.get("format_valid"))))
    return chosen, results


def table(chosen: list[Arm], results: dict[str, Measured]) -> str:
    def rate(m: Measured, seconds: list[float]) -> float:
        return m.episodes / (sum(seconds) / 60)

    base = results[chosen[0].name]
    base_rate, base_wall = rate(base, base.cpu_s), rate(base, base.wall_s)
    lines = [
        "| setting | episodes / CPU-min | vs demo | episodes / wall-min | vs demo "
        "| tokens / episode (prompt + generated + docs) | reward | format valid |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for arm in chosen:
        m = results[arm.name]
        cpu_rate, wall_rate = rate(m, m.cpu_s), rate(m, m.wall_s)
        p, g, o = (statistics.mean(x) for x in (m.prompt, m.generated, m.observed))
        lines.append(
            f"| {arm.name} | {cpu_rate:.1f} | {cpu_rate / base_rate:.2f}x | {wall_rate:.1f} | "
            f"{wall_rate / base_wall:.2f}x | {p + g + o:.0f} ({p:.0f} + {g:.0f} + {o:.0f}) | "
            f"{statistics.mean(m.reward):.2f} | {statistics.mean(m.valid):.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from benchmarks.results import load_average, publish

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="measured rounds (after a warm-up)")
    parser.add_argument("--quick", action="store_true", help="1 round; demo, fp32, combined")
    parser.add_argument("--layers", type=int, default=6, help="train_layers of the lever")
    parser.add_argument("--doc-words", type=int, default=16, help="max_doc_words of the lever")
    parser.add_argument("--warmstart-steps", type=int, default=2, help="SFT steps first")
    parser.add_argument("--model", default=MODEL, help="policy (tiny-random: a smoke run)")
    parser.add_argument(
        "--warmup",
        action="store_true",
        help="one uncounted step first (the warm start already warms up)",
    )
    parser.add_argument("--arms", nargs="*", default=None, help="run only these arms")
    parser.add_argument(
        "--warm-dir",
        type=Path,
        default=None,
        help="reuse the warm-started policy saved here (saved on first use)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch RESULTS.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 1
    load_before = load_average()
    chosen, results = measure(args)
    command = "python -m benchmarks.episode_cost" + (" --quick" if args.quick else "")
    block = (
        f"### Measured\n\n`{command}` (rounds {args.rounds}, train_layers {args.layers}, doc "
        f"cap {args.doc_words} words, {args.warmstart_steps} warm-start steps of 2 questions, "
        f"{args.threads} thread), {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, load "
        f"{load_before} before and {load_average()} after; {args.model}, GRPO steps of 8 "
        f"episodes, each from the same warm-started weights.\n\n{table(chosen, results)}\n"
    )
    publish(block, within=SECTION, write=not args.no_write)


if __name__ == "__main__":
    main()
