"""Training-update time on real multi-turn episodes: what each trainer option buys.

One update (forward + backward + AdamW step) of SmolLM2-135M on the same four oracle
episodes of the synthetic train split (the demo's warm-start batch: the ``research``
template's 349-token prompt, two to four searches with top-3 documents, 96/1024-token
budgets), one micro-batch of four rows, timed for each variant of the trainer, all in one
process and interleaved round by round so a neighbour's load slows every variant alike:

- ``plain``: every row runs its whole prompt (``trainer.share_prompts=false``);
- ``prefix``: the template prefix that the four prompts share runs once (the default);
- ``prefix+bf16``: and the trunk's matmuls under bf16 autocast (``trainer.autocast_dtype``);
- ``lora``, ``lora+bf16``: LoRA adapters (r=16 on the attention projections) instead of
  full fine-tuning, with prefix sharing.

    python -m benchmarks.update_speed               # 3 rounds, default torch threads
    python -m benchmarks.update_speed --rounds 5 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {"share_prompts": False, "autocast_dtype": None, "lora": False},
    "prefix": {"share_prompts": True, "autocast_dtype": None, "lora": False},
    "prefix+bf16": {"share_prompts": True, "autocast_dtype": "bfloat16", "lora": False},
    "lora": {"share_prompts": True, "autocast_dtype": None, "lora": True},
    "lora+bf16": {"share_prompts": True, "autocast_dtype": "bfloat16", "lora": True},
}


def build(name: str, model: str, env_kwargs: dict[str, Any], questions: int) -> Any:
    from algorithms.config import TrainConfig
    from algorithms.policy import LoraSettings, load_policy
    from algorithms.sft import SFT

    v = VARIANTS[name]
    policy = load_policy(model, device="cpu", lora=LoraSettings() if v["lora"] else None)
    config = TrainConfig.from_dict(
        {
            "algo": "sft",
            "output_dir": f"/tmp/update_speed/{name}",
            "rollout": {
                "questions_per_step": questions,
                "max_turn_tokens": 96,
                "max_total_tokens": 1024,
            },
            "optim": {"lr": 1e-5},
            "trainer": {
                "micro_batch_size": questions,
                "share_prompts": v["share_prompts"],
                "autocast_dtype": v["autocast_dtype"],
            },
            "eval": {"every": 0},
            "logging": {"wandb": False, "progress_bar": False},
            "checkpoint": {"every": 0, "export_final": False},
        }
    )
    return SFT(policy, env_kwargs, config)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--questions", type=int, default=4, help="episodes in the batch")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (after a warm-up)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = parser.parse_args(argv)

    import torch

    from research_env.env import MultiHopSearchEnv

    if args.threads:
        torch.set_num_threads(args.threads)
    first = MultiHopSearchEnv(split="train", top_k=3, max_turns=5)
    env_kwargs = {"split": "train", "top_k": 3, "max_turns": 5, "dataset": first.samples,
                  "retriever": first.retriever}  # fmt: skip
    algos = {name: build(name, args.model, env_kwargs, args.questions) for name in args.variants}
    trajectories = next(iter(algos.values())).collect_rollouts(0)
    prompt = len(trajectories[0].prompt_ids)
    response = [len(t.response_ids) for t in trajectories]
    print(f"{len(trajectories)} episodes: prompt {prompt} tokens, responses {response} tokens")
    for algo in algos.values():  # warm-up: lazy inits, optimizer state
        algo.learn_from(trajectories)
    times: dict[str, list[float]] = {name: [] for name in algos}
    for round_index in range(args.rounds):
        for name, algo in algos.items():
            start = time.perf_counter()
            algo.learn_from(trajectories)
            times[name].append(time.perf_counter() - start)
            print(f"round {round_index} {name:12s} {times[name][-1]:6.2f} s", flush=True)
    reference = statistics.median(times[args.variants[0]])
    nominal = len(trajectories) * prompt + sum(response)
    print(
        f"\n{args.model}, {len(trajectories)} oracle episodes ({nominal} tokens), one micro-batch; "
        f"threads {torch.get_num_threads()}; medians of {args.rounds} rounds; "
        f"load average at end {os.getloadavg()[0]:.1f}\n"
    )
    print(f"| variant | seconds per update | tokens/s (nominal) | x {args.variants[0]} |")
    print("| --- | ---: | ---: | ---: |")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {nominal / median:.0f} | {reference / median:.2f} |")


if __name__ == "__main__":
    main()
