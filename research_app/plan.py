"""``research-env plan``: the memory a training run needs per GPU, before loading it.

Registered like ``train`` (``research_env/cli.py``); the estimate is
:mod:`algorithms.planner`'s.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

EPILOG = """\
examples:
  research-env plan --config configs/research-grpo.yaml
  research-env plan --config configs/research-grpo.yaml --model qwen2.5-7b --gpu-memory 80GB
  research-env plan --config configs/searchr1-ppo.yaml --model qwen2.5-7b --gpus 8 \\
      --gpu-memory 80GB --set trainer.sharding=fsdp

With rollout.backend: vllm it also prints vLLM's share of the GPU (--gpu-memory needed):
  research-env plan --config configs/research-grpo.yaml --model qwen2.5-1.5b \\
      --gpu-memory 80GB --set rollout.backend=vllm

--model takes what model.name takes (an offline name, a local model directory) or a shape
with random weights: qwen2.5-0.5b, qwen2.5-1.5b, qwen2.5-3b, qwen2.5-7b. No weight is loaded.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="estimate a training run's memory per GPU (weights, optimizer, KV cache, ...)",
        description=(
            "Estimate the memory per GPU of a training run, item by item, from the model's "
            "shapes on the meta device: whether it fits, and what to change when it does not."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, default=None, help="YAML config (see configs/)")
    parser.add_argument("--model", default=None, help="model or shape (default: the config's)")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs of the run (default 1)")
    parser.add_argument(
        "--gpu-memory", default=None, help="memory per GPU, e.g. 80GB: say whether it fits"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from algorithms.config import TrainConfig
    from algorithms.planner import parse_memory, plan, vllm_share

    if args.gpus < 1:
        raise ValueError(f"--gpus must be >= 1, got {args.gpus}")
    config = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    config = config.with_overrides(args.set)
    config.validate(check_names=False, check_device=False)
    memory = parse_memory(args.gpu_memory) if args.gpu_memory else None
    result = plan(config, model=args.model, gpus=args.gpus)
    name = args.model or config.model.name
    print(f"{name}, {config.algo}, model.dtype={config.model.dtype}, {args.gpus} GPU(s)")
    print(result.table(memory))
    fits = memory is None or result.fits(memory)
    if config.rollout.backend == "vllm":
        if memory is None:
            print("vLLM's share of the GPU: give --gpu-memory to size it")
        else:
            share = vllm_share(config, result, memory)
            print(share.table())
            problem = share.problem()
            if problem is not None:
                print(f"vLLM DOES NOT FIT: {problem}")
                fits = False
    return 0 if fits else 1
