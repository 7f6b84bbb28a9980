"""FSDP (``trainer.sharding: fsdp``): the policy's weights, gradients and AdamW moments
sharded over the ranks of a data-parallel run, for models whose training state does not
fit one device.

    torchrun --nproc-per-node 8 -m research_app.cli train --config configs/research-grpo.yaml \\
        --set trainer.sharding=fsdp --set trainer.share_prompts=false

Why torch's FSDP2 (``torch.distributed.fsdp.fully_shard``) and not accelerate's FSDP plugin:
``fully_shard`` composes with a loop of one's own, module by module, while the plugin wants
to own the loop (``accelerator.prepare`` / ``backward`` / ``clip_grad_norm_``) and wraps
the model's top-level forward, which the scorer never calls (it runs the decoder and the
LM head separately, to skip the logits of prompt tokens). FSDP2 also runs on Gloo, so the
CPU tests exercise the same code as NCCL on GPUs. ``accelerate launch`` still works as a
launcher: it only sets the environment ``torchrun`` would.

How the model is sharded (:func:`shard_model`), in place:

* one FSDP unit per decoder block (``model.get_decoder().layers``): a block's weights are
  all-gathered just before it runs and freed right after, in forward and in backward;
* one root unit, the decoder, holding the embeddings, the final norm and the LM head. The
  head is registered under the decoder too (``HEAD_ALIAS``) because FSDP2 hooks run only
  around a unit's own ``forward`` and the scorer calls the decoder and the head one after
  the other: as the root, the decoder keeps its weights gathered after its forward, so the
  head (and a head tied to the input embeddings) finds them whole, and their gradients are
  reduce-scattered once at the end of backward;
* gradients are *summed* over the ranks, not averaged: every loss is already divided by
  the global token count (``update.py``), exactly as with plain data parallelism. The sum
  is a plain SUM reduce-scatter (Gloo has no PREMUL_SUM, which FSDP2 would otherwise use).

What else changes under FSDP, and why:

* Rollouts decode with full weights: before each collect, every rank gathers the shards
  into an unsharded twin of the model (:class:`UnshardedTwin`) and decodes with it. Ranks
  stop decoding at different times, and a sharded forward is a collective, so decoding
  through the sharded model would deadlock; the twin needs the full weights on each rank
  for the rollout only (they are freed before the update).
* The KL reference is sharded the same way and scored in lockstep.
* Gradient clipping sees sharded gradients: the global norm is the all-reduced sum of the
  shards' squared norms (:func:`clip_grad_norm_`).
* Checkpoints hold the full model and the full optimizer state, in the same format as
  without FSDP (gathered on rank 0): they resume under any number of ranks, with or
  without FSDP (:func:`full_optimizer_state`, :func:`shard_optimizer_state`).
* Every rank must run the same forward and backward passes; hence ``share_prompts: false``
  (it picks a data-dependent number of passes) and no zero-variance filtering (config
  checks), and a runtime check that all ranks update on the same number of episodes.

Limits: every rank loads the full model before sharding it and holds full weights during
its rollout, so the weights alone must fit one device; what FSDP saves is the gradients
and the optimizer state (for AdamW in float32, 12 of every 16 bytes per parameter) and the
reference model. No FSDP mixed-precision policy is set: ``trainer.autocast_dtype`` works
as without FSDP (with autocast's weight-cast cache off, see ``scoring.autocast``), and so
does gradient checkpointing (both tested). The vLLM rollout backend is handed the gathered
twin like the built-in decoder, but is untested under FSDP.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

from algorithms.trainer import distributed

HEAD_ALIAS = "_fsdp_lm_head"


def is_sharded(tensor: Any) -> bool:
    """Whether a parameter (or gradient, or optimizer state) is an FSDP shard."""
    return isinstance(tensor, DTensor)


def shard_model(model: Any) -> None:
    """Shard a Hugging Face causal LM (or a PEFT model around one) over all ranks, in
    place: one FSDP unit per decoder block, the decoder (with the LM head) as the root.
    Raises ``ValueError`` for a model with parameters outside its decoder and head."""
    from torch.distributed.fsdp import fully_shard

    decoder = model.get_decoder()
    head = model.get_output_embeddings()
    layers = getattr(decoder, "layers", None)
    if not layers or head is None:
        raise ValueError(
            f"trainer.sharding: fsdp shards a decoder's blocks (model.get_decoder().layers) "
            f"and its LM head; {type(model).__name__} does not expose them"
        )
    inside = {id(p) for p in decoder.parameters()} | {id(p) for p in head.parameters()}
    outside = [name for name, p in model.named_parameters() if id(p) not in inside]
    if outside:
        raise ValueError(
            f"trainer.sharding: fsdp cannot shard {type(model).__name__}: parameters outside "
            f"its decoder and LM head ({', '.join(outside[:3])})"
        )
    paths = {id(module): name for name, module in model.named_modules()}
    before = [name for name, _ in model.named_parameters()]
    for layer in layers:
        _sum_gradients(fully_shard(layer))
    if not any(module is head for module in decoder.modules()):
        decoder.add_module(HEAD_ALIAS, head)
    _sum_gradients(fully_shard(decoder))
    # The optimizer's state is keyed by parameter position, in checkpoints too: the head's
    # alias must not move any parameter (it is the last one in the usual causal LMs).
    alias = ".".join(filter(None, [paths[id(decoder)], HEAD_ALIAS])) + "."
    after = [
        paths[id(head)] + "." + name.removeprefix(alias) if name.startswith(alias) else name
        for name, _ in model.named_parameters()
    ]
    if after != before:
        raise ValueError(
            f"trainer.sharding: fsdp cannot shard {type(model).__name__}: registering its "
            "LM head under the decoder reorders its parameters"
        )


def _sum_gradients(unit: Any) -> None:
    unit.set_gradient_divide_factor(1.0)
    unit.set_force_sum_reduction_for_comms(True)


class UnshardedTwin:
    """A weightless copy of a model (parameters on the ``meta`` device, buffers real) into
    which the shards of the sharded original are gathered on demand.

    Made from the model *before* :func:`shard_model`. The twin is a plain module, so every
    consumer of a model works on it unchanged: the rollout engine (and its bf16, packed or
    fused copies), ``save_pretrained``, ``merge_and_unload``. Tied weights stay tied.
    """

    def __init__(self, model: Any) -> None:
        # Copy the module tree with each parameter already swapped for a placeholder of
        # its shape on ``meta`` (deepcopy's memo), so no weight is copied; tied weights
        # share one placeholder, as they shared one parameter.
        memo: dict[int, Any] = {
            id(p): nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=False)
            for p in model.parameters()
        }
        self.model = copy.deepcopy(model, memo)
        self.model.eval()
        # Every place a parameter is registered, grouped under its canonical name (the
        # name ``named_parameters()`` gives it; a tied weight is registered twice).
        groups: dict[int, list[str]] = {}
        for name, param in self.model.named_parameters(remove_duplicate=False):
            groups.setdefault(id(param), []).append(name)
        self._slots = {
            names[0]: [_owner(self.model, n) for n in names] for names in groups.values()
        }
        self._placeholders = {name: self.model.get_parameter(name) for name in self._slots}

    def _empty(self) -> None:
        for name, slots in self._slots.items():
            for module, attr in slots:
                module._parameters[attr] = self._placeholders[name]

    @contextlib.contextmanager
    def gathered(self, sharded: Any, *, rank0_only: bool = False) -> Iterator[Any]:
        """The twin holding ``sharded``'s current full weights, for the ``with`` block; a
        collective (every rank must enter). With ``rank0_only`` only rank 0 keeps the
        weights (to save them); the others get ``None``. The weights are dropped on exit."""
        keep = not rank0_only or distributed.is_main_process()
        try:
            with torch.no_grad():
                for name, slots in self._slots.items():
                    param = sharded.get_parameter(name)
                    full = param.full_tensor() if is_sharded(param) else param.detach()
                    if keep:
                        value = nn.Parameter(full, requires_grad=False)
                        for module, attr in slots:
                            module._parameters[attr] = value
            yield self.model if keep else None
        finally:
            self._empty()


def _owner(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attr = name.rpartition(".")
    return root.get_submodule(path), attr


# --------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------


def clip_grad_norm_(params: Iterable[nn.Parameter], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` over a mix of sharded gradients (FSDP's, each
    rank holding a disjoint slice) and replicated ones (a value head's, equal on every rank
    after :func:`~algorithms.trainer.distributed.all_reduce_gradients`): the global norm
    counts each shard once and each replicated gradient once. Without shards it is torch's.
    """
    params = list(params)
    grads = [p.grad for p in params if p.grad is not None]
    if not any(is_sharded(g) for g in grads):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    device = grads[0].device
    local = [g.to_local() if isinstance(g, DTensor) else g for g in grads]
    sharded_sq = torch.zeros((), dtype=torch.float32, device=device)
    replicated_sq = torch.zeros((), dtype=torch.float32, device=device)
    for grad, tensor in zip(grads, local, strict=True):
        sq = torch.linalg.vector_norm(tensor.float()) ** 2
        if is_sharded(grad):
            sharded_sq += sq
        else:
            replicated_sq += sq
    torch.distributed.all_reduce(sharded_sq)
    total = (sharded_sq + replicated_sq).sqrt()
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for tensor in local:
        tensor.mul_(scale.to(tensor.dtype))
    return total


# --------------------------------------------------------------------------------------
# Optimizer state: full on disk, sharded in memory
# --------------------------------------------------------------------------------------


def full_optimizer_state(optimizer: torch.optim.Optimizer, *, rank0_only: bool = True) -> Any:
    """``optimizer.state_dict()`` with every sharded moment gathered whole: the format a
    run without FSDP writes, so a checkpoint resumes under any number of ranks. A
    collective; with ``rank0_only`` the other ranks get ``None``."""
    state = optimizer.state_dict()
    keep = not rank0_only or distributed.is_main_process()
    full: dict[int, dict[str, Any]] = {}
    for index in sorted(state["state"]):
        entry = {}
        for key in sorted(state["state"][index]):
            value = state["state"][index][key]
            entry[key] = value.full_tensor() if is_sharded(value) else value
        full[index] = entry
    return {"state": full, "param_groups": state["param_groups"]} if keep else None


def shard_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict:
    """A full optimizer state dict (from any checkpoint) cut to this rank's shards, ready
    for ``optimizer.load_state_dict``: each moment shaped like its sharded parameter becomes
    a shard laid out like the parameter (every rank read the whole file; no communication)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    sharded: dict[int, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        param = params[int(index)]
        if not is_sharded(param):
            sharded[index] = entry
            continue
        sharded[index] = {
            key: distribute_tensor(
                value.to(param.device), param.device_mesh, param.placements, src_data_rank=None
            )
            if torch.is_tensor(value) and value.shape == param.shape and key != "step"
            else value
            for key, value in entry.items()
        }
    return {"state": sharded, "param_groups": state["param_groups"]}
