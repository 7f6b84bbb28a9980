"""A lean batched decoder for RL rollouts, with a KV cache that survives across turns.

Why not ``model.generate``: rollouts need (1) the log-prob of every sampled token, (2) rows that
stop independently at stop strings such as ``</search>``, (3) finished rows that stop costing
compute, and (4) multi-turn episodes where an observation is appended to a sequence and decoding
resumes *without re-encoding the whole history*. ``generate`` does none of (3)/(4), and per step
it re-builds masks and grows its cache by ``torch.cat``.

How the cache is laid out (the one idea to hold in your head; the buffers are
:mod:`algorithms.rollout.kv_cache`):

- Every sequence is a row of a preallocated buffer ``[rows, kv_heads, columns, head_dim]`` per
  layer. All rows write the same column range in each forward pass.
- A row that has nothing to write in a pass (it already finished its turn, or its appended
  observation is shorter than another row's) writes a *hole*: a column masked out of attention
  for good. ``Rows.bias`` is the additive mask row (0 = real token, -inf = hole), kept up to
  date incrementally, so a decode step builds no mask at all.
- Positions (RoPE) are counted per row over real tokens only, so holes change nothing: decoding
  with holes gives the same logits as decoding the row alone (tests check this against
  ``model.generate`` and against full recomputation).
- Tokens that are known but not yet run through the model are *pending* for their row: the last
  sampled token of a turn, and anything passed to :meth:`DecodeState.append`. The next forward
  pass encodes them, right-aligned so every row's last real token sits in the last column.
- Once a quarter of the decoding rows have finished their turn, they are copied aside and the
  rest decode as a smaller batch; all rows are merged back when the turn ends.

Speed: decode with :func:`~algorithms.rollout.rollout_copy` (bf16, LoRA merged, linears
pre-packed for oneDNN, and for Llama-family models the fused forward of
:mod:`algorithms.rollout.fused_llama`), not the training model (numbers, and what did not
help: benchmarks/RESULTS.md, "Decoding").

What the log-probs mean: :mod:`algorithms.rollout.sampler`.

Why one file of ~450 lines: it is one idea, decoding many sequences on one KV cache kept
across turns; the cache's data structures and the sampler live in their own files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from algorithms.model_modes import eval_mode
from algorithms.rollout.kv_cache import GROWTH_SLACK, Rows, SlotCache
from algorithms.rollout.sampler import sample
from algorithms.rollout.sampling import Sampling
from algorithms.rollout.stop import StopRule
from algorithms.rollout.turns import TurnDecoder, TurnOutput, TurnRequest
from research_env.termination import Termination

# Compact the working batch once this fraction of its rows has finished the turn: copying the
# cache once is cheaper than carrying dead rows through every remaining step.
COMPACT_FRACTION = 0.25


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
    def finish_reasons(self) -> list[Termination]:
        return [o.finish_reason for o in self.outputs]


class DecodeState(TurnDecoder):
    """A batch of sequences whose KV caches persist across turns (the HF
    :class:`~algorithms.rollout.turns.TurnDecoder`).

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
        self._live: tuple[tuple[bool, ...], torch.Tensor] | None = None  # the active mask
        capacity = max(capacity, max(len(p) for p in prompts) + GROWTH_SLACK)
        rows = len(prompts)
        self._rows = Rows(
            seq_ids=list(range(rows)),
            cache=SlotCache(self._num_layers, capacity),
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

    def append(self, token_ids: Mapping[int, Sequence[int]] | Sequence[Sequence[int]]) -> None:
        """Queue tokens (e.g. an observation) after the given sequences; encoded lazily by the
        next :meth:`decode` (or :meth:`prefill`), all appended rows in one batched pass."""
        items = token_ids.items() if isinstance(token_ids, Mapping) else enumerate(token_ids)
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
        with eval_mode(self.model):
            self._rows = self._feed_pending(self._rows)

    @torch.inference_mode()
    def decode_turn(self, request: TurnRequest) -> dict[int, TurnOutput]:
        """:meth:`~algorithms.rollout.turns.TurnDecoder.decode` on the KV cache."""
        sampling, tokenizer, generator = request.sampling, request.tokenizer, request.generator
        stop_strings, eos_token_ids = request.stop_strings, request.eos_token_ids
        stop_token_ids, seq_indices = request.stop_token_ids, request.seq_indices
        max_new_tokens = request.max_new_tokens
        if stop_strings and tokenizer is None:
            raise ValueError("stop_strings need the tokenizer")
        rule = StopRule(
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
        parked: list[Rows] = []
        idle = [r for r, s in enumerate(rows.seq_ids) if s not in wanted]
        if idle:  # sequences not decoding this turn wait aside, untouched
            parked.append(rows.take(idle))
            rows = rows.take([r for r, s in enumerate(rows.seq_ids) if s in wanted], release=True)
        with eval_mode(self.model):
            widest = max(len(p) for p in rows.pending)
            longest = max(budget[s] for s in wanted)
            rows.reserve(widest + longest)
            rows = self._feed_pending(rows)
            active = [True] * len(rows)
            tokens: torch.Tensor | None = None  # the last sampled tokens, on the device
            for step in range(longest):
                if step > 0:
                    assert tokens is not None
                    self._feed_step(rows, active, tokens)
                assert rows.next_logits is not None
                tokens, logprobs = sample(rows.next_logits, sampling, generator)
                # One host read per step for both (float64 holds every token id exactly).
                token_floats, logprob_list = torch.stack(
                    [tokens.to(torch.float64), logprobs.to(torch.float64)]
                ).tolist()
                token_list = [int(t) for t in token_floats]
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
                        active[r] = False  # finish_reason stays LENGTH
                if not any(active):
                    break
                done = [r for r, a in enumerate(active) if not a]
                if len(done) >= max(1, COMPACT_FRACTION * len(rows)):
                    parked.append(rows.take(done))
                    keep = [r for r, a in enumerate(active) if a]
                    rows = rows.take(keep, release=True)
                    tokens = tokens[torch.tensor(keep, device=tokens.device)]
                    active = [True] * len(rows)
        self._rows = Rows.concat([rows, *parked])
        return outputs

    # -- forward passes -----------------------------------------------------------------------

    def _forward(
        self,
        rows: Rows,
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

    def _feed_pending(self, rows: Rows) -> Rows:
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

    def _feed(self, rows: Rows, token_lists: Sequence[Sequence[int]]) -> None:
        """Encode per-row token lists of any lengths in one pass (right-aligned; short rows
        get holes on the left of their block)."""
        counts = [len(t) for t in token_lists]
        width = max(counts)
        if width == 0:
            return
        rows.reserve(width)
        n, start, device = len(rows), rows.length, self.device
        ids = torch.zeros((n, width), dtype=torch.long, device="cpu")  # built on the host
        for r, toks in enumerate(token_lists):
            if toks:
                ids[r, width - len(toks) :] = torch.tensor(toks, dtype=torch.long, device="cpu")
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

    def _feed_step(self, rows: Rows, active: list[bool], tokens: torch.Tensor) -> None:
        """The hot path: each active row's token just sampled (``tokens``, still on the
        device: an inactive row's is fed too, behind a masked-out column), mask taken
        straight from ``bias``. The active mask goes to the device only when it changed."""
        start = rows.length
        ids = tokens
        key = tuple(active)
        if self._live is None or self._live[0] != key:
            self._live = (key, torch.tensor(active, device=self.device))
        live = self._live[1]
        rows.bias[:, start] = torch.where(live, 0.0, torch.finfo(self.dtype).min)
        mask = rows.bias[:, None, None, : start + 1]
        position_ids = rows.next_pos[:, None]
        logits = self._forward(rows, ids[:, None], position_ids, mask, position_ids)
        if all(active):
            rows.next_logits = logits
        else:  # no boolean-mask indexing: its data-dependent size is a host wait
            assert rows.next_logits is not None
            rows.next_logits = torch.where(live[:, None], logits, rows.next_logits)
        rows.next_pos += live
        for r, a in enumerate(active):
            if a:
                rows.pending[r] = []

    def _sliding_mask(self, rows: Rows, mask: torch.Tensor, query_pos: torch.Tensor) -> Any:
        """The full mask, further limited to keys fewer than ``window`` real tokens back.

        Key positions are recovered from the mask itself (real columns counted left to
        right), so holes never count toward the window.
        """
        assert self._sliding_window is not None
        end = mask.shape[-1]
        key_pos = (rows.bias[:, :end] == 0).cumsum(dim=1) - 1
        distance = query_pos[:, None, :, None] - key_pos[:, None, None, :]
        return mask.masked_fill(distance >= self._sliding_window, torch.finfo(mask.dtype).min)


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
    :meth:`~algorithms.rollout.turns.TurnDecoder.decode` for the stopping rules and the
    module docstring for what the log-probs mean.
    """
    sampling = Sampling(temperature=temperature, top_p=top_p, top_k=top_k, greedy=greedy)
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
        temperature=sampling.logprob_temperature,
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
