"""When a decoded turn ends: EOS, a stop token, or a stop string in the decoded text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from research_env.termination import Termination


@dataclass(frozen=True)
class StopRule:
    """When a turn ends, checked after every sampled token.

    Stop strings are matched on decoded text, so they work however the tokenizer splits
    them (``</search>`` may be one token, or five); only a short tail is decoded.
    """

    eos: frozenset[int]
    stop_ids: frozenset[int]
    stop_strings: tuple[str, ...]
    tokenizer: Any

    @property
    def window(self) -> int:
        # Tokens to decode to see any stop string whole: one character per token at worst,
        # plus slack for tokens that are pieces of one multi-byte character.
        return 2 * max((len(s) for s in self.stop_strings), default=0) + 2

    def reason(self, generated: list[int]) -> Termination | None:
        """``EOS``, ``STOP``, or ``None`` while the turn goes on (the decoder ends it
        with ``LENGTH`` when its budget runs out)."""
        last = generated[-1]
        if last in self.eos:
            return Termination.EOS
        if last in self.stop_ids:
            return Termination.STOP
        if self.stop_strings:
            tail = self.tokenizer.decode(generated[-self.window :])
            if any(s in tail for s in self.stop_strings):
                return Termination.STOP
        return None
