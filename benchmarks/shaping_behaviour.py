"""Does a step-level search reward change what the policy does? Shaped vs unshaped GRPO.

The tiny random model cannot write protocol tags, so :class:`SpaceTaggedEnv` reads each of
its turns as one: a turn whose first token starts with a space is a search for its own
text, any other turn an answer. Whether the model "searches" is then a choice of its first
token that it can learn, and the env's own shaping code scores it. Sampling at temperature
0.5 makes the random model's first-token distribution peaked enough (a few tokens carry
most of the mass) for a few GRPO steps to move it; about 60% of first turns search before
training.

The task: 2-hop questions, 2 turns, reward ``em`` against a golden answer random text never
matches, so the answer reward is 0 for every episode. With ``no_search_multihop`` the
env subtracts the penalty from an answer given before any search; without shaping every
reward is 0 and GRPO has nothing to learn from. Each run trains ``steps`` GRPO steps
(``credit: turn``) and measures the rate of episodes that searched first, before and
after, on the same sampled evaluation episodes (seeded).

    python -m benchmarks.shaping_behaviour --seeds 0 1 2 3 4 --steps 3

prints a Markdown table (mean over seeds and a 95% t-interval of the change).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from benchmarks.learning_margin import QUIET_RUN
from research_env.data.types import QASample
from research_env.env import MultiHopSearchEnv
from research_env.episode import Episode
from research_env.intervals import paired_interval
from research_env.templates import PromptTemplate

TURN_TOKENS = 4
SAMPLES = [
    QASample(f"q{i}", f"Question {i}: say something.", ("zzqx",), {"hops": 2}) for i in range(4)
]
BARE = PromptTemplate(name="bare", instructions="", question_format="{question}")


class NoDocuments:
    """A retriever that finds nothing: the task is about whether the policy searches."""

    def search(self, queries: list[str], k: int) -> list[list[Any]]:
        return [[] for _ in queries]


class SpaceTaggedEpisode(Episode):
    """An episode that reads a random model's turn as a protocol turn (see the module)."""

    def begin_turn(self, text: Any) -> str | None:
        text = text if isinstance(text, str) else ""
        tag = "search" if text[:1].isspace() else "answer"
        return super().begin_turn(f"<{tag}>{text}</{tag}>")


class SpaceTaggedEnv(MultiHopSearchEnv):
    """``MultiHopSearchEnv`` whose episodes are :class:`SpaceTaggedEpisode`."""

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        prompt, info = super().reset(seed=seed, options=options)
        assert self.episode is not None
        self.episode = SpaceTaggedEpisode(
            self.episode.sample, self.template, self.rules, self.reward_fn
        )
        return prompt, info


def env_kwargs(shaping: dict[str, float] | None) -> dict[str, Any]:
    return {
        "env_class": SpaceTaggedEnv,
        "dataset": SAMPLES,
        "retriever": NoDocuments(),
        "max_turns": 2,
        "reward": "em",
        "template": BARE,
        "shaping": shaping,
    }


def make_grpo(shaping: dict[str, float] | None, seed: int, out: str) -> Any:
    """A GRPO run on the tiny random model (kl 0, high lr: it must move in a few steps)."""
    from algorithms.config import TrainConfig
    from algorithms.policy import load_policy
    from algorithms.registry import make_algorithm

    config = TrainConfig(algo="grpo").with_overrides(
        {
            "output_dir": out,
            "optim.lr": 3e-2,
            "rollout.questions_per_step": 2,
            "rollout.group_size": 8,
            "rollout.temperature": 0.5,
            "rollout.max_turn_tokens": TURN_TOKENS,
            "rollout.max_total_tokens": 64,
            "rollout.prompt_format": "text",
            "trainer.micro_batch_size": 16,
            "trainer.seed": seed,
            "eval.questions": len(SAMPLES),
            **QUIET_RUN,
            "grpo.kl_coef": 0.0,
            "grpo.credit": "turn",
        }
    )
    policy = load_policy("tiny-random", device="cpu")
    return make_algorithm("grpo", policy, env_kwargs(shaping), config)


def search_first_rate(algo: Any, samples_per_question: int = 8) -> float:
    """The share of sampled episodes (fixed seed, so the same draws for every policy) whose
    first turn was a search."""
    sampling = algo.config.rollout.sampling(seed=12345)
    with torch.random.fork_rng(devices=[]):
        episodes = algo.engine.collect(
            list(range(len(SAMPLES))), samples_per_question, sampling=sampling
        )
    return float(np.mean([t.info["searches"] >= 1 for t in episodes]))


def run(shaping: dict[str, float] | None, seed: int, steps: int, out: str) -> tuple[float, float]:
    """``(search-first rate before, after)`` ``steps`` GRPO steps."""
    algo = make_grpo(shaping, seed, out)
    before = search_first_rate(algo)
    algo.learn(steps)
    return before, search_first_rate(algo)


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--penalty", type=float, default=1.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    conditions = {
        "no shaping": None,
        f"no_search_multihop = {args.penalty}": {"no_search_multihop": args.penalty},
    }
    rows = [
        f"| condition | search-first rate before | after {args.steps} steps | change (95% t) |",
        "|---|---|---|---|",
    ]
    for name, shaping in conditions.items():
        t0 = time.perf_counter()
        pairs = []
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as out:
                pairs.append(run(shaping, seed, args.steps, out))
        before, after = np.array(pairs).T
        mean, half = paired_interval(list(before), list(after))
        rows.append(
            f"| {name} | {before.mean():.3f} | {after.mean():.3f} | "
            f"{mean:+.3f} {'(one seed)' if half is None else f'± {half:.3f}'} |  <!-- {time.perf_counter() - t0:.0f} s, "
            f"per seed: {', '.join(f'{b:.3f}->{a:.3f}' for b, a in pairs)} -->"
        )
    print("\n".join(rows), flush=True)


if __name__ == "__main__":
    main()
