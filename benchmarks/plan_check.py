"""The memory planner (``research-env plan``) against measured peaks of an update step.

For each case, two GRPO updates (``learn_from``: the no-grad pi_old and reference passes,
then forward, backward and the optimizer step) on one micro-batch of ``rows`` episodes of
``tokens`` tokens each, on this CPU (the second holds the AdamW state throughout). The measured figure is the peak of live tensor
storage from the policy's load to the end of the step, counted op by op
(:class:`LiveTensorBytes`: every storage an op creates, until it is freed), so it is what
a GPU's ``max_memory_allocated`` would report, without the Python heap, the libraries or
allocator slack that a process's resident size holds. The planner's figure is its update
phase (weights, gradients, optimizer, reference, activations, logits chunk).

    python -m benchmarks.plan_check                    # every case, one JSON line each
    python -m benchmarks.plan_check --cases tiny-fp32
"""

from __future__ import annotations

import argparse
import json
import os
import weakref
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

# name -> (model, rows, tokens, config overrides)
CASES: dict[str, tuple[str, int, int, dict[str, Any]]] = {
    "tiny-fp32": ("tiny-random", 4, 256, {}),
    "tiny-bf16-kl": ("tiny-random", 4, 256, {"model.dtype": "bfloat16", "grpo.kl_coef": 0.001}),
    "tiny-top1-ckpt": ("tiny-random", 4, 256,
                       {"trainer.train_layers": 1, "model.gradient_checkpointing": True}),
    "smollm2-fp32-kl": ("smollm2-135m", 2, 256, {"grpo.kl_coef": 0.001}),
    "smollm2-bf16-ckpt": ("smollm2-135m", 2, 256,
                          {"model.dtype": "bfloat16", "model.gradient_checkpointing": True}),
    "smollm2-lora": ("smollm2-135m", 2, 256, {"model.lora": {"r": 16}}),
}  # fmt: skip


class LiveTensorBytes:
    """A dispatch mode that counts the bytes of live tensor storages and their peak."""

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        tracker = self
        self.current = 0
        self.peak = 0
        self._seen: set[int] = set()

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
                out = func(*args, **(kwargs or {}))
                tracker._count(out)
                return out

        self.mode = Mode()

    def _count(self, out: Any) -> None:
        import torch
        from torch.utils._pytree import tree_flatten

        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key = id(storage)
            if key in self._seen:
                continue
            size = storage.nbytes()
            self._seen.add(key)
            self.current += size
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._free, key, size)

    def _free(self, key: int, size: int) -> None:
        self._seen.discard(key)
        self.current -= size


def episodes(rows: int, tokens: int, vocab: int) -> list[Any]:
    """One GRPO group of ``rows`` episodes: a 16-token prompt, the rest generated."""
    import torch

    from algorithms.buffer import Trajectory

    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(rows):
        ids = torch.randint(100, vocab, (tokens,), generator=g).tolist()
        t = Trajectory(prompt_ids=ids[:16], group=0, reward=float(i % 2))
        t.add_model_tokens(ids[16:], [-1.0] * (tokens - 16))
        out.append(t)
    return out


def measure(case: str) -> dict[str, Any]:
    import torch

    from algorithms.config import TrainConfig
    from algorithms.planner import plan
    from algorithms.policy import LoraSettings, load_policy
    from algorithms.registry import make_algorithm

    model, rows, tokens, overrides = CASES[case]
    config = TrainConfig(algo="grpo").with_overrides({
        "model.name": model, "output_dir": "/tmp/plan-check", "logging.wandb": False,
        "rollout.max_total_tokens": tokens, "trainer.micro_batch_size": rows,
        "grpo.kl_coef": 0.0, "rollout.group_size": rows, **overrides,
    })  # fmt: skip
    planned = plan(config, device="cpu")
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    lora = config.model.lora
    tracker = LiveTensorBytes()
    with tracker.mode:
        policy = load_policy(
            model, dtype=config.model.dtype, device="cpu",
            lora=LoraSettings(r=lora.r) if lora is not None else None,
            gradient_checkpointing=config.model.gradient_checkpointing,
        )  # fmt: skip
        tracker.peak = tracker.current  # a load's own transients (dequantizing) are not training
        algo = make_algorithm("grpo", policy, None, config)
        batch = episodes(rows, tokens, policy.model.config.vocab_size)
        for _ in range(2):  # the second step holds the optimizer's state throughout
            algo.learn_from(batch)
    estimate = planned.update_phase
    return {
        "case": case, "rows": rows, "tokens": tokens,
        "planned_update_mib": round(estimate / 2**20, 1),
        "measured_peak_mib": round(tracker.peak / 2**20, 1),
        "error_pct": round(100 * (estimate - tracker.peak) / tracker.peak, 1),
        "items_mib": {k: round(v / 2**20, 1) for k, v in planned.items.items() if v},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    args = parser.parse_args()
    for case in args.cases:
        print(json.dumps(measure(case)), flush=True)


if __name__ == "__main__":
    main()
