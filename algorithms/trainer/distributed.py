"""Data-parallel training through ``torch.distributed``, launched by ``torchrun`` or
``accelerate launch`` (no cluster layer of our own).

    torchrun --nproc-per-node 8 -m research_app.cli train --config configs/research-grpo.yaml

What changes with N ranks, and nothing else does:

* Each rank rolls out its share of a step's questions (``questions[rank::N]``): a GRPO
  group never spans two ranks, so group baselines are exact.
* Every loss is divided by the *global* token (or sequence) count, and gradients are summed
  across ranks once per optimizer step, so an update equals the single-process update on
  the same total batch (up to float summation order). A rank whose episodes were all
  filtered out still takes part, with zero gradients.
* Batch-wide statistics of an estimator (PPO's advantage whitening, REINFORCE++'s and the
  batch-mean baseline) are computed per rank; with group estimators (GRPO, RLOO) there is
  no difference.
* Rank 0 alone logs, evaluates, checkpoints and exports. A checkpoint holds the full state,
  so it resumes under any number of ranks.

Each rank holds a full replica of the model, unless ``trainer.sharding: fsdp`` shards it
(``trainer/fsdp.py``). Every optimizer
step is one minibatch per rank (``trainer.minibatch_size: null``), so all ranks take the
same number of steps.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

T = TypeVar("T")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


# How long a rank waits in a collective before the run fails. Rank 0 alone evaluates, saves
# checkpoints and exports while the others wait in the next collective; NCCL's default (10
# minutes) is shorter than evaluating 200 questions or writing a 7B model with its optimizer.
TIMEOUT_ENV = "RESEARCH_ENV_DIST_TIMEOUT_MINUTES"
DEFAULT_TIMEOUT_MINUTES = 120.0


def init_from_environment(device: str = "auto") -> str:
    """Join the process group a launcher set up (``WORLD_SIZE`` > 1 in the environment) and
    return the device this rank should use: ``cuda:<LOCAL_RANK>`` with NCCL on GPUs, the
    given device with Gloo on CPU. Without a launcher, nothing happens. Collectives time
    out after ``$RESEARCH_ENV_DIST_TIMEOUT_MINUTES`` (default 120) minutes."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=collective_timeout())
    return device


def collective_timeout() -> timedelta:
    """The process group's timeout: ``$RESEARCH_ENV_DIST_TIMEOUT_MINUTES``, else 120 min."""
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        minutes = float(text) if text else DEFAULT_TIMEOUT_MINUTES
    except ValueError:
        minutes = -1.0
    if not minutes > 0:
        raise ValueError(f"{TIMEOUT_ENV} must be a number of minutes > 0, got {text!r}")
    return timedelta(minutes=minutes)


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of a step's questions: every N-th one, starting at its rank."""
    n = world_size()
    if len(items) % n != 0:
        raise ValueError(
            f"{len(items)} questions per step do not split evenly over {n} ranks; set "
            f"rollout.questions_per_step to a multiple of {n}"
        )
    return list(items[rank() :: n])


def all_reduce_sum(value: float, device: torch.device) -> float:
    """The sum of a number over all ranks (itself, in one process)."""
    if not is_distributed():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item())


def all_reduce_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Sum every parameter's gradient over the ranks, in one flat buffer (a parameter
    without a gradient on this rank contributes zeros). FSDP shards (DTensors) are skipped:
    FSDP's reduce-scatter has summed them already (``trainer/fsdp.py``)."""
    if not is_distributed():
        return
    params = [p for p in params if not isinstance(p, DTensor)]
    if not params:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    for grad, reduced in zip(
        grads, torch._utils._unflatten_dense_tensors(flat, grads), strict=True
    ):
        grad.copy_(reduced)


def gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value`` (a small picklable object), in rank order."""
    if not is_distributed():
        return [value]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, value)
    return out


def mean_over_ranks(metrics: dict[str, float], *, summed: Collection[str] = ()) -> dict[str, float]:
    """Each metric averaged over the ranks that report it (ranks play equal episode counts),
    except those named in ``summed``: counts of a rank's own share (episodes kept, groups
    dropped, tokens and tokens/s), which add up to the step's."""
    if not is_distributed():
        return metrics
    merged: dict[str, list[float]] = {}
    for part in gather_objects(metrics):
        for key, value in part.items():
            merged.setdefault(key, []).append(value)
    return {
        key: sum(values) / (1 if key in summed else len(values)) for key, values in merged.items()
    }


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group (the end of a data-parallel run)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
