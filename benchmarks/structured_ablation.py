"""Ablate the retriever and the reward on ``ReSearch-MultiHop-Structured-v0`` with SB3 PPO.

Each condition trains PPO for ``--timesteps`` env steps with several seeds, then plays the
first ``--questions`` questions of the dev split greedily (the same questions for every
run). The table gives the mean over seeds and a 95% t-interval of dev EM, F1 and searches
per episode, next to the uniformly random policy on the same questions.

The ``empty`` retriever (no documents) and the ``random`` one (documents unrelated to the
query) are the controls that show whether search is used at all.

    python benchmarks/structured_ablation.py --seeds 3 --timesteps 12000
    python benchmarks/structured_ablation.py --condition "top-1: top_k=1" \
        --condition "top-5: top_k=5" --condition "3 turns: max_turns=3, reward=f1"

``--condition "NAME: key=value, ..."`` (repeatable) replaces the default conditions; the
keys are :class:`~research_env.structured.StructuredSearchEnv` arguments (``retriever``,
``reward``, ``top_k``, ``max_turns``, ``n_queries`` ...), values parsed as YAML.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import yaml

from algorithms.sb3 import evaluate, model_actor, random_actor, train
from research_env.intervals import mean_interval, plus_minus

CONDITIONS: dict[str, dict[str, object]] = {
    "bm25, reward research": {"retriever": "bm25", "reward": "research"},
    "bm25, reward em": {"retriever": "bm25", "reward": "em"},
    "random retriever, reward research": {"retriever": "random", "reward": "research"},
    "empty retriever, reward research": {"retriever": "empty", "reward": "research"},
}


def interval(values: list[float]) -> str:
    """``mean ± half-width`` of a 95% t-interval over seeds; one seed has no interval."""
    return plus_minus(*mean_interval(values))


def parse_condition(text: str) -> tuple[str, dict[str, object]]:
    """``"NAME: key=value, key=value"`` -> ``(NAME, {key: value})``."""
    name, sep, body = text.partition(":")
    if not sep:
        raise SystemExit(f"--condition {text!r}: write 'NAME: key=value, ...'")
    kwargs: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in body.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"--condition {text!r}: {item!r} is not key=value")
        kwargs[key.strip()] = yaml.safe_load(value.strip())
    return name.strip(), kwargs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--timesteps", type=int, default=12_000)
    parser.add_argument("--questions", type=int, default=200, help="dev questions per eval")
    parser.add_argument("--algo", default="sb3-ppo", choices=["sb3-ppo", "sb3-dqn"])
    parser.add_argument(
        "--condition",
        action="append",
        default=[],
        metavar="'NAME: key=value, ...'",
        help="an env setting to compare (repeatable; replaces the default conditions)",
    )
    args = parser.parse_args()
    conditions = dict(map(parse_condition, args.condition)) if args.condition else CONDITIONS

    print(
        f"{args.algo}, {args.timesteps} steps, seeds 0..{args.seeds - 1}, "
        f"first {args.questions} dev questions"
    )
    print("| condition | policy | dev EM | dev F1 | searches / episode | train s / seed |")
    print("|---|---|---|---|---|---|")
    for name, env_kwargs in conditions.items():
        eval_kwargs = {**env_kwargs, "split": "dev"}
        trained, baseline, seconds = [], [], []
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            model = train(args.algo, env_kwargs, timesteps=args.timesteps, seed=seed)
            seconds.append(time.perf_counter() - t0)
            trained.append(evaluate(model_actor(model), eval_kwargs, questions=args.questions))
            n_actions = int(model.action_space.n)
            baseline.append(
                evaluate(random_actor(n_actions, seed), eval_kwargs, questions=args.questions)
            )
        for label, rows in (("PPO" if args.algo == "sb3-ppo" else "DQN", trained),
                            ("random", baseline)):  # fmt: skip
            cells = [interval([r[k] for r in rows]) for k in ("em", "f1", "searches")]
            spent = f"{np.mean(seconds):.0f}" if rows is trained else "-"
            print(f"| {name} | {label} | {' | '.join(cells)} | {spent} |", flush=True)


if __name__ == "__main__":
    main()
