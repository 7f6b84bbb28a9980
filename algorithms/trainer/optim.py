"""The optimizer and the learning-rate schedule of a run (``config.optim``).

16-bit weights train through float32 master copies. A bfloat16 weight near 0.02 is spaced
about 1e-4 from its neighbours, so an AdamW step of lr 1e-6 applied to it rounds away:
the paper configs (``model.dtype: bfloat16``, ``lr: 1.0e-6``) moved 0.12% of the weights'
elements in a step (benchmarks/RESULTS.md, "Mixed precision that learns"). With
``optim.master_weights`` (the default), :class:`MasterAdamW` keeps a float32 copy of every
16-bit trainable parameter and float32 moments in its state, steps the copies and writes
them back rounded: small steps accumulate in the copy until they move the 16-bit weight.
The copies are part of ``state_dict()``, so a checkpoint resumes bit-exactly, and they are
sharded like the moments under FSDP.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim.adamw import adamw

from algorithms.config import OptimConfig

LOW_PRECISION = (torch.bfloat16, torch.float16)
CHUNK = 2**24  # elements per AdamW call: a 64 MiB float32 copy of a 16-bit gradient at most
_FLOAT32_STATE = ("master", "exp_avg", "exp_avg_sq")


def make_optimizer(
    actor: list[torch.nn.Parameter], critic: list[torch.nn.Parameter], optim: OptimConfig
) -> torch.optim.Optimizer:
    """AdamW over the policy's trainable parameters and, in a group of its own with
    ``critic_lr``, the critic's (a value head or a separate critic model); with float32
    master weights (:class:`MasterAdamW`) when any of them is 16-bit and
    ``optim.master_weights`` is on."""
    groups: list[dict] = [{"params": actor, "lr": optim.lr}]
    if critic:
        groups.append({"params": critic, "lr": optim.critic_lr or optim.lr})
    # The fused kernel allocates no parameter-sized temporaries and is much faster than
    # foreach on CPU (benchmarks/RESULTS.md, "Trainer: figures moved out of docstrings").
    params = actor + critic
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    masters = optim.master_weights and any(p.dtype in LOW_PRECISION for p in params)
    cls = MasterAdamW if masters else torch.optim.AdamW
    return cls(
        groups, lr=optim.lr, betas=(optim.betas[0], optim.betas[1]), eps=optim.eps,
        weight_decay=optim.weight_decay, fused=fused or None,
    )  # fmt: skip


class MasterAdamW(torch.optim.AdamW):
    """AdamW computed in float32 for 16-bit parameters: ``state[p]["master"]`` is the
    float32 weight the update applies to, ``exp_avg``/``exp_avg_sq`` are float32, and after
    each step the parameter is set to its master rounded to the parameter's dtype.
    float32 parameters in the same groups are stepped in place, as plain AdamW does."""

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            hyper = dict(
                foreach=group["foreach"], fused=group["fused"], amsgrad=False, beta1=beta1,
                beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"],
                eps=group["eps"], maximize=False,
            )  # fmt: skip
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self._float32_state(p, group)
                master = state.get("master", p)
                # Elementwise math: FSDP shards step as plain local tensors; slices of at
                # most CHUNK elements bound the float32 copy of a 16-bit gradient.
                tensors = [master, p.grad, state["exp_avg"], state["exp_avg_sq"]]
                flat = [_local(t).view(-1) for t in tensors]
                for start in range(0, flat[0].numel(), CHUNK):
                    w, g, m, v = (t[start : start + CHUNK] for t in flat)
                    # Every slice takes the same step number; the state's is counted once.
                    adamw([w], [g.float()], [m], [v], [], [state["step"].clone()], **hyper)
                state["step"] += 1
                if master is not p:
                    p.copy_(master)
        return loss

    def _float32_state(self, p: torch.Tensor, group: dict[str, Any]) -> dict[str, Any]:
        """``p``'s state, created on its first step (or completed, after loading a
        checkpoint written without master weights) from the parameter itself."""
        state = self.state[p]
        if "step" not in state:
            on_device = group["fused"] or group["capturable"]
            state["step"] = torch.zeros(
                (), dtype=torch.float32, device=p.device if on_device else None
            )
            state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
            state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
        if p.dtype != torch.float32 and "master" not in state:
            state["master"] = p.detach().to(torch.float32, copy=True)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch casts every floating state tensor to its parameter's dtype on load, which
        would round the masters and moments to 16 bits: they are put back in float32."""
        super().load_state_dict(state_dict)
        saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        params = [p for group in self.param_groups for p in group["params"]]
        for index, p in zip(saved_ids, params, strict=True):
            saved = state_dict["state"].get(index, {})
            for key in _FLOAT32_STATE:
                if key in saved:
                    self.state[p][key] = saved[key].to(device=p.device, dtype=torch.float32)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor itself, or this rank's shard of an FSDP parameter, gradient or state."""
    from algorithms.trainer.fsdp import is_sharded

    return tensor.to_local() if is_sharded(tensor) else tensor  # type: ignore[attr-defined]


def master_weights_by_name(optimizer: torch.optim.Optimizer, model: Any) -> dict[str, Any]:
    """The float32 masters of ``model``'s 16-bit parameters by state-dict name (each name
    of a tied parameter): the weights the run learned, before rounding. Empty without
    master weights, and under FSDP (the masters are shards there)."""
    if not isinstance(optimizer, MasterAdamW):
        return {}
    from algorithms.trainer.fsdp import is_sharded

    masters = {
        id(p): state["master"]
        for p, state in optimizer.state.items()
        if "master" in state and not is_sharded(state["master"])
    }
    named = model.state_dict(keep_vars=True).items()
    return {name: masters[id(t)] for name, t in named if id(t) in masters}


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
