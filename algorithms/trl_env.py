"""``ReSearch-MultiHop-v0`` inside TRL's ``GRPOTrainer`` (its ``environment_factory`` API).

TRL (>= 1.16) runs multi-turn rollouts itself: it renders the prompt with the tokenizer's
chat template and the environment's public methods as *tools*, parses each completion's
tool calls with the tokenizer's response parser, calls the matching method of that
rollout's environment instance, appends the returned string as a ``tool`` message and
generates again, until a completion calls no tool. This module gives it what it needs:

- :class:`TRLSearchTask` wraps one :class:`~research_env.MultiHopSearchEnv` (its dataset,
  retriever, top-k, document formatting, rules and reward) and hands TRL
  ``environment_factory`` (one :class:`SearchToolEnv` per rollout, all sharing that env's
  retriever and index), ``dataset()`` (the train dataset: chat prompts plus each
  question's id) and ``reward_funcs``.
- :class:`SearchToolEnv` exposes one tool, ``search(query)``: the env's retriever with
  the env's top-k, answered with exactly the ``<result>`` block our own trainer's
  episodes see.
- :func:`search_env_reward` scores each finished rollout by *replaying* its messages
  through an :class:`~research_env.episode.Episode`: each ``search`` call becomes the turn
  ``<search>query</search>`` (after the message's text) answered by the documents that
  call returned, and the last assistant message is the final turn. So format validity,
  the extracted ``\\boxed{}`` answer and the reward (``research``, ``em``, ... whatever
  the env was built with) are computed by the same code, with the same numbers, as in
  our own trainer.

Why a reward function and not TRL's ``get_reward`` hook: ``get_reward()`` takes no
argument, and an environment only sees its tool calls, never the final assistant message
that holds the answer. TRL passes ``environments`` and ``completions`` to reward functions,
so the reward is computed there.

Loss masking: TRL builds a ``tool_mask`` (0 on every token of a tool response, including
the chat template's wrapper tokens around it, 1 on the model's own tokens) and multiplies
it into the completion mask of the loss (``GRPOTrainer._tool_call_loop`` and ``_compute_loss``
in trl 1.16), so retrieved documents never contribute to the gradient, as in our trainer.

Differences from our own rollout engine, all TRL's: there is no prefill (the model writes
its own ``<think>``), every tool call in a message runs (each is replayed as its own
search turn), and the turn budget is TRL's ``max_tool_calling_iterations`` (set it to
``task.max_tool_calling_iterations``; turns past the env's ``max_turns`` end the replayed
episode as truncated, as in our env). A search call that failed (a wrong argument, a query
holding protocol tags) is replayed as an invalid turn.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

try:
    import datasets
    import trl  # noqa: F401 (the adapter is for trl.GRPOTrainer: fail here, not mid-training)
    from trl.chat_template_utils import add_response_schema
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "algorithms.trl_env needs TRL and datasets: pip install 'research-gym[trl]' "
        f"(missing: {error.name})"
    ) from error

from research_env import MultiHopSearchEnv
from research_env.data.types import QASample
from research_env.episode import Episode, TurnOutcome
from research_env.protocol import ANSWER_CLOSE, ANSWER_OPEN, SEARCH_CLOSE, SEARCH_OPEN, parse_turn
from research_env.retrievers.base import SearchHit, as_hits
from research_env.termination import Termination

# The protocol of research_env.templates, told for a tool-calling model: searches go
# through the ``search`` tool (its schema is in the system turn the chat template renders).
TOOL_INSTRUCTIONS = (
    "Answer the question by reasoning step by step and searching a document collection. "
    "Think inside <think> and </think>. To search, call the search tool with a short query; "
    "the documents found come back inside <{tag}> and </{tag}>. Search as often as you "
    "need, one query at a time. When you know the answer, write it inside <answer> and "
    "</answer>, with the final short answer in \\boxed{{}}, for example "
    "<answer>The answer is \\boxed{{Paris}}</answer>."
)

# A response parser (transformers' new-style ``response_template``) for ChatML templates
# with Qwen2.5-style ``<tool_call>{json}</tool_call>`` calls. Unlike TRL's Qwen3 one it
# leaves ``<think>`` in the content: the replay needs the text as the model wrote it.
CHATML_TOOL_RESPONSE_TEMPLATE: dict[str, Any] = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "tool_calls": {
            "open": "<tool_call>",
            "close_pattern": r"</tool_call>\s*",
            "repeats": True,
            "content": "json",
            "transform": {"type": "function", "function": "{content}"},
        },
        "content": {"close_pattern": r"<\|im_end\|>\s*", "content": "text"},
    },
}

_PROTOCOL_TAGS = (SEARCH_OPEN, SEARCH_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)


@dataclasses.dataclass(frozen=True)
class _SearchCall:
    """One ``search`` tool call that succeeded: what the replay needs to re-enact it."""

    query: str
    observation: str
    hits: tuple[SearchHit, ...]


class SearchToolEnv:
    """One rollout's environment, as TRL's ``environment_factory`` expects it.

    TRL exposes every public method except ``reset`` (and ``get_reward``) as a tool, so
    this class has exactly one: :meth:`search`. It keeps the calls it answered; the
    reward function replays them with the rollout's messages (see the module docstring).

    Attributes:
        outcome: the replayed episode's final :class:`~research_env.episode.TurnOutcome`
            (reward and final ``info``: ``em``, ``f1``, ``format_valid``, ...), set when
            :func:`search_env_reward` scores the rollout; ``None`` before.
    """

    def __init__(self, env: MultiHopSearchEnv, samples_by_id: Mapping[str, QASample]) -> None:
        self._env = env
        self._samples_by_id = samples_by_id
        self._sample: QASample | None = None
        self._calls: list[_SearchCall] = []
        self.outcome: TurnOutcome | None = None

    def reset(self, **row: Any) -> None:
        """Start a rollout for the dataset row TRL passes (its columns as keywords).

        Returns None: the question is already in the row's prompt.
        """
        question_id = row.get("question_id")
        if not isinstance(question_id, str) or question_id not in self._samples_by_id:
            raise ValueError(
                f"dataset row has question_id {question_id!r}, which is not a question of this "
                "env's split; build the train dataset with TRLSearchTask.dataset() so every "
                "row carries the id of one of the env's questions"
            )
        self._sample = self._samples_by_id[question_id]
        self._calls = []
        self.outcome = None

    def search(self, query: str) -> str:
        """Search the document collection for passages relevant to a query.

        Args:
            query: a short search query, such as a name or a fact to look up.

        Returns:
            The top documents found, numbered, inside a result block.
        """
        if self._sample is None:
            raise RuntimeError("search() before reset(): TRL resets every rollout first")
        if not isinstance(query, str) or any(tag in query for tag in _PROTOCOL_TAGS):
            # TRL returns the error to the model as the tool's answer; the replay scores
            # the call as an invalid turn.
            raise ValueError("the query must be plain text, without <search> or <answer> tags")
        # Normalize exactly as an episode normalizes a <search> turn (whitespace, length).
        normalized = parse_turn(SEARCH_OPEN + query + SEARCH_CLOSE).query or ""
        top_k = self._env.rules.top_k
        retriever = self._env.retriever
        hits = tuple(as_hits(retriever.search([normalized], top_k), retriever)[0][:top_k])
        observation = self._env.template.format_documents(hits)
        self._calls.append(_SearchCall(normalized, observation, hits))
        return observation

    def _score(self, completion: Sequence[Mapping[str, Any]]) -> TurnOutcome:
        """Replay the rollout's messages as an episode and return how it ended."""
        if self._sample is None:
            raise RuntimeError("a rollout is scored before reset(): TRL resets every rollout first")
        # No prefill: under TRL the model writes its own <think>.
        template = dataclasses.replace(self._env.template, prefill="")
        episode = Episode(self._sample, template, self._env.rules, self._env.reward_fn)
        calls = iter(self._calls)
        pending = next(calls, None)
        messages = list(completion)
        for position, message in enumerate(messages):
            if message.get("role") != "assistant":
                continue
            text = _assistant_text(message)
            tool_calls = message.get("tool_calls") or []
            if not tool_calls:
                if parse_turn(text).kind != "answer":
                    # TRL ends a rollout at a message without tool calls: the model stopped.
                    return self._finish(episode.end_early(Termination.EOS))
                episode.begin_turn(text)
                return self._finish(episode.end_turn())
            results = _tool_results_after(messages, position)
            if len(results) < len(tool_calls):
                # TRL dropped these results (token budget) or stopped calling tools.
                return self._finish(episode.end_early(Termination.TOKEN_BUDGET))
            for index, (call, result) in enumerate(zip(tool_calls, results, strict=False)):
                turn_text = text if index == 0 else ""
                query = _search_query(call)
                answered = (
                    pending is not None and query is not None and result == pending.observation
                )
                if answered and pending is not None:
                    episode.begin_turn(turn_text + SEARCH_OPEN + pending.query + SEARCH_CLOSE)
                    outcome = episode.end_turn(pending.hits)
                    pending = next(calls, None)
                else:
                    episode.begin_turn(turn_text)  # a failed call: an invalid turn
                    outcome = episode.end_turn()
                if outcome.done:
                    return self._finish(outcome)
        return self._finish(episode.end_early(Termination.TOKEN_BUDGET))

    def _finish(self, outcome: TurnOutcome) -> TurnOutcome:
        self.outcome = outcome
        return outcome


def _assistant_text(message: Mapping[str, Any]) -> str:
    """The assistant's text as written: parsers that split off the reasoning (TRL's Qwen3
    one) get it back inside its think tags."""
    content = message.get("content") or ""
    if not isinstance(content, str):  # content blocks
        content = "".join(part.get("text", "") for part in content if isinstance(part, Mapping))
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        content = f"<think>{reasoning}</think>" + content
    return content


def _tool_results_after(messages: Sequence[Mapping[str, Any]], position: int) -> list[str]:
    """Contents of the ``tool`` messages right after the message at ``position``."""
    results = []
    for message in messages[position + 1 :]:
        if message.get("role") != "tool":
            break
        results.append(str(message.get("content", "")))
    return results


def _search_query(call: Any) -> str | None:
    """The query of a ``search`` tool call, or None for any other call."""
    if not isinstance(call, Mapping):
        return None
    function = call.get("function", call)
    if not isinstance(function, Mapping) or function.get("name") != "search":
        return None
    arguments = function.get("arguments")
    query = arguments.get("query") if isinstance(arguments, Mapping) else None
    return query if isinstance(query, str) else None


def search_env_reward(
    completions: Sequence[Sequence[Mapping[str, Any]]],
    environments: Sequence[SearchToolEnv] | None = None,
    log_metric: Callable[[str, float], None] | None = None,
    **kwargs: Any,
) -> list[float]:
    """TRL reward function: each rollout's reward from our env's reward function.

    TRL calls it with the batch's ``completions`` (lists of chat messages) and, because
    the trainer was given an ``environment_factory``, the matching ``environments``. Also
    logs the batch means of ``env/em``, ``env/f1``, ``env/format_valid`` and
    ``env/searches`` through TRL's ``log_metric``.
    """
    if environments is None:
        raise ValueError(
            "search_env_reward needs the rollouts' environments: pass "
            "environment_factory=task.environment_factory to GRPOTrainer"
        )
    if len(environments) != len(completions):
        raise ValueError(
            f"{len(completions)} completions but {len(environments)} environments; TRL pairs "
            "them one to one"
        )
    outcomes = [env._score(c) for env, c in zip(environments, completions, strict=True)]
    if log_metric is not None and outcomes:
        for key in ("em", "f1", "format_valid", "searches"):
            values = [float(o.info.get(key, 0.0)) for o in outcomes]
            log_metric(f"env/{key}", sum(values) / len(values))
    return [o.reward for o in outcomes]


class TRLSearchTask:
    """Our multi-hop search env, packaged for ``trl.GRPOTrainer``.

    Args:
        env: the env whose dataset split, retriever, ``top_k``, ``max_turns``, rules,
            reward and document formatting the rollouts use: a
            :class:`~research_env.MultiHopSearchEnv`, or ``gym.make(...)``'s wrapper of one.
        instructions: the system prompt; ``{tag}`` becomes the template's result tag.

    Use::

        task = TRLSearchTask(gym.make("ReSearch-MultiHop-v0"))
        trainer = GRPOTrainer(model, reward_funcs=task.reward_funcs,
                              train_dataset=task.dataset(), processing_class=tokenizer,
                              environment_factory=task.environment_factory, args=config)
    """

    def __init__(self, env: Any, instructions: str = TOOL_INSTRUCTIONS) -> None:
        base = getattr(env, "unwrapped", env)
        if not isinstance(base, MultiHopSearchEnv):
            raise TypeError(
                "TRLSearchTask wraps a MultiHopSearchEnv (gym.make('ReSearch-MultiHop-v0', ...) "
                f"or the class itself), got {type(env).__name__}"
            )
        self.env = base
        self.instructions = instructions
        self.samples_by_id = {sample.id: sample for sample in base.samples}
        self.reward_funcs = [search_env_reward]
        # One search per tool-calling turn, then a final answer turn.
        self.max_tool_calling_iterations = base.rules.max_turns - 1

    def environment_factory(self) -> SearchToolEnv:
        """A fresh rollout environment; TRL calls this once per concurrent rollout."""
        return SearchToolEnv(self.env, self.samples_by_id)

    def messages(self, question: str) -> list[dict[str, str]]:
        """The chat prompt for one question: the tool-use instructions, then the question."""
        template = self.env.template
        return [
            {"role": "system", "content": self.instructions.format(tag=template.result_tag)},
            {"role": "user", "content": template.question_format.format(question=question)},
        ]

    def dataset(self, limit: int | None = None) -> datasets.Dataset:
        """TRL's train dataset: a conversational ``prompt`` and the ``question_id`` that
        :meth:`SearchToolEnv.reset` maps back to the question (and its golden answers,
        which stay out of the dataset). ``limit`` keeps the first questions of the split."""
        samples = self.env.samples if limit is None else self.env.samples[:limit]
        if not samples:
            raise ValueError(
                "the env's split has no questions (or limit is 0): nothing to train on"
            )
        return datasets.Dataset.from_list(
            [{"prompt": self.messages(s.question), "question_id": s.id} for s in samples]
        )


# Shipped with the package: a ChatML chat template with Qwen2.5-style tool calls.
TOOL_CHAT_TEMPLATE = Path(__file__).parent / "chat_templates" / "chatml_tools.jinja"


def tool_chat_template() -> str:
    """The text of :data:`TOOL_CHAT_TEMPLATE` (``tokenizer.chat_template = ...``)."""
    return TOOL_CHAT_TEMPLATE.read_text(encoding="utf-8")


def ensure_tool_parser(tokenizer: Any) -> Any:
    """Give ``tokenizer`` a response parser for tool calls, as TRL needs one.

    Keeps one already set; else TRL's for the chat templates it knows (Qwen, Llama 3.1,
    ...); else :data:`CHATML_TOOL_RESPONSE_TEMPLATE` for a ChatML template with
    ``<tool_call>`` blocks. A ChatML template without tool calls (SmolLM2's, so the
    offline models) first gets the shipped :data:`TOOL_CHAT_TEMPLATE`, with a note. Raises
    with the fix when none fits. Returns the tokenizer.
    """
    if getattr(tokenizer, "response_template", None) or getattr(tokenizer, "response_schema", None):
        return tokenizer
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and "<|im_start|>" in template and "<tool_call>" not in template:
        # A ChatML template without tools (SmolLM2's): ours adds them in the same format.
        tokenizer.chat_template = template = tool_chat_template()
        print("ensure_tool_parser: installed the ChatML tool-calling chat template "
              f"({TOOL_CHAT_TEMPLATE.name})", file=sys.stderr)  # fmt: skip
    if not isinstance(template, str) or "<tool_call>" not in template:
        raise ValueError(
            "the tokenizer's chat template does not render tool calls (no <tool_call> in it); "
            "set tokenizer.chat_template to a tool-calling template (Qwen2.5/Qwen3 style)"
        )
    try:
        return add_response_schema(tokenizer)
    except ValueError:
        if "<|im_start|>" not in template:
            raise ValueError(
                "TRL has no response parser for this chat template; set "
                "tokenizer.response_template (see transformers' chat_response_parsing docs)"
            ) from None
    tokenizer.response_template = CHATML_TOOL_RESPONSE_TEMPLATE
    return tokenizer
