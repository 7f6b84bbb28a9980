"""The optimizer and the learning-rate schedule of a run (``config.optim``)."""

from __future__ import annotations

import math

import torch

from algorithms.config import OptimConfig


def make_optimizer(
    actor: list[torch.nn.Parameter], critic: list[torch.nn.Parameter], optim: OptimConfig
) -> torch.optim.Optimizer:
    """AdamW over the policy's trainable parameters and, in a group of its own with
    ``critic_lr``, the critic's (a value head or a separate critic model)."""
    groups: list[dict] = [{"params": actor, "lr": optim.lr}]
    if critic:
        groups.append({"params": critic, "lr": optim.critic_lr or optim.lr})
    # The fused kernel allocates no parameter-sized temporaries and is much faster than
    # foreach on CPU (benchmarks/RESULTS.md, "Trainer: figures moved out of docstrings").
    params = actor + critic
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(
        groups, lr=optim.lr, betas=(optim.betas[0], optim.betas[1]), eps=optim.eps,
        weight_decay=optim.weight_decay, fused=fused or None,
    )  # fmt: skip


def lr_factor(step: int, optim: OptimConfig, total_steps: int) -> float:
    """Multiplier of the base learning rate after ``step`` completed training steps:
    linear warmup, then constant, linear or cosine decay to ``min_lr_ratio``."""
    warmup = optim.warmup_steps
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if optim.schedule == "constant":
        return 1.0
    horizon = max(1, total_steps - warmup)
    progress = min(1.0, max(0.0, (step - warmup) / horizon))
    floor = optim.min_lr_ratio
    if optim.schedule == "linear":
        return floor + (1.0 - floor) * (1.0 - progress)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
