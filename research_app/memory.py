"""Peak resident memory per stage of a long job (the demo's: evaluate, warm start, RL...).

On Linux the kernel keeps the process's resident high-water mark (``VmHWM`` in
``/proc/self/status``) and resets it when ``5`` is written to ``/proc/self/clear_refs``, so
each stage's own peak can be read without a sampling thread. Elsewhere, or where the reset
is refused, the figure is the peak since the process started (``getrusage``), and
:attr:`StagePeaks.per_stage` says so. The reset also resets what ``getrusage`` and GNU
``time -v`` report as the process's maximum resident size: after a :class:`StagePeaks`
run, theirs is the last stage's peak, not the whole run's (the largest stage's is).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import re
import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _reset_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_mib() -> float:
    """The resident high-water mark in MiB (since the last reset, where resets work)."""
    try:
        match = re.search(r"^VmHWM:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        match = None
    if match:
        return int(match.group(1)) / 1024
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, else KiB


def give_back(model: Any = None) -> None:
    """Return memory a finished training stage no longer needs: ``model``'s gradients (set
    to None), whatever is unreachable (the caller has dropped its trainer, and with it the
    optimizer's state), and glibc's freed-but-kept pages (``malloc_trim``), so the next
    stage starts from the model's own footprint instead of the last stage's high water."""
    if model is not None:
        model.zero_grad(set_to_none=True)
    gc.collect()
    if sys.platform.startswith("linux"):
        # musl and other libcs have no malloc_trim: nothing to trim there.
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


# Kernels kept per cache by oneDNN (its primitive cache) and by PyTorch's ideep layer (its
# computation cache); their defaults are 1024 each.
KERNEL_CACHE_CAPACITY = 64
KERNEL_CACHES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")


def cap_kernel_caches(capacity: int = KERNEL_CACHE_CAPACITY) -> bool:
    """Keep at most ``capacity`` CPU matmul kernels in each of oneDNN's and ideep's caches,
    unless the environment already sets a capacity.

    Both caches keep a kernel, and memory that comes with it, per input shape. A training
    run on a CPU meets new shapes at every step (prompt and episode lengths vary), so with
    their default capacities of 1,024 the resident size creeps up step after step: three of
    the demo's GRPO steps peaked at 2,529 MiB with the defaults, 2,276 with 64 and 2,029
    with 8; but at 8 a training step's own matmuls no longer fit and their kernels are
    made again and again (warm-start steps ~1.3x slower). RESULTS.md, "Demo memory". The
    capacities are read when the first kernel is made, so this acts only before torch is
    imported; it returns whether it could act.
    """
    if "torch" in sys.modules:
        return False
    for name in KERNEL_CACHES:
        os.environ.setdefault(name, str(capacity))
    return True


class StagePeaks:
    """``with peaks.stage("warm start"): ...`` records that stage's peak resident MiB in
    :attr:`mib` (a stage entered twice keeps its higher peak)."""

    def __init__(self) -> None:
        self.mib: dict[str, float] = {}
        self.per_stage = True

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.per_stage = _reset_peak() and self.per_stage
        try:
            yield
        finally:
            self.mib[name] = max(self.mib.get(name, 0.0), peak_mib())

    def lines(self) -> list[str]:
        """A markdown table of the peaks, with what they mean."""
        scope = ("each stage's own peak (VmHWM, reset at the stage's start)" if self.per_stage
                 else "the process's peak so far at the end of each stage (no per-stage "
                 "reset on this system)")  # fmt: skip
        rows = ["| stage | peak resident MiB |", "|---|---:|"]
        rows += [f"| {name} | {mib:,.0f} |" for name, mib in self.mib.items()]
        return [f"Peak resident memory: {scope}.", "", *rows]
