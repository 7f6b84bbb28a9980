"""The "what fits on one GPU" table of docs/scaling.md, from the memory planner.

Each cell is ``research-env plan``'s peak per GPU (GiB) for a paper config with a model of
a real shape (random weights, built on the meta device), and whether it fits an 80 GiB GPU
with the planner's 1 GiB of headroom. Regenerate the table with:

    python -m benchmarks.fits_table
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

GPU_MEMORY_GIB = 80
SHAPES = ["qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "qwen2.5-7b"]
# column title -> (config file, overrides, GPUs)
COLUMNS: dict[str, tuple[str, dict[str, object], int]] = {
    "research-grpo": ("configs/research-grpo.yaml", {}, 1),
    "searchr1-ppo": ("configs/searchr1-ppo.yaml", {}, 1),
    "research-grpo, LoRA r16": ("configs/research-grpo.yaml", {"model.lora": {"r": 16}}, 1),
    "research-grpo, 8 questions (40 rows)/step": (
        "configs/research-grpo.yaml", {"rollout.questions_per_step": 8}, 1,
    ),
    "research-grpo, FSDP x8": (
        "configs/research-grpo.yaml",
        {"trainer.sharding": "fsdp", "trainer.share_prompts": False,
         "trainer.filter_zero_variance_groups": False}, 8,
    ),
}  # fmt: skip


def table() -> str:
    """The markdown table (one row per shape, one column per setting)."""
    from algorithms.config import TrainConfig
    from algorithms.planner import GiB, plan

    lines = ["| model | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for shape in SHAPES:
        cells = []
        for path, overrides, gpus in COLUMNS.values():
            config = TrainConfig.from_yaml(path).with_overrides(overrides)
            result = plan(config, model=shape, gpus=gpus)
            verdict = "fits" if result.fits(GPU_MEMORY_GIB * GiB) else "**does not fit**"
            cells.append(f"{result.peak / GiB:.0f} GiB, {verdict}")
        lines.append(f"| {shape} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
