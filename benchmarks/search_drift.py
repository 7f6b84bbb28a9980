"""Why RL makes the policy search less: where a GRPO step's gradient comes from, per hop count.

Rolls out a policy as the RL stage would (the config's groups, reward, token budgets and
sampling temperature), on questions of each hop count separately, without updating, and
measures the three hypotheses of the search-drift study (RESULTS.md, "RL that teaches
search"):

1. *The gradient on multi-hop questions is mostly format credit*: per hop count, the
   fraction of flat groups (no reward spread, so no gradient), the fraction of groups whose
   spread comes only from format credit (every episode's EM and F1 are 0, yet the rewards
   differ), and each hop count's share of the step's |advantage| mass (GRPO's
   ``(r - mean) / (std + eps)``, summed over generated tokens, weighted by the split's hop
   mix).
2. *The token budget punishes searching*: per hop count and number of searches, the share of
   episodes cut by the token or turn budget (reward 0) and the mean reward.
3. *One-hop questions dominate the useful signal*: the |advantage| shares of (1), and the
   mean advantage of an episode per number of searches (a negative one on searches >= 2
   means searching more is pushed down).

    python -m benchmarks.search_drift --model RUN/warm --config configs/ablation-cpu.yaml \\
        --questions-per-hop 32 --json drift.json
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SEARCH_BINS = ("0", "1", "2", "3", "4+")


def _bin(searches: int) -> str:
    return SEARCH_BINS[min(searches, 4)]


def group_advantages(rewards: Sequence[float], eps: float = 1e-6) -> list[float]:
    """GRPO's outcome advantages for one group (unbiased std, as the trainer's ``grpo``)."""
    n = len(rewards)
    mean = sum(rewards) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / (n - 1)) if n > 1 else 0.0
    return [(r - mean) / (std + eps) for r in rewards]


def episode_row(trajectory: Any) -> dict[str, Any]:
    info = trajectory.info
    reason = trajectory.finish_reason
    return {
        "group": trajectory.group,
        "reward": float(trajectory.reward),
        "em": float(info.get("em", 0.0)),
        "f1": float(info.get("f1", 0.0)),
        "valid": bool(info.get("format_valid", False)),
        "searches": int(info.get("searches", 0)),
        "cut": str(getattr(reason, "value", reason)) in ("token_budget", "turn_budget"),
        "tokens": int(sum(trajectory.loss_mask)),
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Group and search statistics of one hop count's episodes (``rows`` from
    :func:`episode_row`; a ``group`` key of the same value marks one GRPO group)."""
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[row["group"]].append(row)
    flat = format_only = 0
    mass = token_mass = 0.0
    by_searches: dict[str, list[tuple[dict[str, Any], float]]] = defaultdict(list)
    for members in groups.values():
        rewards = [m["reward"] for m in members]
        advantages = group_advantages(rewards)
        if max(rewards) - min(rewards) < 1e-9:
            flat += 1
        elif all(m["em"] == 0 and m["f1"] == 0 for m in members):
            format_only += 1
        for m, a in zip(members, advantages, strict=True):
            mass += abs(a)
            token_mass += abs(a) * m["tokens"]
            by_searches[_bin(m["searches"])].append((m, a))
    n = len(rows)
    searches = {
        key: {
            "episodes": len(items),
            "share": len(items) / n,
            "cut": sum(m["cut"] for m, _ in items) / len(items),
            "reward": sum(m["reward"] for m, _ in items) / len(items),
            "em": sum(m["em"] for m, _ in items) / len(items),
            "advantage": sum(a for _, a in items) / len(items),
        }
        for key, items in sorted(by_searches.items())
    }
    return {
        "episodes": n,
        "groups": len(groups),
        "flat_groups": flat / len(groups),
        "format_only_groups": format_only / len(groups),
        "em": sum(r["em"] for r in rows) / n,
        "valid": sum(r["valid"] for r in rows) / n,
        "cut": sum(r["cut"] for r in rows) / n,
        "searches": sum(r["searches"] for r in rows) / n,
        "abs_advantage_per_group": mass / len(groups),
        "abs_advantage_tokens_per_group": token_mass / len(groups),
        "by_searches": searches,
    }


def advantage_shares(per_hop: dict[int, dict[str, Any]], mix: dict[int, float]) -> dict[int, Any]:
    """Each hop count's share of a step's |advantage| mass when groups are drawn in the
    split's hop ``mix``: mix x mass per group, normalized (per episode and token-weighted)."""
    out: dict[int, Any] = {}
    for key in ("abs_advantage_per_group", "abs_advantage_tokens_per_group"):
        weights = {h: mix.get(h, 0.0) * s[key] for h, s in per_hop.items()}
        total = sum(weights.values()) or 1.0
        for h, w in weights.items():
            out.setdefault(h, {})[key.replace("abs_advantage", "share")] = w / total
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[-1],
    )
    parser.add_argument("--model", required=True, help="policy to roll out (a saved folder)")
    parser.add_argument("--config", type=Path, default=Path("configs/ablation-cpu.yaml"))
    parser.add_argument("--set", action="append", default=[], help="config override k=v")
    parser.add_argument("--questions-per-hop", type=int, default=32)
    parser.add_argument("--hops", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the measurements here")
    args = parser.parse_args(argv)

    from algorithms.config import TrainConfig
    from algorithms.policy import load_policy
    from algorithms.registry import algorithm_class
    from research_env.env import MultiHopSearchEnv

    scratch = Path(tempfile.mkdtemp(prefix="search-drift-"))
    config = TrainConfig.from_yaml(args.config).with_overrides(
        [*args.set, f"trainer.seed={args.seed}", f"output_dir={scratch}"]
    )
    env = config.env
    full = MultiHopSearchEnv(**env.to_env_kwargs(split="train"))
    samples = full.samples
    mix_counts = Counter(int(s.metadata.get("hops", 0)) for s in samples)
    mix = {h: c / len(samples) for h, c in mix_counts.items()}
    policy = load_policy(args.model)
    algo_cls = algorithm_class(config.algo)
    per_hop: dict[int, dict[str, Any]] = {}
    started = time.perf_counter()
    for hops in args.hops:
        chosen = [s for s in samples if int(s.metadata.get("hops", 0)) == hops]
        chosen = chosen[: args.questions_per_hop]
        kwargs = {
            **env.to_env_kwargs(split="train"),
            "dataset": chosen,
            "retriever": full.retriever,
        }
        algo = algo_cls(policy, kwargs, config)
        rows: list[dict[str, Any]] = []
        steps = math.ceil(len(chosen) / config.rollout.questions_per_step)
        for step in range(steps):
            for t in algo.collect_rollouts(step):
                row = episode_row(t)
                row["group"] = (step, t.group)
                rows.append(row)
        per_hop[hops] = summarize(rows)
        algo.close()
        s = per_hop[hops]
        print(
            f"{hops}-hop: {s['groups']} groups, flat {s['flat_groups']:.2f}, format-only "
            f"{s['format_only_groups']:.2f}, EM {s['em']:.3f}, searches {s['searches']:.2f}, "
            f"cut {s['cut']:.2f} ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    shares = advantage_shares(per_hop, mix)
    result = {
        "model": args.model,
        "config": str(args.config),
        "overrides": args.set,
        "seed": args.seed,
        "hop_mix": mix,
        "per_hop": per_hop,
        "advantage_shares": shares,
    }
    for h, s in shares.items():
        print(
            f"{h}-hop share of |advantage|: {s['share_per_group']:.2f} per episode, "
            f"{s['share_tokens_per_group']:.2f} token-weighted (mix {mix.get(h, 0):.2f})"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
