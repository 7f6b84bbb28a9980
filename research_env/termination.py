"""One vocabulary for why things end: a decoded turn, and a whole episode.

The decoder, the env and the rollout engine all speak it, so a reason written by one is
understood by the others (and by the training loop's truncation mask) without mapping
tables. The values are the plain strings saved transcripts, ``info["termination"]`` and
``Trajectory.finish_reason`` have always held; ``Termination`` is a ``str`` enum, so
``Termination.ANSWERED == "answered"`` and JSON writes it as that string.

Why a turn ended (the decoder's answer, one per decoded turn):

- ``STOP``: the turn reached a stop string (``</search>``, ``</answer>``) or stop token.
- ``EOS``: the model emitted its end-of-sequence token.
- ``LENGTH``: the turn used its whole token budget.

Why an episode ended (``info["termination"]``):

- ``ANSWERED``: the agent gave an ``<answer>`` (terminated).
- ``INVALID_OUTPUT``: an invalid turn with ``on_invalid="terminate"`` (terminated).
- ``EOS``: the model ended its response without answering (terminated: it was the
  policy's own choice, so it is scored and trained on like any other ending).
- ``TURN_BUDGET``: ``max_turns`` turns without an answer (truncated).
- ``TOKEN_BUDGET``: the trainer's token budget for the response ran out (truncated).

Only the last two are *truncations* in Gymnasium's sense: the episode was cut off from
outside, not ended by the agent. :data:`TRUNCATING` is that set; a trainer that masks
truncated episodes out of the loss uses it (masking EOS episodes would hide from the
policy the one signal that stopping early is bad).
"""

from __future__ import annotations

from enum import Enum


class Termination(str, Enum):
    """Why a decoded turn or an episode ended; see the module docstring."""

    # Episode ends.
    ANSWERED = "answered"
    INVALID_OUTPUT = "invalid_output"
    TURN_BUDGET = "turn_budget"
    TOKEN_BUDGET = "token_budget"
    # Turn ends; EOS also ends the episode (the rollout engine ends it there).
    EOS = "eos"
    STOP = "stop"
    LENGTH = "length"

    def __str__(self) -> str:  # "answered", not "Termination.ANSWERED", in messages and f-strings
        return self.value


# Episode ends that cut an episode off from outside (Gymnasium's ``truncated``).
TRUNCATING: frozenset[Termination] = frozenset({Termination.TURN_BUDGET, Termination.TOKEN_BUDGET})

# The reasons a whole episode can end with.
EPISODE_ENDS: frozenset[Termination] = frozenset(
    {
        Termination.ANSWERED,
        Termination.INVALID_OUTPUT,
        Termination.EOS,
        Termination.TURN_BUDGET,
        Termination.TOKEN_BUDGET,
    }
)

# The reasons a decoded turn can end with.
TURN_ENDS: frozenset[Termination] = frozenset(
    {Termination.STOP, Termination.EOS, Termination.LENGTH}
)
