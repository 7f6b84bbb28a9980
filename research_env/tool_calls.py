"""Tool-call actions: the policy searches by calling a ``search`` tool, as chat models do.

The convention is Qwen2.5's and Qwen3's (and Hermes'): the assistant writes

    <tool_call>
    {"name": "search", "arguments": {"query": "Brisa Telk"}}
    </tool_call>

and the documents come back as a tool message, which a tool-capable chat template renders
as a turn of its own (``<tool_response>`` blocks in Qwen's). A turn without a tool call
that holds ``\\boxed{...}`` is the final answer, in plain text.

A turn is judged by these rules, in order; a broken rule makes the turn invalid with a
stable reason (:data:`TOOL_CALL_VIOLATIONS`), never an exception:

- ``<tool_call>`` / ``</tool_call>`` tags that do not pair: ``unclosed_tool_call``;
- more than one call in a turn (one query at a time, as the tag protocol):
  ``multiple_tool_calls``;
- a body that is not one JSON object with a ``name`` and an ``arguments`` object (or a
  JSON string holding one, OpenAI's spelling): ``tool_call_json``;
- a name other than ``search``: ``unknown_tool``;
- ``arguments.query`` missing, not a string, or blank: ``missing_query``;
- no tool call and no complete ``\\boxed{}``: ``no_action``.

Everything here is torch-free and linear in the turn's length (``json.loads`` is; its
recursion limit on deeply nested input is caught like any other malformed JSON).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from research_env.actions import Observation
from research_env.protocol import FormatMode, Turn, clean_text, last_boxed, normalize_query
from research_env.retrievers.base import SearchHit

if TYPE_CHECKING:
    from research_env.templates import PromptTemplate

TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
SEARCH_TOOL_NAME = "search"

# The tool as a JSON-schema function spec, the form ``apply_chat_template(tools=...)`` takes.
SEARCH_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": SEARCH_TOOL_NAME,
        "description": (
            "Search the document collection. Returns the top documents for the query, "
            "each as 'Doc i (Title: ...) text'."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "a short search query"},
            },
            "required": ["query"],
        },
    },
}

TOOL_CALL_VIOLATIONS: dict[str, str] = {
    "unclosed_tool_call": "a <tool_call> is never closed with </tool_call>, or one closes nothing",
    "multiple_tool_calls": "more than one tool call in one turn (call search once per turn)",
    "tool_call_json": (
        'a <tool_call> does not hold one JSON object {"name": ..., "arguments": {...}}'
    ),
    "unknown_tool": f"a tool call names a tool other than {SEARCH_TOOL_NAME!r}",
    "missing_query": "a search call's arguments lack a non-empty string 'query'",
    "no_action": "a turn with neither a tool call nor a final answer in \\boxed{}",
    "no_answer": "the episode ended without a final answer in \\boxed{}",
}

_CORRECTION = (
    "That turn was not a valid action: {detail}. Search by calling the search tool, "
    '<tool_call>\n{{"name": "search", "arguments": {{"query": "..."}}}}\n</tool_call>, '
    "or give the final answer in plain text with \\boxed{{}}."
)


def parse_tool_call_turn(text: str, on_call: Callable[[str], Turn] | None = None) -> Turn:
    """Parse one assistant turn in the tool-call format. Never raises. ``on_call`` turns
    the one call's JSON body into a turn (default: the ``search`` tool's rules; an MCP
    toolbox passes its own, :mod:`research_env.mcp_tools`)."""
    if not isinstance(text, str):
        return Turn(kind="invalid", reason="no_action")
    text = clean_text(text)
    n_open, n_close = text.count(TOOL_CALL_OPEN), text.count(TOOL_CALL_CLOSE)
    if n_open == 0 and n_close == 0:
        boxed = last_boxed(text)
        if boxed is None:
            return Turn(kind="invalid", reason="no_action")
        return Turn(kind="answer", answer=boxed.strip(), boxed=True, n_answers=1)
    start = text.find(TOOL_CALL_OPEN)
    end = text.find(TOOL_CALL_CLOSE)
    if n_open != n_close or end < start:
        return Turn(kind="invalid", reason="unclosed_tool_call")
    if n_open > 1:
        return Turn(kind="invalid", reason="multiple_tool_calls")
    return (on_call or _search_call)(text[start + len(TOOL_CALL_OPEN) : end])


def read_call(body: str) -> tuple[Any, dict[str, Any]] | None:
    """A tool call's JSON body as ``(name, arguments)``, or None when it is not one JSON
    object with a ``name`` and an ``arguments`` object (or a JSON string holding one)."""
    try:
        call = json.loads(body)
        arguments = call.get("arguments") if isinstance(call, dict) else None
        if isinstance(arguments, str):  # OpenAI's spelling: the arguments as a JSON string
            arguments = json.loads(arguments)
    except (ValueError, RecursionError):
        return None
    if not isinstance(call, dict) or "name" not in call or not isinstance(arguments, dict):
        return None
    return call["name"], arguments


def _search_call(body: str) -> Turn:
    """The search a tool call's JSON body asks for, or the invalid turn it is."""
    call = read_call(body)
    if call is None:
        return Turn(kind="invalid", reason="tool_call_json")
    name, arguments = call
    if name != SEARCH_TOOL_NAME:
        return Turn(kind="invalid", reason="unknown_tool")
    query = arguments.get("query")
    query = normalize_query(query) if isinstance(query, str) else ""
    if not query:
        return Turn(kind="invalid", reason="missing_query")
    return Turn(kind="search", query=query)


class ToolCallActions:
    """The tool-call format (see the module docstring). Stateless: use :data:`TOOL_CALLS`."""

    name = "tool-call"
    # A call is complete at its closing tag: the env runs it there. An answer turn ends
    # with the model's end-of-turn token, which every generator stops at anyway.
    stop_strings: tuple[str, ...] = (TOOL_CALL_CLOSE,)
    tools: tuple[dict[str, Any], ...] = (SEARCH_TOOL,)
    violations: Mapping[str, str] = TOOL_CALL_VIOLATIONS

    def parse(self, text: str) -> Turn:
        return parse_tool_call_turn(text)

    def violation(
        self, turns: Sequence[str], response: str, mode: FormatMode, result_tag: str
    ) -> str | None:
        """``strict``: every turn but the last is a valid search and the last answers;
        the first broken turn's reason is reported. ``loose``: the last turn answers."""
        if not turns:
            return "no_answer"
        last = self.parse(turns[-1])
        if mode == "strict":
            for text in turns[:-1]:
                turn = self.parse(text)
                if turn.kind != "search":
                    return turn.reason or "no_action"
            if last.kind == "invalid":
                return last.reason
        return None if last.kind == "answer" else "no_answer"

    def search_result(
        self, template: PromptTemplate, hits: Sequence[SearchHit], max_words: int | None = None
    ) -> Observation:
        content = template.documents(hits, max_words)
        message = {"role": "tool", "name": SEARCH_TOOL_NAME, "content": content}
        return Observation(template.format_documents(hits, max_words), message)

    def correction(self, turn: Turn) -> Observation:
        detail = TOOL_CALL_VIOLATIONS.get(turn.reason or "no_action", "no action")
        content = _CORRECTION.format(detail=detail)
        return Observation(f"\n{content}\n", {"role": "user", "content": content})

    def write_search(self, query: str) -> str:
        call = {"name": SEARCH_TOOL_NAME, "arguments": {"query": query}}
        return f"{TOOL_CALL_OPEN}\n{json.dumps(call, ensure_ascii=False)}\n{TOOL_CALL_CLOSE}"

    def write_answer(self, answer: str) -> str:
        return f"The answer is \\boxed{{{answer}}}."


TOOL_CALLS = ToolCallActions()
