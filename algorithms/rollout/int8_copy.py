"""8-bit decoding copies: int8 weights and per-token int8 activations for every linear.

On a CPU without native bf16 (AVX2 only) a rollout copy in bf16 is emulated and slow, so
the fast copy there was float32. An int8 copy streams a quarter of float32's weight bytes
per decode step and multiplies in 8-bit integers (fbgemm's dynamic-quantized linear, the
kernel PyTorch itself ships for x86). It samples from a slightly different distribution
than the float32 learner: the trainer's truncated importance sampling
(``trainer.tis_cap``) corrects for it, and ``train/sampler_kl`` shows how far apart they
are. Measured speed and quality: benchmarks/RESULTS.md, "8-bit decoding copy (issue 28)".

    copy = rollout_copy(policy.model, torch.int8)   # or rollout.rollout_dtype: int8

What :class:`Int8Linear` computes, for input rows ``x`` and weight ``W``:

- ``W`` is quantized once, symmetric per output channel: ``W ~ s_w[o] * Wq[o, :]``;
- each input row is divided by its own absolute maximum ``a[r]`` before fbgemm quantizes
  the whole tensor (fbgemm's dynamic linear has one activation scale per tensor;
  dividing first gives every row the full range, which is per-token quantization:
  one row's outlier no longer coarsens the others);
- the product is scaled back by ``a[r]`` and the bias added in float32.

fbgemm quantizes activations to 7 bits (``reduce_range``): on a CPU without AVX-512 VNNI its
int8 kernels add pairs of products in int16, which saturates at 8 bits. On CUDA the same
math runs through ``torch._int_mm`` (int8 x int8 -> int32, symmetric 8-bit per-token
scales), so a GPU copy is built by the same function; elsewhere it is computed in float32
from the int8 values (a reference, not fast). The
LM head is quantized like every other linear; ``keep`` names the ones to leave in float32.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

INT8 = "int8"


def fbgemm_available() -> bool:
    """Whether this build has fbgemm's dynamic-quantized linear (x86 CPU builds do)."""
    return "fbgemm" in torch.backends.quantized.supported_engines


class Int8Linear(nn.Module):
    """Inference-only int8 replacement of an ``nn.Linear`` (see the module docstring).

    ``weight_int8`` ``[out, in]`` and ``weight_scale`` ``[out]`` are kept as plain tensors
    (device-agnostic); on CPU with fbgemm the weight is also packed once for fbgemm.
    """

    weight_int8: torch.Tensor
    weight_scale: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: nn.Linear, *, use_fbgemm: bool | None = None):
        super().__init__()
        weight = linear.weight.detach().float()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        scale = weight.abs().amax(dim=1).clamp(min=1e-8) / 127.0
        quantized = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
        self.register_buffer("weight_int8", quantized)
        self.register_buffer("weight_scale", scale)
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias)
        if use_fbgemm is None:
            use_fbgemm = weight.device.type == "cpu" and fbgemm_available()
        self.packed: Any = None
        if use_fbgemm:
            with warnings.catch_warnings():  # quantized tensors are deprecated; the op is not
                warnings.simplefilter("ignore", UserWarning)
                per_channel = torch.quantize_per_channel(
                    weight, scale, torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8
                )
            self.packed = torch.ops.quantized.linear_prepack(per_channel, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).float()
        absmax = rows.abs().amax(dim=1, keepdim=True).clamp(min=1e-8)
        if self.packed is not None:
            # reduce_range=True: 7-bit activations, fbgemm's own default on x86. A CPU without
            # AVX-512 VNNI adds pairs of u8 x s8 products in int16, which saturates with
            # 8-bit activations (measured: outputs off by up to 100%).
            out = torch.ops.quantized.linear_dynamic(rows / absmax, self.packed, True)
            out = out * absmax
        elif rows.device.type == "cuda":
            out = self._int_mm(rows, absmax)
        else:
            out = self._reference(rows, absmax)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def _quantized_rows(self, rows: torch.Tensor, absmax: torch.Tensor) -> torch.Tensor:
        """Symmetric per-token int8 activations: ``rows ~ absmax / 127 * result``."""
        return torch.round(rows * (127.0 / absmax)).clamp(-127, 127).to(torch.int8)

    def _int_mm(self, rows: torch.Tensor, absmax: torch.Tensor) -> torch.Tensor:
        """The GPU path: int8 x int8 products summed in int32 (``torch._int_mm``)."""
        xq = self._quantized_rows(rows, absmax)
        count = xq.shape[0]
        padded = max(32, -(-count // 8) * 8)  # CUDA's _int_mm wants > 16 rows, a multiple of 8
        if padded != count:
            xq = torch.cat([xq, xq.new_zeros(padded - count, xq.shape[1])])
        product = torch._int_mm(xq, self.weight_int8.t().contiguous())[:count]
        return product.float() * (absmax / 127.0) * self.weight_scale

    def _reference(self, rows: torch.Tensor, absmax: torch.Tensor) -> torch.Tensor:
        """The same products in float32 (any device; a CPU without fbgemm): slow, and
        exact where the CPU's own int8 matmul is not (it saturates without VNNI)."""
        xq = self._quantized_rows(rows, absmax).float()
        product = xq @ self.weight_int8.float().t()
        return product * (absmax / 127.0) * self.weight_scale

    def extra_repr(self) -> str:
        kernel = "fbgemm" if self.packed is not None else "_int_mm on CUDA, else float32"
        return f"in_features={self.in_features}, out_features={self.out_features}, {kernel}"


def quantize_linears(
    model: nn.Module, *, keep: Sequence[str] = (), use_fbgemm: bool | None = None
) -> int:
    """Swap every plain ``nn.Linear`` of an inference model for an :class:`Int8Linear`, in
    place, except those whose qualified name contains one of ``keep``. Returns how many were swapped."""
    swapped = 0
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            qualified = f"{parent_name}.{name}" if parent_name else name
            if type(child) is nn.Linear and not any(k in qualified for k in keep):
                setattr(parent, name, Int8Linear(child, use_fbgemm=use_fbgemm))
                swapped += 1
    return swapped


def quantize_copy(clone: Any, *, keep: Sequence[str] = (), use_fbgemm: bool | None = None) -> Any:
    """``clone`` (a frozen float32 rollout copy, see :func:`~algorithms.rollout.rollout_copy`)
    with its linears swapped for :class:`Int8Linear`, in place; returned. Made afresh after
    each policy update (the weights are requantized from the new float weights)."""
    with torch.no_grad():
        if quantize_linears(clone, keep=keep, use_fbgemm=use_fbgemm) == 0:
            raise ValueError(
                f"rollout_dtype int8: {type(clone).__name__} has no nn.Linear layers to "
                "quantize; use rollout_dtype float32 or bfloat16 for it"
            )
    return clone
