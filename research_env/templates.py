"""Prompt templates: how a question is put to the policy and how documents come back.

A :class:`PromptTemplate` renders a question either as plain text (for base models, and
the better default for small instruct models) or as chat messages (for a tokenizer's
chat template), and formats retrieved documents into the observation block.

Pass a template name, a :class:`PromptTemplate`, or your own format string containing
``{question}`` (it then uses the ReSearch tags).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from research_env.actions import TAGS, ActionFormat
from research_env.retrievers.base import SearchHit
from research_env.tool_calls import TOOL_CALLS

_PROTOCOL = (
    "Answer the question by reasoning step by step and searching a document collection. "
    "Think inside <think> and </think>. To search, write a short query inside "
    "<search> and </search>; the documents found come back inside <{tag}> and </{tag}>. "
    "Search as often as you need, one query at a time. When you know the answer, write it "
    "inside <answer> and </answer>, with the final short answer in \\boxed{{}}, for "
    "example <answer>The answer is \\boxed{{Paris}}</answer>."
)

# The protocol in one breath, for a policy that already knows it (warm-started): the
# default template's instructions and worked example are ~320 tokens of every episode's
# prompt, paid in each rollout's prefill and each update's forward and backward.
_COMPACT = (
    "Think inside <think></think>. Search with <search>query</search>; documents come back "
    "inside <{tag}></{tag}>. Finish with <answer>The answer is \\boxed{{...}}</answer>."
)

# A worked episode about invented entities: it teaches the tags without leaking facts.
_EXAMPLE = (
    "Question: In which city is the company founded by Orlen Vask headquartered?\n"
    "<think>First I need the company that Orlen Vask founded.</think>\n"
    "<search>company founded by Orlen Vask</search>\n"
    "<{tag}>\nDoc 1 (Title: Orlen Vask) Orlen Vask is an engineer who founded "
    "Drellow Works in 1921.\n</{tag}>\n"
    "<think>Orlen Vask founded Drellow Works. Now I need where Drellow Works is "
    "headquartered.</think>\n"
    "<search>Drellow Works headquarters</search>\n"
    "<{tag}>\nDoc 1 (Title: Drellow Works) Drellow Works is a shipbuilder "
    "headquartered in Pellmarin.\n</{tag}>\n"
    "<think>Drellow Works is headquartered in Pellmarin.</think>\n"
    "<answer>The answer is \\boxed{{Pellmarin}}</answer>"
)


# Baselines without a search loop (direct answer, naive RAG): the same answer format, so
# their EM/F1 and format validity compare directly with the search agent's.
_DIRECT = (
    "Answer the question. Think briefly inside <think> and </think>, then write the answer "
    "inside <answer> and </answer>, with the final short answer in \\boxed{{}}, for example "
    "<answer>The answer is \\boxed{{Paris}}</answer>. There is no search: answer from what "
    "you know."
)
_DIRECT_EXAMPLE = (
    "Question: In which city is the company founded by Orlen Vask headquartered?\n"
    "<think>Orlen Vask founded Drellow Works, which is headquartered in Pellmarin.</think>\n"
    "<answer>The answer is \\boxed{{Pellmarin}}</answer>"
)
_READ = (
    "Answer the question using the documents given with it. Think briefly inside <think> "
    "and </think>, then write the answer inside <answer> and </answer>, with the final short "
    "answer in \\boxed{{}}, for example <answer>The answer is \\boxed{{Paris}}</answer>."
)
_READ_EXAMPLE = (
    "Documents:\n"
    "Doc 1 (Title: Orlen Vask) Orlen Vask is an engineer who founded Drellow Works in 1921.\n"
    "Doc 2 (Title: Drellow Works) Drellow Works is a shipbuilder headquartered in Pellmarin.\n"
    "Question: In which city is the company founded by Orlen Vask headquartered?\n"
    "<think>Orlen Vask founded Drellow Works, which is headquartered in Pellmarin.</think>\n"
    "<answer>The answer is \\boxed{{Pellmarin}}</answer>"
)

# The tool-call format: the chat template lists the search tool (its JSON schema comes
# with the prompt as ``tools``); these instructions say the same in words, so a plain-text
# prompt (no chat template) teaches it too.
_TOOL_CALL = (
    "Answer the question by reasoning step by step and searching a document collection. "
    "To search, call the search tool with a short query, one call per turn, written as\n"
    '<tool_call>\n{{"name": "search", "arguments": {{"query": "your query"}}}}\n</tool_call>\n'
    "The documents found come back in <{tag}> and </{tag}>. Search as often as you need. "
    "When you know the answer, reply in plain text, without a tool call, with the final "
    "short answer in \\boxed{{}}, for example: The answer is \\boxed{{Paris}}."
)


@dataclass(frozen=True)
class PromptTemplate:
    """A way of asking: instructions, an optional worked example, and the result tag.

    Attributes:
        name: registry name.
        instructions: the protocol description; ``{tag}`` is replaced by ``result_tag``.
        example: an optional worked episode shown before the question.
        result_tag: the tag around retrieved documents (``result`` or ``information``).
        prefill: text the assistant's first turn starts with (part of the prompt, so the
            model continues from it; it also counts when checking the response format).
        question_format: how the question itself is written.
        actions: the :class:`~research_env.actions.ActionFormat` the instructions teach
            (how turns are parsed, what the env replies, where a generator stops);
            the ReSearch tags unless the template says otherwise.
    """

    name: str
    instructions: str = _PROTOCOL
    example: str | None = None
    result_tag: str = "result"
    prefill: str = ""
    question_format: str = "Question: {question}"
    actions: ActionFormat = TAGS

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The tools to hand a chat template (``apply_chat_template(..., tools=...)``)."""
        return copy.deepcopy(list(self.actions.tools))

    def fingerprint_fields(self) -> dict[str, Any]:
        """Everything the template renders, as plain JSON values, for a run's fingerprint
        (:mod:`research_env.fingerprint`). The action format counts by name, and only when
        it is not the tags: a tag template hashes as it did before formats existed."""
        plain = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "actions"}
        if self.actions is not TAGS:
            plain["actions"] = self.actions.name
        return plain

    def system_prompt(self) -> str:
        text = self.instructions.format(tag=self.result_tag)
        if self.example:
            text += "\n\nExample:\n" + self.example.format(tag=self.result_tag)
        return text

    def render_text(self, question: str) -> str:
        """Plain-text prompt: instructions, example, question, then the prefill."""
        return (
            self.system_prompt()
            + "\n\n"
            + self.question_format.format(question=question)
            + "\n"
            + self.prefill
        )

    def render_messages(self, question: str) -> list[dict[str, str]]:
        """Chat messages for ``tokenizer.apply_chat_template``."""
        return [
            {"role": "system", "content": self.system_prompt()},
            {"role": "user", "content": self.question_format.format(question=question)},
        ]

    def documents(self, hits: Sequence[SearchHit], max_words: int | None = None) -> str:
        """The numbered documents of a search, one per line (a tool message's content),
        each cut to its first ``max_words`` words (then ending in `` ...``) when given."""
        lines = [
            f"Doc {i} (Title: {hit.document.title}) {_first_words(hit.document.text, max_words)}"
            for i, hit in enumerate(hits, 1)
        ]
        return "\n".join(lines) if lines else "No documents found."

    def format_documents(self, hits: Sequence[SearchHit], max_words: int | None = None) -> str:
        """The observation for a search: ``<result>`` block with numbered documents, each
        cut to its first ``max_words`` words when given."""
        body = self.documents(hits, max_words)
        return f"\n<{self.result_tag}>\n{body}\n</{self.result_tag}>\n"


def _first_words(text: str, max_words: int | None) -> str:
    """``text`` stripped, or its first ``max_words`` words and `` ...`` when it is longer
    (the marker tells the policy the document goes on)."""
    if max_words is None:
        return text.strip()
    words = text.split(maxsplit=max_words)
    if len(words) <= max_words:
        return text.strip()
    return " ".join(words[:max_words]) + " ..."


TEMPLATES: dict[str, PromptTemplate] = {
    # Default: plain text with one worked example and <think> prefilled; measured to
    # make small instruct models search far more often than a bare chat prompt.
    "research": PromptTemplate(name="research", example=_EXAMPLE, prefill="<think>"),
    # The same protocol without the example, for chat templates of larger models.
    "research-chat": PromptTemplate(name="research-chat"),
    # For warm-started policies: the protocol in one sentence, no example, <think> prefilled
    # (~40 prompt tokens instead of ~320: benchmarks/RESULTS.md, "Episode cost").
    "research-compact": PromptTemplate(
        name="research-compact", instructions=_COMPACT, prefill="<think>"
    ),
    # Search-R1's convention: documents come back inside <information>.
    "search-r1": PromptTemplate(
        name="search-r1", example=_EXAMPLE, result_tag="information", prefill="<think>"
    ),
    # Direct-answer baseline: no search, answer from memory in one turn.
    "direct": PromptTemplate(
        name="direct", instructions=_DIRECT, example=_DIRECT_EXAMPLE, prefill="<think>"
    ),
    # Naive-RAG baseline: the documents retrieved once with the question are put in the
    # prompt ("Documents:" lines before the question, as in the example), then one answer.
    "rag": PromptTemplate(name="rag", instructions=_READ, example=_READ_EXAMPLE, prefill="<think>"),
    # Search as a tool call in the chat template's convention (Qwen2.5/Qwen3 style), results
    # as tool messages, the answer in plain text with \boxed{} (research_env.tool_calls).
    "tool-call": PromptTemplate(
        name="tool-call", instructions=_TOOL_CALL, result_tag="tool_response", actions=TOOL_CALLS
    ),
}


def get_template(template: str | PromptTemplate) -> PromptTemplate:
    """Resolve a template name, pass a template through, or wrap a ``{question}`` string."""
    if isinstance(template, PromptTemplate):
        return template
    if not isinstance(template, str):
        raise ValueError(f"template must be a name, a PromptTemplate or a string, got {template!r}")
    if template in TEMPLATES:
        return TEMPLATES[template]
    if "{question}" in template:
        return replace(TEMPLATES["research-chat"], name="custom", question_format=template)
    raise ValueError(
        f"unknown template {template!r}; choose one of {sorted(TEMPLATES)} "
        "or pass a format string containing '{question}'"
    )
