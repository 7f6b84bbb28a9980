"""The text protocol between a policy and the search environment.

A policy turn is free text. It may think in ``<think>...</think>``, query the corpus with
``<search>query</search>`` and finish with ``<answer>...</answer>``; the final answer may
be wrapped in ``\\boxed{...}`` (the ReSearch convention). The environment answers a
search with ``<result>\\n...documents...\\n</result>``.

Everything here is a pure function of strings and never raises on any input: a policy
can emit anything, and a malformed turn is a fact to reward, not an error. Every function
also runs in time linear in its input, for the same reason: a policy that emits
``"<answer>" * 100_000`` or ``"\\boxed{" * 100_000`` must cost the trainer a few
milliseconds, not minutes (``benchmarks/hostile_inputs.py`` measures this).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

SEARCH_OPEN, SEARCH_CLOSE = "<search>", "</search>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
RESULT_OPEN, RESULT_CLOSE = "<result>", "</result>"

# Strings at which a generator should stop a turn: the env acts on them.
STOP_STRINGS: tuple[str, ...] = (SEARCH_CLOSE, ANSWER_CLOSE)

# Queries longer than this are cut: a retriever gains nothing from megabytes of text.
MAX_QUERY_CHARS = 1024

# The lazy ``.*?`` is only linear when every opening tag it starts from has a closing
# tag after it; ``_complete_blocks`` guarantees that by never searching past the last one.
_SEARCH_RE = re.compile(r"<search>(.*?)</search>", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_BLOCK_TAGS = {_SEARCH_RE: (SEARCH_OPEN, SEARCH_CLOSE), _ANSWER_RE: (ANSWER_OPEN, ANSWER_CLOSE)}
_FEW_BLOCKS = 32  # up to this many blocks, _complete_blocks jumps with str.find
_WHITESPACE_RE = re.compile(r"\s+")

TurnKind = Literal["search", "answer", "invalid"]


@dataclass(frozen=True)
class Turn:
    """What one assistant turn asks the environment to do.

    Attributes:
        kind: ``"answer"`` if the turn holds an answer (complete, or opened and cut off),
            else ``"search"`` if it holds a complete search, else ``"invalid"``.
        query: the last complete search query of the turn (whitespace-collapsed).
        answer: the extracted final answer: the content of the last ``\\boxed{}`` inside
            the answer when there is one, else the whole answer text, stripped.
        boxed: whether the answer carried a ``\\boxed{...}``.
        n_answers: how many ``<answer>`` blocks the turn holds.
        conflicting_answers: several answer blocks that disagree (a way to game a
            max-over-answers reward, so it counts as malformed).
        reason: why an invalid turn is invalid, where the format can tell (the tool-call
            format's codes, :data:`research_env.tool_calls.TOOL_CALL_VIOLATIONS`); None
            otherwise.
    """

    kind: TurnKind
    query: str | None = None
    answer: str | None = None
    boxed: bool = False
    n_answers: int = 0
    conflicting_answers: bool = False
    reason: str | None = None


def clean_text(text: str) -> str:
    """Drop characters that cannot be encoded (lone surrogates, NUL) from model output."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


BOXED_OPEN = "\\boxed{"

# Below this length the plain scan is cheaper than numpy's per-call overhead; above it the
# vectorised scan keeps brace-dense text at C speed (see ``benchmarks/hostile_inputs.py``).
_VECTORISE_ABOVE_CHARS = 2048


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` in ``text`` with nested braces balanced.

    A box counts when its opening brace has a matching ``}``: the last such box wins, so
    ``\\boxed{a} \\boxed{b`` gives ``"a"``. Returns None when no box is complete.
    Linear in ``len(text)``.
    """
    start = text.rfind(BOXED_OPEN)
    if start == -1:
        return None
    body = start + len(BOXED_OPEN)
    close = text.find("}", body)
    if close != -1 and text.find("{", body, close) == -1:
        return text[body:close]  # the common case: the last box holds no braces
    if len(text) > _VECTORISE_ABOVE_CHARS:
        return _last_boxed_vectorised(text)
    # Walk the boxes from the last one back. A box that never closes also stops every
    # earlier box from closing after it (its brace stays open), so each earlier box need
    # only be scanned up to the later box's start: no character is scanned twice.
    limit = len(text)
    while start != -1:
        body = start + len(BOXED_OPEN)
        closing = _closing_brace(text, body, limit)
        if closing is not None:
            return text[body:closing]
        limit = start
        start = text.rfind(BOXED_OPEN, 0, start)
    return None


def _closing_brace(text: str, pos: int, limit: int) -> int | None:
    """Index of the ``}`` in ``text[pos:limit]`` that closes a brace opened just before
    ``pos``, or None. Steps from one ``}`` to the next, counting ``{`` in between."""
    depth = 0
    while True:
        close = text.find("}", pos, limit)
        if close == -1:
            return None
        depth += text.count("{", pos, close)
        if depth == 0:
            return close
        depth -= 1
        pos = close + 1


_BOXED_CODES = np.array([ord(c) for c in BOXED_OPEN], dtype=np.uint32)


def _last_boxed_vectorised(text: str) -> str | None:
    """``last_boxed`` for long text, with the brace matching done by numpy.

    With ``depth[i]`` the running count of ``{`` minus ``}`` up to and including ``i``,
    the brace at ``j`` is closed by the first ``i > j`` where ``depth[i] < depth[j]``; it
    is closed at all when the minimum of ``depth`` after ``j`` is below ``depth[j]``.
    """
    # UTF-32 keeps one array element per character, so array indices are string indices;
    # surrogatepass because this public function may see unclean text.
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    n, width = len(codes), len(_BOXED_CODES)
    is_box = np.ones(n - width + 1, dtype=bool)
    for offset, code in enumerate(_BOXED_CODES):
        is_box &= codes[offset : n - width + 1 + offset] == code
    braces = np.flatnonzero(is_box) + width - 1  # index of each box's opening brace
    steps = (codes == ord("{")).astype(np.int32) - (codes == ord("}"))
    depth = np.cumsum(steps)
    # The last box usually closes: one look at what follows it settles the common case.
    last = int(braces[-1])
    below = depth[last + 1 :] < depth[last]
    if not below.any():
        # min_after[j] = min(depth[j + 1:]); a brace at the very end has nothing after it.
        min_after = np.empty(n, dtype=depth.dtype)
        min_after[:-1] = np.minimum.accumulate(depth[::-1])[::-1][1:]
        min_after[-1] = np.iinfo(depth.dtype).max
        closed = braces[min_after[braces] < depth[braces]]
        if closed.size == 0:
            return None
        last = int(closed[-1])
        below = depth[last + 1 :] < depth[last]
    close = last + 1 + int(np.argmax(below))
    return text[last + 1 : close]


def _complete_blocks(pattern: re.Pattern[str], text: str) -> list[str]:
    """Contents of the complete blocks ``pattern`` (one of the block regexes) finds, left
    to right: the same list as ``pattern.findall(text)``, in linear time.

    Searching the whole text, every opening tag after the last closing tag would start a
    lazy match that scans to the end of the text and fails: quadratic in the number of
    such tags. Every match ends at or before the last closing tag, so the search stops
    there. With few blocks, ``str.find`` jumps from tag to tag at C speed, where the lazy
    regex tries to match the closing tag at every character (40x slower on one 1 MB
    block); with many, the regex's per-block cost is the lower.
    """
    open_tag, close_tag = _BLOCK_TAGS[pattern]
    last_close = text.rfind(close_tag)
    if last_close == -1:
        return []
    end = last_close + len(close_tag)
    if text.count(close_tag, 0, end) > _FEW_BLOCKS:
        return pattern.findall(text, 0, end)
    blocks, pos = [], 0
    while (start := text.find(open_tag, pos, end)) != -1:
        body = start + len(open_tag)
        close = text.find(close_tag, body, end)
        if close == -1:
            break
        blocks.append(text[body:close])
        pos = close + len(close_tag)
    return blocks


def normalize_query(query: str) -> str:
    """A query as the retriever gets it: whitespace collapsed, cut at MAX_QUERY_CHARS."""
    return _WHITESPACE_RE.sub(" ", query).strip()[:MAX_QUERY_CHARS]


def _extract_answer(raw: str) -> tuple[str, bool]:
    boxed = last_boxed(raw)
    if boxed is not None:
        return boxed.strip(), True
    return raw.strip(), False


def parse_turn(text: str) -> Turn:
    """Parse one assistant turn. Never raises; any string gives a ``Turn``."""
    if not isinstance(text, str):
        return Turn(kind="invalid")
    text = clean_text(text)

    answers = _complete_blocks(_ANSWER_RE, text)
    if not answers:
        # A turn cut off by a token budget inside its answer still answered.
        open_at = text.rfind(ANSWER_OPEN)
        if open_at != -1:
            answers = [text[open_at + len(ANSWER_OPEN) :]]
    if answers:
        final, boxed = _extract_answer(answers[-1])
        # Identical blocks extract identically, so each distinct block is extracted once.
        others = set(answers)
        others.discard(answers[-1])
        conflicting = any(_extract_answer(a)[0] != final for a in others)
        return Turn(
            kind="answer",
            answer=final,
            boxed=boxed,
            n_answers=len(answers),
            conflicting_answers=conflicting,
        )

    queries = _complete_blocks(_SEARCH_RE, text)
    if queries:
        return Turn(kind="search", query=normalize_query(queries[-1]))
    return Turn(kind="invalid")


FormatMode = Literal["strict", "loose"]


# Why a response breaks the protocol: each code :func:`format_violation` can return, with a
# sentence for people. The codes are stable (logs and ``info["invalid_reason"]`` use them).
FORMAT_VIOLATIONS: dict[str, str] = {
    "not_text": "the response is not a string",
    "no_answer": "no <answer> block",
    "unclosed_answer": "the <answer> block is never closed with </answer>",
    "multiple_answers": "more than one <answer> block",
    "unclosed_think": "a <think> is never closed (more <think> than </think>)",
    "unopened_think": "a </think> closes nothing (more </think> than <think>)",
    "unbalanced_search": "a <search> is never closed, or a </search> closes nothing",
    "search_without_result": (
        "a search got no result (several searches in one turn run only the last)"
    ),
    "stray_result": "a result block that no search asked for (written by the model?)",
    "answer_before_result": "the answer comes before the last search's result",
    "unboxed_answer": "the answer holds no \\boxed{...}",
}


def format_violation(
    response: str, mode: FormatMode = "strict", result_tag: str = "result"
) -> str | None:
    """Why a whole response (the model's turns with the env's results interleaved)
    breaks the protocol: a key of :data:`FORMAT_VIOLATIONS`, or None when it follows it.

    ``strict`` (the ReSearch rules): think tags paired, exactly one answer block, every
    search followed by exactly one result block, and a ``\\boxed{}`` inside the answer.
    ``loose``: one complete answer block, nothing more. ``result_tag`` names the
    block the env wraps documents in (``information`` for Search-R1's template).
    The first rule broken is reported. Never raises; linear time.
    """
    result_open, result_close = f"<{result_tag}>", f"</{result_tag}>"
    if not isinstance(response, str):
        return "not_text"
    answers = _complete_blocks(_ANSWER_RE, response)
    n_answer_open = response.count(ANSWER_OPEN)
    if n_answer_open == 0:
        return "no_answer"
    if not answers:
        return "unclosed_answer"
    if len(answers) != 1 or n_answer_open != 1:
        return "multiple_answers"
    if mode == "loose":
        return None
    n_think_open, n_think_close = response.count(THINK_OPEN), response.count(THINK_CLOSE)
    if n_think_open != n_think_close:
        return "unclosed_think" if n_think_open > n_think_close else "unopened_think"
    n_search = response.count(SEARCH_OPEN)
    if n_search != response.count(SEARCH_CLOSE):
        return "unbalanced_search"
    n_result_open, n_result_close = response.count(result_open), response.count(result_close)
    if n_result_open != n_result_close or n_result_open > n_search:
        return "stray_result"
    if n_result_open < n_search:
        return "search_without_result"
    # Each search must be answered by a result before the next search or the answer.
    pos = 0
    for _ in range(n_search):
        s_close = response.find(SEARCH_CLOSE, pos)
        r_open = response.find(result_open, s_close)
        next_search = response.find(SEARCH_OPEN, s_close)
        if s_close == -1 or r_open == -1 or (next_search != -1 and next_search < r_open):
            return "search_without_result"
        pos = response.find(result_close, r_open)
        if pos == -1:
            return "stray_result"
    if response.find(ANSWER_OPEN) < pos:
        return "answer_before_result"
    return None if last_boxed(answers[0]) is not None else "unboxed_answer"


def is_valid_format(response: str, mode: FormatMode = "strict", result_tag: str = "result") -> bool:
    """Whether a whole response follows the protocol: :func:`format_violation` finds
    nothing wrong (see it for the rules, and for why a response fails them). Never raises.
    """
    return format_violation(response, mode, result_tag) is None
