"""A lean batched decoder for RL rollouts, with a KV cache that survives across turns.

Why not ``model.generate``: rollouts need (1) the log-prob of every sampled token, (2) rows that
stop independently at stop strings such as ``</search>``, (3) finished rows that stop costing
compute, and (4) multi-turn episodes where an observation is appended to a sequence and decoding
resumes *without re-encoding the whole history*. ``generate`` does none of (3)/(4), and per step
it re-builds masks and grows its cache by ``torch.cat``.

How the cache is laid out (the one idea to hold in your head):

- Every sequence is a row of a preallocated buffer ``[rows, kv_heads, columns, head_dim]`` per
  layer. All rows write the same column range in each forward pass.
- A row that has nothing to write in a pass (it already finished its turn, or its appended
  observation is shorter than another row's) writes a *hole*: a column masked out of attention
  for good. ``_Rows.bias`` is the additive mask row (0 = real token, -inf = hole), kept up to
  date incrementally, so a decode step builds no mask at all.
- Positions (RoPE) are counted per row over real tokens only, so holes change nothing: decoding
  with holes gives the same logits as decoding the row alone (tests check this against
  ``model.generate`` and against full recomputation).
- Tokens that are known but not yet run through the model are *pending* for their row: the last
  sampled token of a turn, and anything passed to :meth:`DecodeState.append`. The next forward
  pass encodes them, right-aligned so every row's last real token sits in the last column.
- Once a quarter of the decoding rows have finished their turn, they are copied aside and the
  rest decode as a smaller batch; all rows are merged back when the turn ends.

Speed: decode with ``rollout_copy(model)`` (bf16, LoRA merged, linears pre-packed for oneDNN,
and for Llama-family models the fused forward of :mod:`algorithms.fused_llama`), not the
training model: 2.9x ``model.generate`` in fp32 at batch 16 on this project's 2-core CPU
(numbers and what did not help: benchmarks/RESULTS.md, "Decoding").

Log-probs: ``logprobs[i]`` is ``log softmax(logits / temperature)[token]`` -- the sampled token's
log-probability under the policy *at the sampling temperature*, before any top-k/top-p
truncation. That is what a trainer recomputes (``log_softmax(logits / T)``) for importance ratios,
so old and new log-probs are comparable. Greedy decoding reports temperature-1 log-probs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

# Rollout copies live with the other weight handling in policy.py; re-exported because a
# rollout needs them next to the decoder.
from algorithms.policy import PackedLinear, pack_linears, rollout_copy

__all__ = [
    "DecodeState",
    "GenerationResult",
    "PackedLinear",
    "SamplingParams",
    "TurnOutput",
    "generate",
    "pack_linears",
    "rollout_copy",
    "sample",
]

FinishReason = Literal["stop", "eos", "length"]

# Compact the working batch once this fraction of its rows has finished the turn: copying the
# cache once is cheaper than carrying dead rows through every remaining step.
COMPACT_FRACTION = 0.25
# Spare columns allocated on growth, so appending an observation rarely reallocates.
GROWTH_SLACK = 64


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is picked.

    ``temperature`` scales logits; ``top_k`` (0 = off) and ``top_p`` (1.0 = off) truncate the
    distribution before sampling; ``greedy`` takes the argmax and ignores the rest.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    greedy: bool = False

    def __post_init__(self) -> None:
        if not self.greedy and self.temperature <= 0:
            raise ValueError("temperature must be > 0 (use greedy=True for argmax decoding)")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")


@dataclass
class TurnOutput:
    """What one sequence generated in one :meth:`DecodeState.decode` call."""

    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: FinishReason = "length"


@dataclass
class GenerationResult:
    """Per-sequence outputs of :func:`generate`, in prompt order."""

    outputs: list[TurnOutput]
    temperature: float  # the temperature the log-probs were computed at

    @property
    def token_ids(self) -> list[list[int]]:
        return [o.token_ids for o in self.outputs]

    @property
    def logprobs(self) -> list[list[float]]:
        return [o.logprobs for o in self.outputs]

    @property
    def finish_reasons(self) -> list[FinishReason]:
        return [o.finish_reason for o in self.outputs]


# ---------------------------------------------------------------------------------------------
# The KV cache: transformers calls ``update`` once per layer per forward pass.


@dataclass
class _Cursor:
    """Where a cache's layers write next, and how many columns they hold. Shared by the
    cache and its layers instead of a back-reference from each layer to the cache: such a
    cycle would leave every replaced cache (gigabytes over a multi-turn rollout) to the
    cyclic garbage collector, which runs on object counts, not on memory."""

    capacity: int
    write_start: int = 0


class _SlotLayer(CacheLayerMixin):
    """One layer's keys/values; writes go to the column range its cursor says."""

    is_sliding = False

    def __init__(self, owner: _Cursor):
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


class _SlotCache(Cache):
    """A preallocated cache whose write position is set by the decoder before each pass."""

    def __init__(self, num_layers: int, capacity: int):
        self.cursor = _Cursor(capacity)
        self.slots = [_SlotLayer(self.cursor) for _ in range(num_layers)]
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

    def take_rows(self, rows: torch.Tensor, capacity: int, release: bool = False) -> _SlotCache:
        """A new cache holding only ``rows`` (copied), with room for ``capacity`` columns.

        ``release``: this cache is discarded afterwards, so each layer's buffers are dropped
        as soon as they are copied; the copy then peaks at one layer above the new cache
        instead of holding both caches whole.
        """
        new = _SlotCache(len(self.slots), capacity)
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
    def concat(caches: Sequence[_SlotCache], sizes: Sequence[int], capacity: int) -> _SlotCache:
        """Stack caches of ``sizes`` rows each; every cache keeps its columns at the same
        indices (left-aligned). A cache that never ran a forward pass contributes zeros.
        The inputs are consumed: their buffers are dropped layer by layer as they are copied."""
        new = _SlotCache(len(caches[0].slots), capacity)
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


class _Rows:
    """Rows sharing one cache: the cache, the mask row, positions and next-token logits."""

    def __init__(
        self,
        seq_ids: list[int],
        cache: _SlotCache,
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

    def take(self, rows: list[int], release: bool = False) -> _Rows:
        """These rows as a new ``_Rows``; ``release`` when ``self`` is discarded afterwards."""
        index = torch.tensor(rows, dtype=torch.long, device=self.bias.device)
        logits = self.next_logits[index] if self.next_logits is not None else None
        return _Rows(
            seq_ids=[self.seq_ids[r] for r in rows],
            cache=self.cache.take_rows(index, self.capacity, release),
            bias=self.bias[index].clone(),
            next_pos=self.next_pos[index].clone(),
            next_logits=logits,
            pending=[self.pending[r] for r in rows],
        )

    @staticmethod
    def concat(parts: Sequence[_Rows]) -> _Rows:
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
        return _Rows(
            seq_ids=[s for p in parts for s in p.seq_ids],
            cache=_SlotCache.concat([p.cache for p in parts], [len(p) for p in parts], capacity),
            bias=bias,
            next_pos=torch.cat([p.next_pos for p in parts]),
            next_logits=torch.cat(logits) if len(logits) == len(parts) else None,
            pending=[q for p in parts for q in p.pending],
        )


# ---------------------------------------------------------------------------------------------
# The session object


class DecodeState:
    """A batch of sequences whose KV caches persist across turns.

    Typical multi-turn use::

        state = DecodeState(model, prompts)              # list of token-id lists
        turn = state.decode(max_new_tokens=256, stop_strings=["</search>", "</answer>"],
                            tokenizer=tokenizer)         # {seq index: TurnOutput}
        state.append({0: observation_ids})               # only sequence 0 continues
        state.release([1, 2])                            # episodes 1 and 2 ended: free them
        turn2 = state.decode(max_new_tokens=256, seq_indices=[0], ...)

    Only the appended observation (plus the turn's last sampled token) is encoded before decoding
    resumes; earlier tokens are never recomputed. ``tokens(i)`` returns a sequence's full history.
    """

    def __init__(self, model: Any, prompts: Sequence[Sequence[int]], *, capacity: int = 0):
        if not prompts:
            raise ValueError("need at least one prompt")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        self.model = model
        self.device = next(model.parameters()).device
        self.dtype = _model_dtype(model)
        config = model.config
        self._num_layers = config.get_text_config().num_hidden_layers
        self._history: list[list[int]] = [list(map(int, p)) for p in prompts]
        # Per token of the history: the sampling log-prob if generated, None if given.
        self._logprobs: list[list[float | None]] = [[None] * len(p) for p in prompts]
        self._released: set[int] = set()
        capacity = max(capacity, max(len(p) for p in prompts) + GROWTH_SLACK)
        rows = len(prompts)
        self._rows = _Rows(
            seq_ids=list(range(rows)),
            cache=_SlotCache(self._num_layers, capacity),
            bias=torch.full(
                (rows, capacity), torch.finfo(self.dtype).min, dtype=self.dtype, device=self.device
            ),
            next_pos=torch.zeros(rows, dtype=torch.long, device=self.device),
            next_logits=None,
            pending=[list(h) for h in self._history],
        )
        self._sliding_window = _sliding_window(config)

    # -- public API ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._history)

    def tokens(self, seq_index: int) -> list[int]:
        """All tokens of a sequence so far: prompt, generated turns and appended observations."""
        return list(self._history[seq_index])

    def trajectory(self, seq_index: int) -> tuple[list[int], list[bool], list[float]]:
        """``(token_ids, generated, logprobs)`` aligned per token: ``generated`` marks the
        policy's own tokens (the ones a loss should cover; prompt and observations are
        False), ``logprobs`` holds their sampling log-probs and 0.0 elsewhere."""
        logprobs = self._logprobs[seq_index]
        generated = [lp is not None for lp in logprobs]
        return self.tokens(seq_index), generated, [lp or 0.0 for lp in logprobs]

    def append(self, token_ids: dict[int, Sequence[int]] | Sequence[Sequence[int]]) -> None:
        """Queue tokens (e.g. an observation) after the given sequences; encoded lazily by the
        next :meth:`decode` (or :meth:`prefill`), all appended rows in one batched pass."""
        items = token_ids.items() if isinstance(token_ids, dict) else enumerate(token_ids)
        row_of = {s: r for r, s in enumerate(self._rows.seq_ids)}
        for seq, ids in items:
            if seq in self._released:
                raise ValueError(f"sequence {seq} was released")
            ids = list(map(int, ids))
            self._history[seq].extend(ids)
            self._logprobs[seq].extend([None] * len(ids))
            self._rows.pending[row_of[seq]].extend(ids)

    def release(self, seq_indices: Sequence[int]) -> None:
        """Drop finished sequences from the batch, freeing their cache rows."""
        self._released.update(seq_indices)
        keep = [r for r, s in enumerate(self._rows.seq_ids) if s not in self._released]
        if len(keep) < len(self._rows):
            if not keep:
                raise ValueError("cannot release every sequence; drop the DecodeState instead")
            self._rows = self._rows.take(keep, release=True)

    @torch.inference_mode()
    def prefill(self) -> None:
        """Encode every pending token now (``decode`` does this itself)."""
        with _decoding_mode(self.model):
            self._rows = self._feed_pending(self._rows)

    @torch.inference_mode()
    def decode(
        self,
        *,
        max_new_tokens: int | Mapping[int, int],
        seq_indices: Sequence[int] | None = None,
        sampling: SamplingParams | None = None,
        stop_strings: Sequence[str] = (),
        stop_token_ids: Sequence[int] = (),
        eos_token_ids: Sequence[int] | None = None,
        tokenizer: Any = None,
        generator: torch.Generator | None = None,
    ) -> dict[int, TurnOutput]:
        """Generate one turn for ``seq_indices`` (default: all live sequences).

        A sequence stops at an EOS token (``"eos"``), at one of ``stop_token_ids`` or when its
        decoded text of this turn comes to contain one of ``stop_strings`` (``"stop"``; the
        completing token is kept), or after ``max_new_tokens`` (``"length"``): one budget for
        all, or a ``{seq index: budget}`` mapping so that sequences near a total token budget
        share the turn with the others instead of needing a separate call. Stop strings are
        matched on decoded text, so they work however the tokenizer splits them; they need
        ``tokenizer``. ``eos_token_ids`` defaults to the model's generation config.
        """
        sampling = sampling or SamplingParams()
        if stop_strings and tokenizer is None:
            raise ValueError("stop_strings need the tokenizer")
        rule = _StopRule(
            eos=frozenset(
                _eos_ids(self.model, tokenizer) if eos_token_ids is None else eos_token_ids
            ),
            stop_ids=frozenset(stop_token_ids),
            stop_strings=tuple(stop_strings),
            tokenizer=tokenizer,
        )
        wanted = set(range(len(self))) - self._released if seq_indices is None else set(seq_indices)
        if wanted & self._released:
            raise ValueError(f"sequences {sorted(wanted & self._released)} were released")
        outputs = {s: TurnOutput() for s in sorted(wanted)}
        if isinstance(max_new_tokens, Mapping):
            budget = {s: int(max_new_tokens[s]) for s in wanted}
        else:
            budget = dict.fromkeys(wanted, int(max_new_tokens))
        wanted = {s for s in wanted if budget[s] > 0}
        if not wanted:
            return outputs

        rows = self._rows
        parked: list[_Rows] = []
        idle = [r for r, s in enumerate(rows.seq_ids) if s not in wanted]
        if idle:  # sequences not decoding this turn wait aside, untouched
            parked.append(rows.take(idle))
            rows = rows.take([r for r, s in enumerate(rows.seq_ids) if s in wanted], release=True)
        with _decoding_mode(self.model):
            widest = max(len(p) for p in rows.pending)
            longest = max(budget[s] for s in wanted)
            rows.reserve(widest + longest)
            rows = self._feed_pending(rows)
            active = [True] * len(rows)
            for step in range(longest):
                if step > 0:
                    self._feed_step(rows, active)
                assert rows.next_logits is not None
                tokens, logprobs = sample(rows.next_logits, sampling, generator)
                token_list, logprob_list = tokens.tolist(), logprobs.tolist()
                for r, seq in enumerate(rows.seq_ids):
                    if not active[r]:
                        continue
                    tok, out = token_list[r], outputs[seq]
                    out.token_ids.append(tok)
                    out.logprobs.append(logprob_list[r])
                    self._history[seq].append(tok)
                    self._logprobs[seq].append(logprob_list[r])
                    rows.pending[r] = [tok]
                    reason = rule.reason(out.token_ids)
                    if reason is not None:
                        out.finish_reason = reason
                        active[r] = False
                    elif len(out.token_ids) >= budget[seq]:
                        active[r] = False  # finish_reason stays "length"
                if not any(active):
                    break
                done = [r for r, a in enumerate(active) if not a]
                if len(done) >= max(1, COMPACT_FRACTION * len(rows)):
                    parked.append(rows.take(done))
                    keep = [r for r, a in enumerate(active) if a]
                    rows = rows.take(keep, release=True)
                    active = [True] * len(rows)
        self._rows = _Rows.concat([rows, *parked])
        return outputs

    # -- forward passes -----------------------------------------------------------------------

    def _forward(
        self,
        rows: _Rows,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        mask: torch.Tensor,
        query_pos: torch.Tensor,
    ) -> torch.Tensor:
        """One pass writing ``input_ids.shape[1]`` new columns; returns last-column logits."""
        attention_mask: Any = mask
        if self._sliding_window is not None:
            attention_mask = {
                "full_attention": mask,
                "sliding_attention": self._sliding_mask(rows, mask, query_pos),
            }
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=rows.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        rows.cache.write_start += input_ids.shape[1]
        return out.logits[:, -1].float()

    def _feed_pending(self, rows: _Rows) -> _Rows:
        """Encode the rows' pending tokens; returns the rows to go on with.

        Before anything is encoded, identical prompts (the G samples of a GRPO group) are
        encoded once and their cache rows copied, so a group's prompt costs one row of
        prefill instead of G.
        """
        if rows.length == 0 and len(rows) > 1:
            first_of: dict[tuple[int, ...], int] = {}
            unique: list[int] = []
            for r, tokens in enumerate(rows.pending):
                if first_of.setdefault(tuple(tokens), len(unique)) == len(unique):
                    unique.append(r)
            if len(unique) < len(rows):
                source = [first_of[tuple(tokens)] for tokens in rows.pending]
                seq_ids = list(rows.seq_ids)
                shared = rows.take(unique, release=True)
                self._feed(shared, shared.pending)
                rows = shared.take(source, release=True)
                rows.seq_ids = seq_ids
                rows.pending = [[] for _ in source]  # not the shared (aliased) lists
                return rows
        self._feed(rows, rows.pending)
        return rows

    def _feed(self, rows: _Rows, token_lists: Sequence[Sequence[int]]) -> None:
        """Encode per-row token lists of any lengths in one pass (right-aligned; short rows
        get holes on the left of their block)."""
        counts = [len(t) for t in token_lists]
        width = max(counts)
        if width == 0:
            return
        rows.reserve(width)
        n, start, device = len(rows), rows.length, self.device
        ids = torch.zeros((n, width), dtype=torch.long)
        for r, toks in enumerate(token_lists):
            if toks:
                ids[r, width - len(toks) :] = torch.tensor(toks, dtype=torch.long)
        count = torch.tensor(counts, device=device)
        col = torch.arange(width, device=device)
        real = col[None, :] >= (width - count)[:, None]  # [rows, width]
        offset = (col[None, :] - (width - count)[:, None]).clamp(min=0)
        position_ids = rows.next_pos[:, None] + offset
        minimum = torch.finfo(self.dtype).min
        block = rows.bias[:, start : start + width]
        block.copy_(torch.where(real, 0.0, minimum).to(self.dtype))
        end = start + width
        # [rows, 1, width, end]: every query sees the real past columns, then the new block
        # causally; each query also sees itself so padding queries never get an empty softmax.
        mask = rows.bias[:, None, None, :end].expand(n, 1, width, end).clone()
        future = torch.ones(width, width, dtype=torch.bool, device=device).triu(1)
        mask[:, :, :, start:end].masked_fill_(future, minimum)
        mask[:, :, :, start:end].diagonal(dim1=-2, dim2=-1).fill_(0.0)
        logits = self._forward(rows, ids.to(device), position_ids, mask, position_ids)
        fed = count > 0
        if rows.next_logits is None:
            rows.next_logits = logits
        else:
            rows.next_logits[fed] = logits[fed]
        rows.next_pos += count
        for r in range(n):
            rows.pending[r] = []

    def _feed_step(self, rows: _Rows, active: list[bool]) -> None:
        """The hot path: one pending token per active row, mask taken straight from ``bias``."""
        start = rows.length
        device = self.device
        ids = torch.tensor([p[-1] if a else 0 for p, a in zip(rows.pending, active, strict=True)])
        live = torch.tensor(active, device=device)
        rows.bias[:, start] = torch.where(live, 0.0, torch.finfo(self.dtype).min)
        mask = rows.bias[:, None, None, : start + 1]
        position_ids = rows.next_pos[:, None]
        logits = self._forward(rows, ids.to(device)[:, None], position_ids, mask, position_ids)
        if all(active):
            rows.next_logits = logits
        else:
            assert rows.next_logits is not None
            rows.next_logits[live] = logits[live]
        rows.next_pos += live
        for r, a in enumerate(active):
            if a:
                rows.pending[r] = []

    def _sliding_mask(self, rows: _Rows, mask: torch.Tensor, query_pos: torch.Tensor) -> Any:
        """The full mask, further limited to keys fewer than ``window`` real tokens back.

        Key positions are recovered from the mask itself (real columns counted left to
        right), so holes never count toward the window.
        """
        assert self._sliding_window is not None
        end = mask.shape[-1]
        key_pos = (rows.bias[:, :end] == 0).cumsum(dim=1) - 1
        distance = query_pos[:, None, :, None] - key_pos[:, None, None, :]
        return mask.masked_fill(distance >= self._sliding_window, torch.finfo(mask.dtype).min)


# ---------------------------------------------------------------------------------------------
# Sampling and stopping


def sample(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row of ``[rows, vocab]`` float logits.

    Returns ``(tokens, logprobs)`` where ``logprobs`` is the token's log-probability under
    ``softmax(logits / temperature)`` without top-k/top-p truncation (see module docstring).

    Sampling is by inverse CDF (a uniform draw per row and a ``searchsorted``) rather than
    ``torch.multinomial``, which on CPU draws an exponential variate per vocabulary entry
    (~15 ms per step for 16 x 49k logits; this takes ~0.1 ms after the softmax).
    """
    if params.greedy:
        tokens = logits.argmax(dim=-1)
        return tokens, _gather(logits.log_softmax(dim=-1), tokens)
    scaled = logits / params.temperature if params.temperature != 1.0 else logits
    probs = scaled.softmax(dim=-1)
    if params.top_k > 0 or params.top_p < 1.0:
        # Work on the candidates sorted by probability: top-k is a prefix, top-p a shorter one.
        if 0 < params.top_k < scaled.shape[-1]:
            candidate_logits, candidates = scaled.topk(params.top_k, dim=-1)
        else:
            candidate_logits, candidates = scaled.sort(dim=-1, descending=True)
        candidate_probs = candidate_logits.softmax(dim=-1)
        if params.top_p < 1.0:
            # Drop a candidate once the ones before it already reach top_p (the first stays).
            mass_before = candidate_probs.cumsum(dim=-1) - candidate_probs
            candidate_probs = candidate_probs.masked_fill(mass_before >= params.top_p, 0.0)
        tokens = _gather(candidates, _inverse_cdf(candidate_probs, generator))
    else:
        tokens = _inverse_cdf(probs, generator)
    # log(softmax) rather than a separate log_softmax pass: one fewer sweep over the vocabulary
    # per step, and a sampled token's probability is never small enough to lose precision.
    return tokens, _gather(probs, tokens).log()


def _gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return values.gather(-1, index[:, None]).squeeze(-1)


SAMPLING_BLOCK = 256


def _inverse_cdf(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row from unnormalised non-negative ``probs``.

    Over a large vocabulary, two stages: pick a block of 256 entries by its mass, then an entry
    within it (a fresh uniform each, so the result is exactly ``p / sum(p)``). A full-length
    ``cumsum`` is a serial scan; this needs one vectorised block sum and two short scans
    (measured 0.78 -> 0.10 ms for 16 x 49k on one core).
    """
    rows, vocab = probs.shape
    if vocab <= 4 * SAMPLING_BLOCK:
        return _draw(probs, generator)
    blocks = -(-vocab // SAMPLING_BLOCK)
    padded = torch.nn.functional.pad(probs, (0, blocks * SAMPLING_BLOCK - vocab))
    padded = padded.view(rows, blocks, SAMPLING_BLOCK)
    block = _draw(padded.sum(dim=-1), generator)
    within = padded[torch.arange(rows, device=probs.device), block]
    return block * SAMPLING_BLOCK + _draw(within, generator)


def _draw(weights: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    cdf = weights.cumsum(dim=-1)
    u = torch.rand(weights.shape[0], 1, generator=generator, device=weights.device) * cdf[:, -1:]
    index = torch.searchsorted(cdf, u, right=True).squeeze(-1)
    # u can round up to the total (p ~ 1e-7); fall back to the heaviest entry then.
    overflow = index >= weights.shape[-1]
    return torch.where(overflow, weights.argmax(dim=-1), index) if overflow.any() else index


@dataclass(frozen=True)
class _StopRule:
    """When a turn ends, checked after every sampled token."""

    eos: frozenset[int]
    stop_ids: frozenset[int]
    stop_strings: tuple[str, ...]
    tokenizer: Any

    @property
    def window(self) -> int:
        # Tokens to decode to see any stop string whole: one character per token at worst,
        # plus slack for tokens that are pieces of one multi-byte character.
        return 2 * max((len(s) for s in self.stop_strings), default=0) + 2

    def reason(self, generated: list[int]) -> FinishReason | None:
        last = generated[-1]
        if last in self.eos:
            return "eos"
        if last in self.stop_ids:
            return "stop"
        if self.stop_strings:
            tail = self.tokenizer.decode(generated[-self.window :])
            if any(s in tail for s in self.stop_strings):
                return "stop"
        return None


# ---------------------------------------------------------------------------------------------
# One-shot generation


def generate(
    model: Any,
    input_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    greedy: bool = False,
    stop_strings: Sequence[str] = (),
    stop_token_ids: Sequence[int] = (),
    eos_token_ids: Sequence[int] | None = None,
    tokenizer: Any = None,
    generator: torch.Generator | None = None,
) -> GenerationResult:
    """Sample continuations of ragged prompts (lists of token ids) in one batch.

    A convenience over :class:`DecodeState` for single-turn use; see
    :meth:`DecodeState.decode` for the stopping rules and the module docstring for what the
    log-probs mean.
    """
    sampling = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, greedy=greedy)
    state = DecodeState(model, input_ids, capacity=max(map(len, input_ids)) + max_new_tokens)
    turn = state.decode(
        max_new_tokens=max_new_tokens,
        sampling=sampling,
        stop_strings=stop_strings,
        stop_token_ids=stop_token_ids,
        eos_token_ids=eos_token_ids,
        tokenizer=tokenizer,
        generator=generator,
    )
    return GenerationResult(
        outputs=[turn[i] for i in range(len(input_ids))],
        temperature=1.0 if greedy else temperature,
    )


# ---------------------------------------------------------------------------------------------
# Helpers


def _model_dtype(model: Any) -> torch.dtype:
    return next(p.dtype for p in model.parameters() if p.is_floating_point())


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.append(value)
        elif isinstance(value, (list, tuple)):
            ids.extend(int(v) for v in value)
    return sorted(set(ids))


def _sliding_window(config: Any) -> int | None:
    text = config.get_text_config()
    layer_types = getattr(text, "layer_types", None) or ()
    if "sliding_attention" in layer_types:
        return int(text.sliding_window)
    return None


@contextlib.contextmanager
def _decoding_mode(model: Any) -> Iterator[None]:
    """Eval mode for the duration (no dropout; gradient checkpointing off), restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
