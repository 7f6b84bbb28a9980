"""The decoder's KV cache: preallocated rows that outlive a turn, and the batch of rows.

transformers calls :meth:`SlotLayer.update` once per layer per forward pass; the decoder
sets :attr:`SlotCache.write_start` before each pass. How rows, holes and the mask row fit
together is the idea of :mod:`algorithms.rollout.decoder`'s docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

# Spare columns allocated on growth, so appending an observation rarely reallocates.
GROWTH_SLACK = 64


@dataclass
class Cursor:
    """Where a cache's layers write next, and how many columns they hold. Shared by the
    cache and its layers instead of a back-reference from each layer to the cache: such a
    cycle would leave every replaced cache (gigabytes over a multi-turn rollout) to the
    cyclic garbage collector, which runs on object counts, not on memory."""

    capacity: int
    write_start: int = 0


class SlotLayer(CacheLayerMixin):
    """One layer's keys/values; writes go to the column range its cursor says."""

    is_sliding = False

    def __init__(self, owner: Cursor):
        super().__init__()
        self.owner = owner

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        rows, heads, _, _ = key_states.shape
        shape_k = (rows, heads, self.owner.capacity, key_states.shape[-1])
        shape_v = (rows, heads, self.owner.capacity, value_states.shape[-1])
        self.keys = key_states.new_zeros(shape_k)
        self.values = value_states.new_zeros(shape_v)
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        keys, values = self.keys, self.values
        assert keys is not None and values is not None
        start = self.owner.write_start
        end = start + key_states.shape[-2]
        keys[:, :, start:end] = key_states
        values[:, :, start:end] = value_states
        # Attention only sees the used columns; the caller's mask covers exactly these.
        return keys[:, :, :end], values[:, :, :end]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.owner.write_start + query_length, 0

    def get_seq_length(self) -> int:
        return self.owner.write_start

    def get_max_length(self) -> int:
        return self.owner.capacity


class SlotCache(Cache):
    """A preallocated cache whose write position is set by the decoder before each pass."""

    def __init__(self, num_layers: int, capacity: int):
        self.cursor = Cursor(capacity)
        self.slots = [SlotLayer(self.cursor) for _ in range(num_layers)]
        super().__init__(layers=list(self.slots))

    @property
    def capacity(self) -> int:
        return self.cursor.capacity

    @property
    def write_start(self) -> int:
        return self.cursor.write_start

    @write_start.setter
    def write_start(self, value: int) -> None:
        self.cursor.write_start = value

    def take_rows(self, rows: torch.Tensor, capacity: int, release: bool = False) -> SlotCache:
        """A new cache holding only ``rows`` (copied), with room for ``capacity`` columns.

        ``release``: this cache is discarded afterwards, so each layer's buffers are dropped
        as soon as they are copied; the copy then peaks at one layer above the new cache
        instead of holding both caches whole.
        """
        new = SlotCache(len(self.slots), capacity)
        new.write_start = self.write_start
        for old_layer, new_layer in zip(self.slots, new.slots, strict=True):
            if old_layer.keys is None or old_layer.values is None:
                continue  # no forward pass yet: nothing to copy
            for name, old in (("keys", old_layer.keys), ("values", old_layer.values)):
                buf = old.new_zeros((len(rows), old.shape[1], capacity, old.shape[3]))
                buf[:, :, : self.write_start] = old[rows, :, : self.write_start]
                setattr(new_layer, name, buf)
                if release:
                    setattr(old_layer, name, None)
            new_layer.is_initialized = True
        return new

    @staticmethod
    def concat(caches: Sequence[SlotCache], sizes: Sequence[int], capacity: int) -> SlotCache:
        """Stack caches of ``sizes`` rows each; every cache keeps its columns at the same
        indices (left-aligned). A cache that never ran a forward pass contributes zeros.
        The inputs are consumed: their buffers are dropped layer by layer as they are copied."""
        new = SlotCache(len(caches[0].slots), capacity)
        new.write_start = max(c.write_start for c in caches)
        for i, new_layer in enumerate(new.slots):
            for name in ("keys", "values"):
                tensors = [getattr(c.slots[i], name) for c in caches]
                ref = next((t for t in tensors if t is not None), None)
                if ref is None:
                    continue
                buf = ref.new_zeros((sum(sizes), ref.shape[1], capacity, ref.shape[3]))
                at = 0
                for cache, size, t in zip(caches, sizes, tensors, strict=True):
                    if t is not None:
                        buf[at : at + size, :, : cache.write_start] = t[:, :, : cache.write_start]
                        setattr(cache.slots[i], name, None)
                    at += size
                del tensors, ref
                setattr(new_layer, name, buf)
                new_layer.is_initialized = True
        return new


# ---------------------------------------------------------------------------------------------
# A batch of rows that run through the model together.


class Rows:
    """Rows sharing one cache: the cache, the mask row, positions and next-token logits."""

    def __init__(
        self,
        seq_ids: list[int],
        cache: SlotCache,
        bias: torch.Tensor,
        next_pos: torch.Tensor,
        next_logits: torch.Tensor | None,
        pending: list[list[int]],
    ):
        self.seq_ids = seq_ids  # row -> sequence index
        self.cache = cache
        self.bias = bias  # [rows, capacity] additive attention mask: 0 real, -inf hole
        self.next_pos = next_pos  # [rows] position id of the next real token
        self.next_logits = next_logits  # [rows, vocab] float32, valid when nothing is pending
        self.pending = pending  # per row: tokens known but not yet encoded

    @property
    def length(self) -> int:
        return self.cache.write_start

    @property
    def capacity(self) -> int:
        return self.cache.capacity

    def __len__(self) -> int:
        return len(self.seq_ids)

    def reserve(self, columns: int) -> None:
        """Make room for ``columns`` more columns (reallocating with some slack if needed)."""
        needed = self.length + columns
        if needed <= self.capacity:
            return
        capacity = needed + GROWTH_SLACK
        every = torch.arange(len(self), device=self.bias.device)
        self.cache = self.cache.take_rows(every, capacity, release=True)
        bias = self.bias.new_full((len(self), capacity), torch.finfo(self.bias.dtype).min)
        bias[:, : self.length] = self.bias[:, : self.length]
        self.bias = bias

    def take(self, rows: list[int], release: bool = False) -> Rows:
        """These rows as a new ``Rows``; ``release`` when ``self`` is discarded afterwards."""
        index = torch.tensor(rows, dtype=torch.long, device=self.bias.device)
        logits = self.next_logits[index] if self.next_logits is not None else None
        return Rows(
            seq_ids=[self.seq_ids[r] for r in rows],
            cache=self.cache.take_rows(index, self.capacity, release),
            bias=self.bias[index].clone(),
            next_pos=self.next_pos[index].clone(),
            next_logits=logits,
            pending=[self.pending[r] for r in rows],
        )

    @staticmethod
    def concat(parts: Sequence[Rows]) -> Rows:
        if len(parts) == 1:
            return parts[0]
        length = max(p.length for p in parts)
        capacity = max(max(p.capacity for p in parts), length)
        ref = parts[0].bias
        bias = ref.new_full((sum(len(p) for p in parts), capacity), torch.finfo(ref.dtype).min)
        at = 0
        for p in parts:
            bias[at : at + len(p), : p.length] = p.bias[:, : p.length]
            at += len(p)
        logits = [p.next_logits for p in parts if p.next_logits is not None]
        return Rows(
            seq_ids=[s for p in parts for s in p.seq_ids],
            cache=SlotCache.concat([p.cache for p in parts], [len(p) for p in parts], capacity),
            bias=bias,
            next_pos=torch.cat([p.next_pos for p in parts]),
            next_logits=torch.cat(logits) if len(logits) == len(parts) else None,
            pending=[q for p in parts for q in p.pending],
        )
