"""Action formats: how a policy's turn spells "search" and "answer", and how the env replies.

The episode's state machine (:mod:`research_env.episode`) is the same whatever the
spelling; a :class:`PromptTemplate` carries the :class:`ActionFormat` its instructions
teach, so a template name picks both the prompt and the parser that matches it:

- :data:`TAGS` (every template but ``tool-call``): ``<search>query</search>`` and
  ``<answer>...</answer>``; documents come back inside the assistant's own text as a
  ``<result>`` block (:mod:`research_env.protocol`).
- :data:`research_env.tool_calls.TOOL_CALLS` (the ``tool-call`` template): a JSON tool call
  in the chat template's convention; documents come back as a *tool message*, a chat
  turn of its own.

That difference is why an :class:`Observation` carries a ``message`` beside its text: a
trainer with a chat template renders a message through that template (the assistant's
turn ends, the tool's turn, the next assistant turn begins), where tag observations are
plain text appended to the assistant's turn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from research_env.protocol import (
    FORMAT_VIOLATIONS,
    STOP_STRINGS,
    FormatMode,
    Turn,
    format_violation,
    parse_turn,
)
from research_env.retrievers.base import SearchHit

if TYPE_CHECKING:
    from research_env.templates import PromptTemplate

CORRECTION = (
    "\nThat turn had neither a complete <search>query</search> nor an "
    "<answer>...</answer>. Search with <search>query</search> or give the final answer "
    "with <answer>...</answer>.\n"
)


@dataclass(frozen=True)
class Observation:
    """What the env says after a turn that does not end the episode.

    Attributes:
        text: the observation as plain text, appended to the transcript after the turn
            (what ``env.step`` returns).
        message: the same as a chat message (``{"role": ..., "content": ...}``) for formats
            whose replies are chat turns of their own; None for replies that continue the
            assistant's text.
    """

    text: str
    message: dict[str, str] | None = None


class ActionFormat(Protocol):
    """How turns are written and read. Every method is a pure function of its inputs;
    ``parse`` and ``violation`` never raise and run in linear time (a policy may emit
    anything, see :mod:`research_env.protocol`)."""

    name: str
    # Strings at which a generator should stop a turn: the env acts on them.
    stop_strings: tuple[str, ...]
    # JSON-schema function specs for ``apply_chat_template(..., tools=...)``; () if none.
    tools: tuple[dict[str, Any], ...]
    # The codes ``violation`` and ``Turn.reason`` can return, with a sentence each.
    violations: Mapping[str, str]

    def parse(self, text: str) -> Turn:
        """One assistant turn, parsed."""
        ...

    def violation(
        self, turns: Sequence[str], response: str, mode: FormatMode, result_tag: str
    ) -> str | None:
        """Why a finished episode's turns (and ``response``, the turns with the env's
        observations interleaved) break the format, or None."""
        ...

    def search_result(
        self, template: PromptTemplate, hits: Sequence[SearchHit], max_words: int | None = None
    ) -> Observation:
        """The reply to a search that found ``hits`` (each cut to ``max_words`` words)."""
        ...

    def correction(self, turn: Turn) -> Observation:
        """The reply to an invalid turn (when the env corrects rather than terminates)."""
        ...

    def write_search(self, query: str) -> str:
        """A turn that searches ``query``, as a policy following the format writes it."""
        ...

    def write_answer(self, answer: str) -> str:
        """A turn that gives the final ``answer``."""
        ...


class TagActions:
    """The ReSearch / Search-R1 tags (see :mod:`research_env.protocol` for the rules).
    Stateless: use the one instance, :data:`TAGS`."""

    name = "tags"
    stop_strings: tuple[str, ...] = STOP_STRINGS
    tools: tuple[dict[str, Any], ...] = ()
    violations: Mapping[str, str] = FORMAT_VIOLATIONS

    def parse(self, text: str) -> Turn:
        return parse_turn(text)

    def violation(
        self, turns: Sequence[str], response: str, mode: FormatMode, result_tag: str
    ) -> str | None:
        return format_violation(response, mode, result_tag)

    def search_result(
        self, template: PromptTemplate, hits: Sequence[SearchHit], max_words: int | None = None
    ) -> Observation:
        return Observation(template.format_documents(hits, max_words))

    def correction(self, turn: Turn) -> Observation:
        return Observation(CORRECTION)

    def write_search(self, query: str) -> str:
        return f"<search>{query}</search>"

    def write_answer(self, answer: str) -> str:
        return f"<answer>The answer is \\boxed{{{answer}}}</answer>"


TAGS = TagActions()
