"""How much margin the learning tests have: gain per seed, per CPU kernel set, per broken update.

The learning tests (``tests/test_trainer.py``, ``tests/test_episode_cost.py``) train the
tiny random model on the *spaces task* below for a fixed budget and compare its evaluation
reward before and after. One seed on one CPU is a knife edge: ATen picks other vectorised
kernels on a CPU without AVX-512, their float sums round differently, and 16-32 steps of RL
turn that into another run. So each test trains several seeds and asks for a mean gain
(:data:`THRESHOLD`) that sits well under what working updates reach on every kernel set
measured and well above what broken updates reach (RESULTS.md, "Tests on every CPU").

The task: a one-turn env whose reward is the share of the turn's 12 token slots filled with
spaces (at most one per slot, so the reward lies in [0, 1]). The tiny random model starts
near 0.65; a working update raises it toward 1 within 16-32 steps at a high learning rate.
An unbounded count of spaces (the task before 2026-12-07) let single runs find tokens of 16
spaces and score 20, so one lucky seed decided any mean.

    python -m benchmarks.learning_margin --seeds 0 1 2 3 4 --settings native avx2 default \\
        --mutations none sign zero mask

runs every combination in a fresh process (the kernel set is fixed when torch loads) and
prints a Markdown table: the gain per seed, and the mean over the tests' seeds.

    python -m benchmarks.learning_margin --bitwise \\
        --settings native aten-avx2 onednn-avx2 mkl-avx2 avx2 default

says which limits change results at all: hashes of three GRPO steps' logged statistics and
final weights, in float32 and in bf16, per setting.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from statistics import mean
from typing import Any

from research_env.data.types import QASample
from research_env.templates import PromptTemplate

TURN_TOKENS = 12
SAMPLES = [QASample(f"q{i}", f"Question {i}: say something.", ("x",)) for i in range(8)]
BARE = PromptTemplate(name="bare", instructions="", question_format="{question}")
# The cheap-episode levers (tests/test_episode_cost.py): the compact template, a document
# cap, only the top block training, precision "auto" and groups of 8 sharing one prompt.
LEVERS = {
    "rollout.questions_per_step": 2,
    "rollout.group_size": 8,
    "rollout.rollout_dtype": "auto",
    "trainer.autocast_dtype": "auto",
    "trainer.train_layers": 1,
}
LEVER_ENV = {"template": "research-compact", "max_doc_words": 8}
# Each learning test's recipe: algorithm, budget in steps, settings, env settings.
RECIPES: dict[str, tuple[str, int, dict[str, Any], dict[str, Any]]] = {
    "grpo": ("grpo", 16, {}, {}),
    "reinforce": ("reinforce", 18, {}, {}),
    "ppo": ("ppo", 20, {}, {}),
    "grpo-levers": ("grpo", 32, LEVERS, LEVER_ENV),
}
# The seeds each learning test trains.
TEST_SEEDS = (0, 1, 2)
# The mean gain over TEST_SEEDS a working update must exceed (see the module docstring).
THRESHOLD = 0.1
# Kernel sets a process can be limited to (environment variables read when torch loads).
SETTINGS = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "default": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"},
    # One library limited at a time, for --bitwise: which limits change results at all.
    "aten-avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "onednn-avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "mkl-avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}
MUTATIONS = ("none", "sign", "zero", "mask")


# A measuring run's settings that keep it quiet: no wandb, bar, console lines or files.
QUIET_RUN = {
    "logging.wandb": False,
    "logging.progress_bar": False,
    "logging.every": 0,
    "checkpoint.every": 0,
    "checkpoint.export_final": False,
}


class NoDocuments:
    def search(self, queries: list[str], k: int) -> list[list[Any]]:
        return [[] for _ in queries]


def spaces_per_slot(record: Any) -> float:
    """The share of the turn's token slots filled with spaces, at most one per slot."""
    return min(record.turns[0].count(" "), TURN_TOKENS) / TURN_TOKENS


def env_kwargs() -> dict[str, Any]:
    return {
        "dataset": SAMPLES,
        "retriever": NoDocuments(),
        "max_turns": 1,
        "reward": spaces_per_slot,
        "template": BARE,
    }


def task_config(algo: str, out: Any, **overrides: Any) -> Any:
    from algorithms.config import TrainConfig

    base = {
        "output_dir": str(out),
        "optim.lr": 3e-2,
        "optim.max_grad_norm": 1.0,
        "rollout.questions_per_step": 4,
        "rollout.group_size": 4,
        "rollout.max_turn_tokens": TURN_TOKENS,
        "rollout.prompt_format": "text",
        "trainer.micro_batch_size": 16,
        "trainer.seed": 0,
        "eval.questions": 8,
        "eval.temperature": 1.0,
        **QUIET_RUN,
        "grpo.kl_coef": 0.0,
        "ppo.kl_coef": 0.0,
    }
    return TrainConfig(algo=algo).with_overrides({**base, **overrides})


def make(algo: str, out: Any, **overrides: Any) -> Any:
    """The algorithm on the spaces task with the tiny random policy."""
    from algorithms.policy import load_policy
    from algorithms.registry import make_algorithm

    policy = load_policy("tiny-random", device="cpu")
    return make_algorithm(algo, policy, env_kwargs(), task_config(algo, out, **overrides))


def learning_gain(
    recipe: str, seed: int, out: Any, steps: int | None = None
) -> tuple[float, float]:
    """Evaluation reward before and after training ``RECIPES[recipe]`` with ``seed``.

    Recipes with precision "auto" train in bf16 on a CPU with native bf16; the tests pin
    "auto" to float32 (``cpu_has_native_bf16``) so every machine runs the same recipe."""
    algo_name, recipe_steps, overrides, env = RECIPES[recipe]
    algo = make(algo_name, out, **{"trainer.seed": seed, **overrides})
    algo.env_kwargs |= env
    algo.eval_env_kwargs |= env
    before = algo.evaluate()["eval/reward"]
    algo.learn(steps or recipe_steps)
    return before, algo.evaluate()["eval/reward"]


@contextlib.contextmanager
def broken_update(kind: str) -> Iterator[None]:
    """The policy-gradient term broken on purpose: ``sign`` flips the advantages, ``zero``
    zeroes them, ``mask`` inverts the loss mask (training on every token but the policy's)."""
    import torch

    import algorithms.objectives.objective as objective

    if kind == "none":
        yield
        return
    if kind not in MUTATIONS:
        raise ValueError(f"unknown mutation {kind!r}; choose from {', '.join(MUTATIONS)}")
    real = objective.clipped_policy_loss

    def broken(logprobs, old_logprobs, advantages, mask, **kwargs):  # type: ignore[no-untyped-def]
        if kind == "sign":
            advantages = -advantages
        elif kind == "zero":
            advantages = torch.zeros_like(advantages)
        else:
            mask = 1 - mask
        return real(logprobs, old_logprobs, advantages, mask, **kwargs)

    objective.clipped_policy_loss = broken  # type: ignore[assignment]
    try:
        yield
    finally:
        objective.clipped_policy_loss = real


def _one(recipe: str, seed: int, mutation: str, steps: int | None) -> None:
    import torch

    import algorithms.precision

    torch.set_num_threads(1)  # as the tests run (tests/conftest.py)
    algorithms.precision.cpu_has_native_bf16 = lambda: False  # as the tests pin "auto"
    with tempfile.TemporaryDirectory() as out, broken_update(mutation):
        before, after = learning_gain(recipe, seed, out, steps)
    print(json.dumps({"before": before, "after": after, "capability":
                      torch.backends.cpu.get_cpu_capability()}))  # fmt: skip


def _bits(dtype: str) -> None:
    """Three GRPO steps of the spaces task: a hash of every logged loss statistic and of
    the weights, to compare kernel sets bit for bit (``dtype``: float32 or bfloat16, the
    latter decoding and autocasting the update in bf16)."""
    import hashlib

    import torch

    torch.set_num_threads(1)
    low = (
        {}
        if dtype == "float32"
        else {"trainer.autocast_dtype": dtype, "rollout.rollout_dtype": dtype}
    )
    with tempfile.TemporaryDirectory() as out:
        algo = make("grpo", out, **low)
        algo.learn(3)
        lines = (Path(out) / "metrics.jsonl").read_text().splitlines()
    logged = [json.loads(line).get(k) for line in lines
              for k in ("train/pg_loss", "train/grad_norm", "train/entropy")]  # fmt: skip
    weights = torch.cat([p.detach().float().flatten() for p in algo.policy.model.parameters()])
    print(json.dumps({"metrics": hashlib.sha1(repr(logged).encode()).hexdigest()[:10],
                      "weights": hashlib.sha1(weights.numpy().tobytes()).hexdigest()[:10],
                      "capability": torch.backends.cpu.get_cpu_capability()}))  # fmt: skip


def measure(
    recipe: str, seed: int, setting: str, mutation: str, steps: int | None = None
) -> dict[str, Any]:
    """One run in a fresh process limited to ``setting``'s kernels."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **SETTINGS[setting]}
    for name in {v for s in SETTINGS.values() for v in s} - set(SETTINGS[setting]):
        env.pop(name, None)  # "native" means no limit, whatever the caller's shell set
    command = [sys.executable, "-m", "benchmarks.learning_margin", "--one",
               recipe, str(seed), mutation, str(steps or 0)]  # fmt: skip
    if recipe.startswith("bits:"):
        command[3:] = ["--one-bits", recipe.removeprefix("bits:")]
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(TEST_SEEDS))
    parser.add_argument("--settings", nargs="+", default=["native", "avx2"],
                        choices=list(SETTINGS))  # fmt: skip
    parser.add_argument("--mutations", nargs="+", default=["none"], choices=MUTATIONS)
    parser.add_argument("--steps", type=int, default=None,
                        help="train this many steps instead of the recipe's")  # fmt: skip
    parser.add_argument("--one", nargs=4, metavar=("RECIPE", "SEED", "MUTATION", "STEPS"),
                        help=argparse.SUPPRESS)  # fmt: skip
    parser.add_argument(
        "--bitwise",
        action="store_true",
        help="compare the settings bit for bit (3 GRPO steps, float32 and bf16)",
    )
    parser.add_argument("--one-bits", metavar="DTYPE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one_bits:
        _bits(args.one_bits)
        return 0
    if args.bitwise:
        print("| kernels | float32: metrics, weights | bf16: metrics, weights |")
        print("| --- | --- | --- |")
        for setting in args.settings:
            runs = [
                measure(f"bits:{dtype}", 0, setting, "none") for dtype in ("float32", "bfloat16")
            ]
            cells = [f"{run['metrics']}, {run['weights']}" for run in runs]
            print(f"| {setting} ({runs[0]['capability']}) | {cells[0]} | {cells[1]} |", flush=True)
        return 0
    if args.one:
        _one(args.one[0], int(args.one[1]), args.one[2], int(args.one[3]) or None)
        return 0
    print("| recipe | kernels | update | gain per seed | mean over test seeds |")
    print("| --- | --- | --- | --- | ---: |")
    for recipe in args.recipes:
        for setting in args.settings:
            for mutation in args.mutations:
                gains = {}
                for seed in args.seeds:
                    run = measure(recipe, seed, setting, mutation, args.steps)
                    gains[seed] = run["after"] - run["before"]
                test_gains = [gains[s] for s in TEST_SEEDS if s in gains]
                shown = ", ".join(f"{s}: {g:+.3f}" for s, g in gains.items())
                mean_text = f"{mean(test_gains):+.3f}" if test_gains else "-"
                print(f"| {recipe} | {setting} ({run['capability']}) | {mutation} | {shown} "
                      f"| {mean_text} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
