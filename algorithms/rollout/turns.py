"""What generates a turn, as the rollout engine sees it: :class:`TurnDecoder` and
:class:`RolloutBackend`, and the :class:`TurnOutput` each turn gives back.

Two implementations: the HF decoder (:class:`~algorithms.rollout.DecodeState`, on a KV
cache kept across turns) and the vLLM backend
(:class:`~algorithms.rollout.vllm_backend.VLLMDecodeState`, started by
:class:`~algorithms.rollout.vllm_backend.VLLMBackend`). Both subclass :class:`TurnDecoder`,
so :meth:`TurnDecoder.decode`, its signature and its documentation are written once here;
each implements :meth:`TurnDecoder.decode_turn` on one :class:`TurnRequest`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from algorithms.rollout.sampling import Sampling
from research_env.termination import Termination


@dataclass
class TurnOutput:
    """What one sequence generated in one :meth:`TurnDecoder.decode` call."""

    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: Termination = Termination.LENGTH


@dataclass(frozen=True)
class TurnRequest:
    """One turn's instructions, as :meth:`TurnDecoder.decode` documents them."""

    max_new_tokens: int | Mapping[int, int]
    seq_indices: Sequence[int] | None = None
    sampling: Sampling = field(default_factory=Sampling)
    stop_strings: Sequence[str] = ()
    stop_token_ids: Sequence[int] = ()
    eos_token_ids: Sequence[int] | None = None
    tokenizer: Any = None
    generator: torch.Generator | None = None

    def budget(self, seq: int) -> int:
        """Sequence ``seq``'s token budget for this turn."""
        limit = self.max_new_tokens
        return int(limit[seq] if isinstance(limit, Mapping) else limit)


@runtime_checkable
class TurnDecoder(Protocol):
    """A batch of sequences that grow turn by turn: the engine's four verbs."""

    def __len__(self) -> int: ...

    def tokens(self, seq_index: int) -> list[int]:
        """Sequence ``seq_index``'s whole token history (prompt, turns, observations)."""
        ...

    def append(self, token_ids: Mapping[int, Sequence[int]] | Sequence[Sequence[int]]) -> None:
        """Append given tokens (observations) to sequences: ``{seq index: ids}`` or one
        list per sequence."""
        ...

    def release(self, seq_indices: Sequence[int]) -> None:
        """Drop finished sequences (they are never decoded again)."""
        ...

    def decode_turn(self, request: TurnRequest) -> dict[int, TurnOutput]:
        """:meth:`decode`'s work, on its arguments gathered into one request."""
        ...

    def decode(
        self,
        *,
        max_new_tokens: int | Mapping[int, int],
        seq_indices: Sequence[int] | None = None,
        sampling: Sampling | None = None,
        stop_strings: Sequence[str] = (),
        stop_token_ids: Sequence[int] = (),
        eos_token_ids: Sequence[int] | None = None,
        tokenizer: Any = None,
        generator: torch.Generator | None = None,
    ) -> dict[int, TurnOutput]:
        """Generate one turn for ``seq_indices`` (default: all live sequences).

        A sequence stops at an EOS token (``EOS``), at one of ``stop_token_ids`` or when its
        decoded text of this turn comes to contain one of ``stop_strings`` (``STOP``; the
        completing token is kept), or after ``max_new_tokens`` (``LENGTH``): one budget for
        all, or a ``{seq index: budget}`` mapping so that sequences near a total token budget
        share the turn with the others instead of needing a separate call. Stop strings are
        matched on decoded text, so they work however the tokenizer splits them; the HF
        decoder needs ``tokenizer`` for them. ``eos_token_ids`` defaults to the model's
        generation config. ``sampling`` says how tokens are drawn (its token budgets are the
        caller's business: this call obeys ``max_new_tokens``); default: plain sampling at
        temperature 1. ``generator`` seeds the HF decoder's draws (vLLM seeds its requests
        from ``sampling.seed``).
        """
        request = TurnRequest(
            max_new_tokens=max_new_tokens,
            seq_indices=seq_indices,
            sampling=sampling or Sampling(),
            stop_strings=stop_strings,
            stop_token_ids=stop_token_ids,
            eos_token_ids=eos_token_ids,
            tokenizer=tokenizer,
            generator=generator,
        )
        return self.decode_turn(request)


class RolloutBackend(Protocol):
    """Something other than the HF decoder that generates turns (vLLM): it starts a
    :class:`TurnDecoder` over the prompts, with ``model``'s weights when given."""

    def start(self, prompt_ids: Sequence[Sequence[int]], model: Any = None) -> TurnDecoder: ...
