"""One episode's state machine, independent of Gymnasium and of the retriever.

An episode turns policy text into at most one retrieval request per turn and the
retrieved hits into the next observation. Splitting a turn into :meth:`Episode.begin_turn`
(which returns the query, if any) and :meth:`Episode.end_turn` (which takes the hits) is
what lets many episodes share one batched retriever call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from research_env.data.types import QASample
from research_env.protocol import FormatMode, clean_text, is_valid_format, parse_turn
from research_env.retrievers.base import SearchHit
from research_env.rewards import EpisodeRecord, RewardFn, supporting_recall
from research_env.templates import PromptTemplate

InvalidTurnPolicy = Literal["correct", "terminate"]

CORRECTION = (
    "\nThat turn had neither a complete <search>query</search> nor an "
    "<answer>...</answer>. Search with <search>query</search> or give the final answer "
    "with <answer>...</answer>.\n"
)


@dataclass(frozen=True)
class EpisodeRules:
    """How an episode judges turns. See :class:`research_env.MultiHopSearchEnv`."""

    max_turns: int = 5
    top_k: int = 3
    on_invalid: InvalidTurnPolicy = "correct"
    format_mode: FormatMode = "strict"
    search_cost: float = 0.0
    require_search: bool = False

    def __post_init__(self) -> None:
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {self.max_turns}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.on_invalid not in ("correct", "terminate"):
            raise ValueError(
                f"on_invalid must be 'correct' or 'terminate', got {self.on_invalid!r}"
            )
        if self.format_mode not in ("strict", "loose"):
            raise ValueError(f"format_mode must be 'strict' or 'loose', got {self.format_mode!r}")
        if self.search_cost < 0:
            raise ValueError(f"search_cost must be >= 0, got {self.search_cost}")


@dataclass
class TurnOutcome:
    observation: str
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any] = field(default_factory=dict)


class Episode:
    """A question being played: the record so far and the pending search, if any."""

    def __init__(
        self,
        sample: QASample,
        template: PromptTemplate,
        rules: EpisodeRules,
        reward_fn: RewardFn,
    ) -> None:
        self.sample = sample
        self.template = template
        self.rules = rules
        self.reward_fn = reward_fn
        self.record = EpisodeRecord(
            question=sample.question,
            golden_answers=sample.golden_answers,
            metadata=sample.metadata,
        )
        self.done = False
        self._pending_query: str | None = None
        self._pending_turn: Any = None

    @property
    def prompt(self) -> str:
        return self.template.render_text(self.sample.question)

    def begin_turn(self, text: Any) -> str | None:
        """Record a policy turn; return the search query to run, or None."""
        if self.done:
            raise RuntimeError("the episode is over: call reset() before step()")
        text = clean_text(text) if isinstance(text, str) else ""
        turn = parse_turn(text)
        self.record.turns.append(text)
        self._pending_turn = turn
        self._pending_query = turn.query if turn.kind == "search" else None
        return self._pending_query

    def end_turn(self, hits: Sequence[SearchHit] | None = None) -> TurnOutcome:
        """Finish the turn begun last, given the hits for its query (if it had one)."""
        turn, self._pending_turn = self._pending_turn, None
        if turn is None:
            raise RuntimeError("end_turn() without begin_turn()")
        record = self.record
        n_turns = len(record.turns)

        if turn.kind == "answer":
            record.prediction = turn.answer
            record.conflicting_answers = turn.conflicting_answers
            return self._finish("answered")

        if turn.kind == "search":
            hits = list(hits or [])[: self.rules.top_k]
            observation = self.template.format_documents(hits)
            record.searches += 1
            record.retrieved_doc_ids.extend(h.document.id for h in hits)
            record.retrieved_texts.extend(h.document.contents for h in hits)
        elif self.rules.on_invalid == "terminate":
            return self._finish("invalid_output")
        else:
            observation = CORRECTION
        record.observations.append(observation)
        if n_turns >= self.rules.max_turns:
            return self._finish("turn_budget", truncated=True)
        return TurnOutcome(observation, 0.0, False, False, {"searches": record.searches})

    def truncate(self, reason: str = "token_budget") -> TurnOutcome:
        """End the episode from outside (e.g. a trainer's token budget); same reward rules."""
        return self._finish(reason, truncated=True)

    def _finish(self, reason: str, truncated: bool = False) -> TurnOutcome:
        record = self.record
        self.done = True
        record.termination = reason
        # The prefill is part of the assistant's text even though the prompt carries it.
        response = self.template.prefill + record.response
        valid = is_valid_format(response, self.rules.format_mode, self.template.result_tag)
        violation = None
        if record.conflicting_answers:
            violation = "conflicting_answers"
        elif self.rules.require_search and record.searches == 0 and reason == "answered":
            violation = "answered_without_search"
        record.format_valid = valid and violation is None
        reward = float(self.reward_fn(record)) - self.rules.search_cost * record.searches
        terminated = not truncated
        return TurnOutcome("", reward, terminated, truncated, self.final_info(violation))

    def final_info(self, violation: str | None = None) -> dict[str, Any]:
        record = self.record
        info: dict[str, Any] = {
            "question_id": self.sample.id,
            "prediction": record.prediction,
            "golden_answers": list(record.golden_answers),
            "em": record.em,
            "f1": record.f1,
            "format_valid": record.format_valid,
            "searches": record.searches,
            "turns": len(record.turns),
            "retrieved_doc_ids": list(record.retrieved_doc_ids),
            "termination": record.termination,
        }
        if violation:
            info["violation"] = violation
        recall = supporting_recall(self.sample.metadata, record.retrieved_doc_ids)
        if recall is not None:
            info["supporting_recall"] = recall
        for key in ("hops", "type"):
            if key in self.sample.metadata:
                info[key] = self.sample.metadata[key]
        return info
