"""Rollout copies: a frozen inference copy of the policy, cast, and packed for fast decoding.

The trainer's model stays in its training dtype with autograd; decoding goes through a
copy made once per policy update (LoRA merged, bf16, linears pre-packed for oneDNN on
CPU, and for Llama-family models the fused forward of :mod:`algorithms.rollout.fused_llama`;
or int8, :mod:`algorithms.rollout.int8_copy`).
"""

from __future__ import annotations

import copy
from typing import Any

import torch


class PackedLinear(torch.nn.Module):
    """Inference-only ``nn.Linear`` whose weight is pre-reordered into oneDNN's blocked layout.

    At decode time every linear multiplies a few rows by a big weight. Plain ``F.linear`` then
    re-packs the weight on every call, which at rollout batch sizes costs about as much as the
    multiply; packing once removes that (measurements: benchmarks/RESULTS.md, "Rollout
    package: figures moved out of docstrings"). Same math, different summation order (fp32
    outputs differ by ~1e-6 relative). The packed tensor is opaque: no autograd, no
    ``state_dict``; it lives only in rollout copies.
    """

    def __init__(self, linear: torch.nn.Linear, batch_hint: int = 16):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, batch_hint)
        self.bias = None if linear.bias is None else linear.bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def pack_linears(model: Any, batch_hint: int = 16) -> int:
    """Swap every CPU ``nn.Linear`` of an inference model for a :class:`PackedLinear`, in
    place. Returns how many were swapped (0 where oneDNN is unavailable or not on CPU)."""
    if not torch.backends.mkldnn.is_available():
        return 0
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear and child.weight.device.type == "cpu":
                try:
                    setattr(parent, name, PackedLinear(child, batch_hint))
                except RuntimeError:  # a dtype or platform oneDNN does not pack
                    continue
                swapped += 1
    return swapped


def rollout_copy(
    model: Any,
    dtype: torch.dtype | None = torch.bfloat16,
    *,
    pack_weights: bool = True,
    fused: bool = True,
) -> Any:
    """A frozen inference copy of ``model`` for rollouts: LoRA adapters merged in, cast to
    ``dtype`` (bf16 halves the bytes every decode step streams from memory), and on CPU its
    linears packed (see :class:`PackedLinear`). Make a fresh copy after each policy update;
    for SmolLM2-135M that takes well under a second.

    ``fused``: for Llama-family models, return a
    :class:`algorithms.rollout.fused_llama.FusedLlama` over the copy's weights instead (fused
    projections, lean forward; it serves :class:`algorithms.rollout.DecodeState`, not
    ``generate``). Other architectures get the transformers model as usual.

    ``dtype=torch.int8``: the 8-bit copy of :mod:`algorithms.rollout.int8_copy` (int8
    weights, per-token int8 activations, float32 everywhere else; ``pack_weights`` does
    not apply), an opt-in copy for CPUs without native bf16.
    """
    if dtype == torch.int8:
        from algorithms.rollout.int8_copy import quantize_copy

        # The float32 copy (LoRA merged, fused forward where it applies), then 8-bit linears.
        return quantize_copy(rollout_copy(model, torch.float32, pack_weights=False, fused=fused))
    clone = copy.deepcopy(model)
    if hasattr(clone, "merge_and_unload"):  # peft
        clone = clone.merge_and_unload()
    if dtype is not None:
        clone = clone.to(dtype)
    clone.eval().requires_grad_(False)
    with torch.no_grad():
        if fused:
            from algorithms.rollout.fused_llama import fuse

            lean = fuse(clone, pack=pack_weights)
            if lean is not None:
                return lean
        if pack_weights:
            pack_linears(clone)
    return clone
