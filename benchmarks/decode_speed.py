"""Rollout decoding throughput: ``model.generate`` vs ``algorithms.rollout.generate``.

Same model, same prompts, same process; the methods run interleaved round by round, so a
neighbour process stealing a core slows all of them alike and the *ratios* stay meaningful on a
shared machine. Every sequence generates exactly ``--new-tokens`` tokens (EOS disabled), the
setting the rollout target is stated in.

    python -m benchmarks.decode_speed                 # SmolLM2-135M, batch 16, 128 new tokens
    python -m benchmarks.decode_speed --rounds 5 --methods ours-fp32 ours-bf16-packed
    python -m benchmarks.decode_speed --memory        # peak RSS, one fresh process per method

"tok per CPU-s" divides by the process's CPU time: with ``--threads 1`` it is close to the
rate on an idle core even when neighbours load the machine (with more threads it counts
OpenMP spin-waiting too).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

QUESTIONS = [
    "Who directed the film that won Best Picture the year the Berlin Wall fell?",
    "Which river flows through the capital of the country where the Eiffel Tower is?",
    "What is the birthplace of the author of 'One Hundred Years of Solitude'?",
    "In which year was the university attended by the first person on the Moon founded?",
    "Which country has the tallest mountain on the continent where Kenya is?",
    "Who was the president of the United States when the Titanic sank?",
    "What language is spoken in the country whose capital is Lima?",
    "Which composer wrote the opera that premiered at La Scala in 1926?",
]


def make_prompts(tokenizer, batch_size: int) -> list[list[int]]:
    """Chat-templated questions with a search-agent system prompt, lengths varying ~60-130."""
    prompts = []
    for i in range(batch_size):
        question = QUESTIONS[i % len(QUESTIONS)]
        system = "Answer by searching. Think in <think></think>, search with <search></search>."
        messages = [
            {"role": "system", "content": system * (1 + i % 3)},
            {"role": "user", "content": question},
        ]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        prompts.append(list(ids["input_ids"] if hasattr(ids, "keys") else ids))
    return prompts


def build_models(model, needed: set[str]) -> dict[str, object]:
    """The weights the chosen methods decode with: the fp32 policy itself and rollout copies
    (what a trainer holds: its fp32 policy plus one rollout copy)."""
    from algorithms.rollout import rollout_copy

    recipes = {  # name -> (dtype, packed linears, fused Llama forward)
        "fp32-packed": (torch.float32, True, False),
        "fp32-fused": (torch.float32, True, True),
        "bf16": (torch.bfloat16, False, False),
        "bf16-packed": (torch.bfloat16, True, False),
        "bf16-fused": (torch.bfloat16, True, True),
    }
    models: dict[str, object] = {"fp32": model}
    for name in sorted(needed & set(recipes)):
        dtype, pack, fused = recipes[name]
        models[name] = rollout_copy(model, dtype, pack_weights=pack, fused=fused)
    return models


METHODS = {  # method name -> (decoder, weights)
    "hf-generate-fp32": ("hf", "fp32"),
    "hf-generate-bf16": ("hf", "bf16"),
    "ours-fp32": ("ours", "fp32"),
    "ours-fp32-packed": ("ours", "fp32-packed"),
    "ours-bf16": ("ours", "bf16"),
    "ours-bf16-packed": ("ours", "bf16-packed"),
    "ours-fp32-fused": ("ours", "fp32-fused"),
    "ours-bf16-fused": ("ours", "bf16-fused"),
}


def build_method(
    decoder: str, model, prompts: list[list[int]], new_tokens: int, seed: int
) -> Callable[[], int]:
    """A callable generating ``new_tokens`` sampled tokens per prompt; returns the count."""
    from algorithms.rollout import generate

    pad = model.generation_config.pad_token_id or 0
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])

    def hf() -> int:
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                top_k=0,
                top_p=1.0,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,  # no early EOS: same token count as ours
                pad_token_id=pad,
            )
        return (out.shape[1] - width) * out.shape[0]

    def ours() -> int:
        g = torch.Generator().manual_seed(seed)
        result = generate(model, prompts, max_new_tokens=new_tokens, eos_token_ids=(), generator=g)
        return sum(map(len, result.token_ids))

    return hf if decoder == "hf" else ours


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="offline name or HF directory")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=[
            "hf-generate-fp32",
            "ours-fp32",
            "ours-fp32-packed",
            "ours-fp32-fused",
            "ours-bf16-packed",
            "ours-bf16-fused",
        ],
        help="any of " + " ".join(METHODS),
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also append the table to this file")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="instead: peak RSS of each method in a fresh process (load, copy, one run)",
    )
    args = parser.parse_args(argv)
    if args.memory:
        return memory_table(args, argv or sys.argv[1:])

    from algorithms.policy import load_policy

    if args.threads:
        torch.set_num_threads(args.threads)
    policy = load_policy(args.model, device="cpu")
    model = policy.model.eval()
    prompts = make_prompts(policy.tokenizer, args.batch_size)
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {sorted(METHODS)}")
    start = time.perf_counter()
    models = build_models(model, {METHODS[name][1] for name in args.methods})
    copy_seconds = time.perf_counter() - start
    methods = {}
    for name in args.methods:
        decoder, weights = METHODS[name]
        methods[name] = build_method(decoder, models[weights], prompts, args.new_tokens, args.seed)
        build_method(decoder, models[weights], prompts[:2], 4, args.seed)()  # warm-up

    rates: dict[str, list[float]] = {name: [] for name in args.methods}
    cpu_rates: dict[str, list[float]] = {name: [] for name in args.methods}
    for round_index in range(args.rounds):
        for name in args.methods:
            wall, cpu = time.perf_counter(), time.process_time()
            tokens = methods[name]()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            rates[name].append(tokens / wall)
            cpu_rates[name].append(tokens / cpu)
            print(
                f"round {round_index} {name:18s} {tokens / wall:8.1f} tok/s "
                f"{tokens / cpu:8.1f} tok/cpu-s  load {os.getloadavg()[0]:.1f}",
                flush=True,
            )

    reference = args.methods[0]
    ref_rate = statistics.median(rates[reference])
    lens = sorted(map(len, prompts))
    lines = [
        f"model {args.model}, batch {args.batch_size}, {args.new_tokens} new tokens, prompt "
        f"lengths {lens[0]}-{lens[-1]}, threads {torch.get_num_threads()}, {args.rounds} "
        f"interleaved rounds, load avg at end {os.getloadavg()[0]:.1f}; "
        f"{len(models) - 1} rollout copies built in {copy_seconds:.1f} s",
        "",
        f"| method | median tok/s | best tok/s | x {reference} | tok per CPU-s | x (CPU) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    ref_cpu = statistics.median(cpu_rates[reference])
    for name in args.methods:
        med, cpu_med = statistics.median(rates[name]), statistics.median(cpu_rates[name])
        lines.append(
            f"| {name} | {med:.1f} | {max(rates[name]):.1f} | {med / ref_rate:.2f} "
            f"| {cpu_med:.1f} | {cpu_med / ref_cpu:.2f} |"
        )
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        with args.out.open("a") as f:
            f.write(table + "\n")


def memory_table(args: argparse.Namespace, argv: list[str]) -> None:
    """Peak RSS per method, each in its own process: an in-process peak would carry the
    allocations of whichever method ran before."""
    base = [a for a in argv if a != "--memory"]
    rows = ["| method | peak RSS MiB (fresh process: fp32 policy + its rollout copy + run) |"]
    rows.append("| --- | ---: |")
    for name in args.methods:
        code = (
            "import resource, sys; from benchmarks.decode_speed import main; "
            f"main(sys.argv[1:] + ['--methods', '{name}', '--rounds', '1']); "
            "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
        )
        run = subprocess.run(
            [sys.executable, "-c", code, *strip_methods(base)],
            capture_output=True,
            text=True,
            check=True,
        )
        peak_kib = int(run.stdout.rsplit("PEAK", 1)[1].split()[0])
        rows.append(f"| {name} | {peak_kib / 1024:.0f} |")
        print(rows[-1], flush=True)
    table = "\n".join(rows)
    print("\n" + table)
    if args.out:
        with args.out.open("a") as f:
            f.write(table + "\n")


def strip_methods(argv: list[str]) -> list[str]:
    """``argv`` without ``--methods a b ...``, ``--rounds n`` and ``--out f``."""
    out, skip = [], False
    for arg in argv:
        if arg in ("--methods", "--rounds", "--out"):
            skip = True
            continue
        if skip and not arg.startswith("--"):
            continue
        skip = False
        out.append(arg)
    return out


if __name__ == "__main__":
    main()
