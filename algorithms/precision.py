"""Whether low precision pays on this machine, and the ``"auto"`` precision setting.

bfloat16 is only fast where the hardware multiplies in it: a CUDA GPU, or a CPU with
AVX-512 BF16 or AMX (x86) or the BF16 extension (Arm). On any other CPU, torch emulates
the bf16 matmuls by converting to float32 and back, which made the demo's bf16 settings
several times *slower* than plain float32 on a Xeon without AVX-512 BF16 (benchmarks/
RESULTS.md, "Episode cost"). So the settings that default to bf16 say ``"auto"``:

    rollout:  {rollout_dtype: auto}    # bf16 decoding copy where native, else float32
    trainer:  {autocast_dtype: auto}   # bf16 autocast where native, else off

``rollout_dtype: int8`` asks for the 8-bit decoding copy (:mod:`algorithms.rollout.int8_copy`)
on purpose; ``auto`` never picks it: on this library's quality check it changes too many
greedy episodes (benchmarks/RESULTS.md, "8-bit decoding copy (issue 28)").

``resolve_precision("auto", device)`` turns that into ``"bfloat16"`` or ``None`` (float32)
and says once, in one log line, when it fell back. An explicit ``"bfloat16"`` is kept as
asked: a user (or a benchmark) measuring bf16 on purpose gets bf16.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import torch

logger = logging.getLogger(__name__)

AUTO = "auto"
# What ``rollout.rollout_dtype`` accepts (besides null: decode with the policy itself).
ROLLOUT_DTYPES = (AUTO, "bfloat16", "float32", "float16", "int8")
# CPU capability flags (``torch.cpu.get_capabilities()``) that mean bf16 matmuls in hardware.
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bfloat16 in hardware (AVX-512 BF16, AMX, Arm BF16).

    False, too, when ``ATEN_CPU_CAPABILITY`` or ``ONEDNN_MAX_CPU_ISA`` limits this process
    to instructions without bf16 (how ``make test-avx2`` computes like an AVX2-only CPU).
    Otherwise reads ``torch.cpu.get_capabilities()`` (torch >= 2.8); on older torch, the kernel's
    CPU flags in ``/proc/cpuinfo``. When neither says, it answers False: falling back to
    float32 costs at most bf16's speed-up, while emulated bf16 costs several times over.
    """
    if _limited_below_bf16():
        return False
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if callable(get_capabilities):
        capabilities = get_capabilities()
        return any(bool(capabilities.get(flag, False)) for flag in _NATIVE_BF16_FLAGS)
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = {word for line in cpuinfo if line.startswith(("flags", "Features"))
                     for word in line.split(":", 1)[1].split()}  # fmt: skip
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


# Values of the instruction-set limits that keep bf16 matmuls out of hardware. Setting them
# makes this process compute like a CPU without AVX-512 (``make test-avx2``): ATen's own
# kernels (ATEN_CPU_CAPABILITY) and oneDNN's, which run the bf16 matmuls (ONEDNN_MAX_CPU_ISA).
_ATEN_WITHOUT_AVX512 = ("default", "avx2")
_ONEDNN_WITHOUT_BF16 = ("sse41", "avx", "avx2", "avx2_vnni", "avx2_vnni_2", "avx512_core",
                        "avx512_core_vnni")  # fmt: skip


def _limited_below_bf16() -> bool:
    """True when the environment limits this process to instructions without native bf16:
    on such a setting "auto" must choose what a CPU of that kind would (float32)."""
    aten = os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().lower()
    return aten in _ATEN_WITHOUT_AVX512 or onednn in _ONEDNN_WITHOUT_BF16


def resolve_precision(dtype: str | None, device: Any) -> str | None:
    """The low-precision dtype to use on ``device`` for a setting of ``dtype``.

    ``"auto"`` becomes ``"bfloat16"`` on CUDA and on a CPU with native bf16, and ``None``
    (float32: no rollout copy in another dtype, no autocast) on any other CPU, with a
    one-line log note the first time. Any other value is returned unchanged.
    """
    if dtype != AUTO:
        return dtype
    kind = torch.device(device).type if not isinstance(device, torch.device) else device.type
    if kind != "cpu" or cpu_has_native_bf16():
        return "bfloat16"
    _note_fallback()
    return None


def rollout_torch_dtype(name: str | None) -> torch.dtype | None:
    """The torch dtype of a resolved ``rollout_dtype`` name (``None`` stays ``None``);
    ``"int8"`` is ``torch.int8``, which :func:`algorithms.rollout.rollout_copy` builds as
    the 8-bit copy. An unknown name is an error that lists the accepted ones."""
    if name is None:
        return None
    if name == AUTO or name not in ROLLOUT_DTYPES:
        raise ValueError(
            f"rollout_dtype must be null or one of {list(ROLLOUT_DTYPES)}, got {name!r}"
            + (" (resolve 'auto' first: resolve_precision)" if name == AUTO else "")
        )
    return getattr(torch, name)


def autocast_precision(dtype: str | None, device: Any, weights: torch.dtype) -> str | None:
    """The autocast dtype of ``trainer.autocast_dtype`` for weights in ``weights`` on
    ``device``, or None (no autocast). The default (None) is bf16 on a CUDA GPU with bf16
    and float32 weights (the matmuls that dominate an update, at bf16's rate), and off on a
    CPU, where float32 stays the default; ``"float32"`` is off everywhere."""
    kind = torch.device(device).type if not isinstance(device, torch.device) else device.type
    if dtype == "float32":
        return None
    if dtype is None:
        native = kind == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return "bfloat16" if native and weights == torch.float32 else None
    return resolve_precision(dtype, kind)


def enable_tf32() -> bool:
    """TF32 for float32 matmuls on a CUDA GPU that has it (compute capability 8.0+:
    A100, H100, ...): float32 inputs multiplied with 10-bit mantissas and accumulated in
    float32, several times the float32 matmul rate. CPU matmuls are untouched. Returns
    whether it is on. Called when a policy is loaded on CUDA."""
    if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 8:
        return False
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9
        matmul.fp32_precision = "tf32"
    else:
        matmul.allow_tf32 = True
    return True


@functools.cache
def _note_fallback() -> None:
    logger.warning(
        "precision 'auto': this CPU has no native bfloat16 (AVX-512 BF16/AMX), where bf16 "
        "is several times slower than float32; using float32"
    )
