"""Peak memory and time of one RL update micro-batch: the LM head in checkpointed chunks
against one plain head pass.

One episode of SmolLM2-135M (a ``--prompt``-token prompt and a ``--response``-token
response, the size of a demo episode with its retrieved documents), the top
``--train-layers`` blocks trained as in the demo's RL stage: forward, log-probs and
entropy over the response (``algorithms.scoring.score_tokens``), backward. Each variant
runs in a fresh process, and its peak resident memory (``VmHWM``) is reset after the model
loads: the figure is the peak over ``--rounds`` updates (weights included); the times are
medians, wall clock and the process's CPU time (with one thread, close to an idle core's
wall clock even on a loaded machine).

- ``plain``: ``trainer.logprob_chunk_size=null``, the head over every response position at
  once, its float32 ``(positions, vocab)`` logits kept for backward;
- ``chunk-N``: the head in chunks of N positions, each recomputed in backward (N=256 is
  the default).

    python -m benchmarks.head_memory
    python -m benchmarks.head_memory --response 900 --variants plain chunk-256
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

VARIANTS = ("plain", "chunk-1024", "chunk-256", "chunk-64")


def measure(args: argparse.Namespace) -> dict[str, float]:
    """One variant in this process: peak MiB over the rounds, median seconds per update."""
    import torch

    from algorithms.buffer import Batch
    from algorithms.policy import load_policy
    from algorithms.scoring import autocast, score_tokens
    from algorithms.trainer.freeze import train_top_layers
    from research_app.memory import StagePeaks

    torch.set_num_threads(args.threads)
    model = load_policy(args.model, device="cpu").model
    train_top_layers(model, args.train_layers)
    model.train()
    p, r = args.prompt, args.response
    ids = torch.randint(
        0, model.config.vocab_size, (1, p + r), generator=torch.Generator().manual_seed(0)
    )
    batch = Batch(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        position_ids=torch.arange(p + r)[None],
        loss_mask=torch.ones(1, r),
        sample_logprobs=torch.zeros(1, r),
        rewards=torch.ones(1),
        group_ids=torch.zeros(1, dtype=torch.long),
        prompt_len=p,
    )
    chunk = None if args.variant == "plain" else int(args.variant.split("-")[1])
    seconds: list[float] = []
    cpu_seconds: list[float] = []
    peaks = StagePeaks()  # the updates' own peak, not the model load's
    with peaks.stage("updates"):
        for _ in range(args.rounds):
            start, cpu = time.perf_counter(), time.process_time()
            with autocast(model, args.autocast):
                scores = score_tokens(model, batch, with_entropy=True, chunk_size=chunk)
                scores.logprobs.sum().backward()
            model.zero_grad(set_to_none=True)
            seconds.append(time.perf_counter() - start)
            cpu_seconds.append(time.process_time() - cpu)
    return {
        "peak_mib": peaks.mib["updates"],
        "seconds": statistics.median(seconds),
        "cpu_seconds": statistics.median(cpu_seconds),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompt", type=int, default=300, help="prompt tokens")
    parser.add_argument("--response", type=int, default=700, help="response tokens")
    parser.add_argument("--train-layers", type=int, default=6, help="top blocks trained")
    parser.add_argument("--rounds", type=int, default=3, help="updates per variant")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--autocast",
        default=None,
        choices=["bfloat16", "auto"],
        help="trainer.autocast_dtype (default: none, float32 matmuls)",
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # the child process's one
    args = parser.parse_args(argv)
    if args.variant:
        print(json.dumps(measure(args)))
        return
    print(
        f"| variant | peak MiB | s per update | CPU s per update |  (prompt {args.prompt}, response {args.response}, "
        f"top {args.train_layers} blocks, {args.threads} thread(s))"
    )
    print("|---|---:|---:|---:|")
    for variant in args.variants:
        child = [sys.executable, "-m", "benchmarks.head_memory", *(argv or sys.argv[1:])]
        out = subprocess.run(
            [*child, "--variant", variant], check=True, capture_output=True, text=True
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"| {variant} | {result['peak_mib']:,.0f} | {result['seconds']:.3g} | {result['cpu_seconds']:.3g} |"
        )


if __name__ == "__main__":
    main()
