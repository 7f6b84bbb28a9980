"""Multi-turn rollout throughput: the rollout engine vs re-encoding loops on ``model.generate``.

Every method plays the same episodes (the first ``--questions`` dev questions of the default
env, ``--group-size`` samples each, ``--max-turns`` turns) with the same sampling settings
(temperature, tokens per turn, stop at ``</search>`` / ``</answer>`` / EOS), in the same
process, interleaved round by round so a neighbour stealing a core slows all alike:

- ``reencode-single``: the reference Search-R1 inference script's loop, one episode at a
  time: per turn, tokenize the whole context text (prompt + every turn and result so far)
  and ``model.generate`` with stop strings; append the turn and the search result as text.
- ``reencode-batched``: the same loop over all live episodes at once (left-padded batch;
  ``generate`` keeps stepping rows that already stopped until the last one stops).
- ``engine-*``: :class:`algorithms.rollout.RolloutEngine`: one batched decode per turn on
  a KV cache kept across turns (only observation tokens are encoded after a search),
  finished rows leave the batch; with the policy's fp32 weights, or a bf16 and/or
  oneDNN-packed rollout copy (made inside each ``collect``, as in training).

Throughput = generated tokens (up to and including the stop string; never padding) per
second of wall time, and episodes per second.

    python -m benchmarks.rollout_speed                    # greedy, 8 questions x 2, 4 turns
    python -m benchmarks.rollout_speed --temperature 1.0  # sampled
    python -m benchmarks.rollout_speed --memory           # peak RSS, fresh process per method
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from gymnasium.vector import AutoresetMode

from research_env.protocol import STOP_STRINGS
from research_env.termination import Termination
from research_env.vector import SearchVectorEnv

ENGINE_VARIANTS = {  # name -> (rollout_dtype, pack_weights, fused)
    "engine-fp32": (None, False, False),
    "engine-fp32-packed": ("float32", True, False),
    "engine-bf16": ("bfloat16", False, False),
    "engine-bf16-packed": ("bfloat16", True, False),
    "engine-bf16-fused": ("bfloat16", True, True),
}
METHODS = ("reencode-single", "reencode-batched", *ENGINE_VARIANTS)


@dataclass
class RolloutStats:
    episodes: int
    turns: int
    generated: int
    answered: int


def episode_plan(questions: int, group_size: int) -> list[int]:
    return [q for q in range(questions) for _ in range(group_size)]


# -- the re-encoding loop (Search-R1's inference script, batched or not) ------------------------


def _cut_at_stop(tokens: list[int], tokenizer, eos: set[int]) -> tuple[list[int], str]:
    """The tokens a turn really generated: up to the first EOS or stop string (inclusive);
    ``generate`` pads rows that finished before the others."""
    window = 2 * max(map(len, STOP_STRINGS)) + 2
    for i, tok in enumerate(tokens):
        if tok in eos:
            return tokens[: i + 1], "eos"
        tail = tokenizer.decode(tokens[max(0, i + 1 - window) : i + 1])
        if any(s in tail for s in STOP_STRINGS):
            return tokens[: i + 1], "stop"
    return tokens, "length"


def reencode_rollout(
    model,
    tokenizer,
    envs: SearchVectorEnv,
    plan: list[int],
    *,
    batch: bool,
    temperature: float,
    max_turn_tokens: int,
    seed: int,
) -> RolloutStats:
    """Play ``plan`` re-encoding each live context from its text at every turn."""
    torch.manual_seed(seed)
    eos = {tokenizer.eos_token_id} | set(_as_list(model.generation_config.eos_token_id))
    pad = tokenizer.pad_token_id
    stats = RolloutStats(len(plan), 0, 0, 0)
    prompts, _ = envs.reset(seed=seed, options={"indices": plan})
    contexts = list(prompts)
    live = list(range(len(plan)))
    groups = [live] if batch else [[i] for i in live]
    for group in groups:
        alive = list(group)
        while alive:
            encoded = [tokenizer(contexts[i], add_special_tokens=False)["input_ids"] for i in alive]
            width = max(map(len, encoded))
            ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
            mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
            sampling = {"do_sample": False}
            if temperature > 0:
                sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
            with torch.inference_mode():
                out = model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=max_turn_tokens,
                    stop_strings=list(STOP_STRINGS),
                    tokenizer=tokenizer,
                    pad_token_id=pad,
                    **sampling,
                )
            texts, reasons = {}, {}
            for row, i in enumerate(alive):
                tokens, reasons[i] = _cut_at_stop(out[row, width:].tolist(), tokenizer, eos)
                texts[i] = tokenizer.decode(tokens, skip_special_tokens=True)
                stats.generated += len(tokens)
                stats.turns += 1
            outcomes = envs.step_turns({i: texts[i] for i in alive})
            still = []
            for i in alive:
                outcome = outcomes[i]
                if outcome.done:
                    stats.answered += outcome.info["termination"] == Termination.ANSWERED
                elif reasons[i] == "eos":
                    envs.end_early([i], Termination.EOS)
                else:
                    contexts[i] += texts[i] + outcome.observation
                    still.append(i)
            alive = still
    return stats


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


# -- the engine ---------------------------------------------------------------------------------


def engine_rollout(engine, plan_questions: list[int], group_size: int, sampling) -> RolloutStats:
    trajectories = engine.collect(plan_questions, group_size, sampling=sampling)
    return RolloutStats(
        episodes=len(trajectories),
        turns=sum(len(t.turn_spans) for t in trajectories),
        generated=sum(t.n_generated for t in trajectories),
        answered=sum(t.finish_reason == "answered" for t in trajectories),
    )


# -- driver -------------------------------------------------------------------------------------


def build_methods(args: argparse.Namespace, policy) -> dict[str, Callable[[int], RolloutStats]]:
    """Each method: ``run(seed) -> RolloutStats`` over the same questions and settings."""
    from algorithms.rollout import RolloutEngine, Sampling

    env_kwargs = {"split": "dev", "max_turns": args.max_turns, "top_k": args.top_k}
    plan = episode_plan(args.questions, args.group_size)
    envs = SearchVectorEnv(len(plan), autoreset_mode=AutoresetMode.DISABLED, **env_kwargs)
    questions = list(range(args.questions))
    greedy = args.temperature <= 0
    model, tokenizer = policy.model.eval(), policy.tokenizer
    methods: dict[str, Callable[[int], RolloutStats]] = {}
    for name in args.methods:
        if name.startswith("reencode"):
            batched = name == "reencode-batched"

            def run(seed: int, batched: bool = batched) -> RolloutStats:
                return reencode_rollout(
                    model,
                    tokenizer,
                    envs,
                    plan,
                    batch=batched,
                    temperature=args.temperature,
                    max_turn_tokens=args.max_turn_tokens,
                    seed=seed,
                )

        else:
            dtype, pack, fused = ENGINE_VARIANTS[name]
            engine = RolloutEngine(
                policy, vector_env=envs, rollout_dtype=dtype, pack_weights=pack, fused=fused
            )

            def run(seed: int, engine=engine) -> RolloutStats:
                sampling = Sampling(
                    temperature=max(args.temperature, 1e-6),
                    greedy=greedy,
                    max_turn_tokens=args.max_turn_tokens,
                    max_total_tokens=args.max_total_tokens,
                    seed=seed,
                )
                return engine_rollout(engine, questions, args.group_size, sampling)

        methods[name] = run
    return methods


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="offline name or HF directory")
    parser.add_argument("--questions", type=int, default=8, help="dev questions")
    parser.add_argument("--group-size", type=int, default=2, help="episodes per question")
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--max-turn-tokens", type=int, default=128)
    parser.add_argument("--max-total-tokens", type=int, default=4096, help="engine only")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="instead: peak RSS of one rollout per method, each in a fresh process",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.memory:
        return memory_table(args, argv)

    from algorithms.policy import load_policy

    if args.threads:
        torch.set_num_threads(args.threads)
    policy = load_policy(args.model, device="cpu")
    methods = build_methods(args, policy)
    warm = argparse.Namespace(**{**vars(args), "questions": 1, "group_size": 1, "max_turns": 1})
    warm.max_turn_tokens = 4
    for run in build_methods(warm, policy).values():
        run(args.seed)

    results: dict[str, list[tuple[RolloutStats, float, float]]] = {m: [] for m in methods}
    for round_index in range(args.rounds):
        for name, run in methods.items():
            wall, cpu = time.perf_counter(), time.process_time()
            stats = run(args.seed + round_index)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            results[name].append((stats, wall, cpu))
            print(
                f"round {round_index} {name:20s} {stats.generated:6d} tok {stats.turns:4d} turns "
                f"{wall:7.1f} s {stats.generated / wall:7.1f} tok/s  "
                f"load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    print("\n" + table(args, results))


def table(args: argparse.Namespace, results) -> str:
    def rate(rows, key):
        return statistics.median(key(s) / w for s, w, _ in rows)

    reference = {m: rate(results[m], lambda s: s.generated) for m in results}
    lines = [
        f"model {args.model}; {args.questions} dev questions x {args.group_size} = "
        f"{args.questions * args.group_size} episodes, max {args.max_turns} turns, "
        f"{args.max_turn_tokens} tokens per turn, "
        f"{'greedy' if args.temperature <= 0 else f'temperature {args.temperature}'}, "
        f"top-{args.top_k} BM25; {args.rounds} interleaved rounds, medians; "
        f"threads {torch.get_num_threads()}, load avg at end {os.getloadavg()[0]:.1f}",
        "",
        "| method | generated tokens | turns | answered | tok/s | episodes/s | tok per CPU-s "
        "| x reencode-single | x reencode-batched |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, rows in results.items():
        stats = rows[-1][0]
        tok_s = reference[name]
        eps = rate(rows, lambda s: s.episodes)
        cpu = statistics.median(s.generated / c for s, _, c in rows)
        ratios = [f"{tok_s / reference[r]:.2f}" if r in reference else "" for r in METHODS[:2]]
        lines.append(
            f"| {name} | {stats.generated} | {stats.turns} | {stats.answered} | {tok_s:.1f} "
            f"| {eps:.3f} | {cpu:.1f} | {' | '.join(ratios)} |"
        )
    return "\n".join(lines)


def memory_table(args: argparse.Namespace, argv: list[str]) -> None:
    """Peak RSS of one rollout per method, each in a fresh process (an in-process peak
    would carry whatever ran before), and the RSS after loading, before the rollout."""
    from benchmarks.decode_speed import strip_methods

    base = strip_methods([a for a in argv if a != "--memory"])
    rows = [
        f"{args.questions * args.group_size} episodes x {args.max_turns} turns, "
        f"{args.max_turn_tokens} tokens per turn",
        "",
        "| method | RSS after load MiB | peak RSS MiB | peak - loaded MiB |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name in args.methods:
        code = "import sys; from benchmarks.rollout_speed import measure_memory; measure_memory(sys.argv[1:])"  # fmt: skip
        run = subprocess.run(
            [sys.executable, "-c", code, *base, "--methods", name],
            capture_output=True,
            text=True,
            check=True,
        )
        loaded, peak = (int(v) for v in run.stdout.rsplit("MEMORY", 1)[1].split()[:2])
        rows.append(
            f"| {name} | {loaded / 1024:.0f} | {peak / 1024:.0f} | {(peak - loaded) / 1024:.0f} |"
        )
        print(rows[-1], flush=True)
    print("\n" + "\n".join(rows))


def measure_memory(argv: list[str]) -> None:
    """In a fresh process: load, build envs, one rollout; print RSS (KiB) after loading
    and the peak."""
    from algorithms.policy import load_policy

    args = build_parser().parse_args(argv)
    args.rounds = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    policy = load_policy(args.model, device="cpu")
    (run,) = build_methods(args, policy).values()
    loaded = _current_rss_kib()
    run(args.seed)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("MEMORY", loaded, peak)


def _current_rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


if __name__ == "__main__":
    main()
