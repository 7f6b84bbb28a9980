"""One episode's state machine, independent of Gymnasium and of the retriever.

An episode turns policy text into at most one retrieval request per turn and the
retrieved hits into the next observation. Splitting a turn into :meth:`Episode.begin_turn`
(which returns the query, if any) and :meth:`Episode.end_turn` (which takes the hits) is
what lets many episodes share one batched retriever call
(:class:`research_env.vector.SearchVectorEnv`).

``begin_turn`` changes nothing the episode reports: the turn is recorded by ``end_turn``,
once its search has succeeded. So a search that raises (a retrieval server down) leaves
the episode exactly as it was, and the same step can simply be retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from research_env.actions import CORRECTION, Observation
from research_env.data.types import QASample
from research_env.protocol import FORMAT_VIOLATIONS, FormatMode, Turn, clean_text
from research_env.retrievers.base import SearchHit
from research_env.rewards import EpisodeRecord, RewardFn, supporting_recall
from research_env.shaping import SearchShaping, query_key
from research_env.templates import PromptTemplate
from research_env.termination import EPISODE_ENDS, TRUNCATING, Termination
from research_env.tool_calls import TOOL_CALL_VIOLATIONS

InvalidTurnPolicy = Literal["correct", "terminate"]

__all__ = ["CORRECTION", "INVALID_REASONS", "Episode", "EpisodeRules", "TurnOutcome"]

# ``info["invalid_reason"]`` codes and their sentences (``info["invalid_detail"]``): the
# protocol's and the tool-call format's, plus the ones only an episode can tell. Where
# both formats use a code (``no_answer``), the template's own sentence is the one reported.
INVALID_REASONS: dict[str, str] = {
    **TOOL_CALL_VIOLATIONS,
    **FORMAT_VIOLATIONS,
    "repeated_prefill": (
        "the first turn repeats the prefilled text the prompt already ends with, so the "
        "think tags do not pair (continue after the prefill, do not open it again)"
    ),
    "invalid_turn": (
        "a turn had neither a complete <search> nor an <answer> (the env replied with a correction)"
    ),
    "conflicting_answers": "several <answer> blocks with different answers",
    "answered_without_search": "answered without searching (require_search=True)",
}


@dataclass(frozen=True)
class EpisodeRules:
    """How an episode judges turns. See :class:`research_env.MultiHopSearchEnv`."""

    max_turns: int = 5
    top_k: int = 3
    on_invalid: InvalidTurnPolicy = "correct"
    format_mode: FormatMode = "strict"
    search_cost: float = 0.0
    require_search: bool = False
    shaping: SearchShaping = field(default_factory=SearchShaping)
    # Words kept of each retrieved document (None: whole documents). The fingerprint
    # leaves a None rule out, so runs from before this rule keep their hashes.
    max_doc_words: int | None = None

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
        # Frozen: a mapping of weights becomes the typed config here, once.
        object.__setattr__(self, "shaping", SearchShaping.coerce(self.shaping))
        if self.max_doc_words is not None and (
            isinstance(self.max_doc_words, bool) or not isinstance(self.max_doc_words, int)
            or self.max_doc_words < 1
        ):  # fmt: skip
            raise ValueError(
                f"max_doc_words must be an integer >= 1 or None (whole documents), "
                f"got {self.max_doc_words!r}"
            )


@dataclass
class TurnOutcome:
    """What one turn (or an early end) gives back: Gymnasium's step tuple, typed.

    ``shaping`` is the part of ``reward`` that the turn's shaping terms paid
    (:mod:`research_env.shaping`; 0 when shaping is off), so a trainer can keep a turn's
    step reward apart from the answer's. When the episode ends, ``termination`` says why
    and ``answer_reward`` is the answer's own reward (``reward`` less the last turn's
    shaping): the typed form of ``info["termination"]`` and ``info["answer_reward"]``,
    which a trainer reads instead of the info dict.
    """

    observation: str
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any] = field(default_factory=dict)
    shaping: float = 0.0
    termination: Termination | None = None
    answer_reward: float = 0.0

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated

    def as_step(self) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """``(observation, reward, terminated, truncated, info)``, as ``Env.step`` returns."""
        return self.observation, self.reward, self.terminated, self.truncated, self.info


class Episode:
    """A question being played: the record so far and the turn begun, if any."""

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
        # The turn begun and not yet ended: its cleaned text and its parse.
        self._pending: tuple[str, Turn] | None = None
        # Why the first invalid turn was invalid (the episode's invalid_reason, if any).
        self._first_invalid: str | None = None
        # Shaping state: the normalized queries so far and each term's running total.
        self._queries: list[str] = []
        self.shaping_totals = dict.fromkeys(rules.shaping.active_terms, 0.0)

    @property
    def prompt(self) -> str:
        return self.template.render_text(self.sample.question)

    def begin_turn(self, text: Any) -> str | None:
        """Parse a policy turn; return the search query to run, or None.

        Nothing is recorded yet (see the module docstring): beginning another turn
        instead, e.g. retrying after a failed search, forgets this one.
        """
        if self.done:
            raise RuntimeError("the episode is over: call reset() before step()")
        text = clean_text(text) if isinstance(text, str) else ""
        turn = self.template.actions.parse(text)
        self._pending = (text, turn)
        return turn.query if turn.kind == "search" else None

    def pending_answer(self) -> str | None:
        """The answer of the turn begun last, when it answers (what the reward will score)."""
        if self._pending is None or self._pending[1].kind != "answer":
            return None
        return self._pending[1].answer

    def end_turn(self, hits: Sequence[SearchHit] | None = None) -> TurnOutcome:
        """Record the turn begun last, given the hits for its query (if it had one)."""
        if self._pending is None:
            raise RuntimeError("end_turn() without begin_turn()")
        (text, turn), self._pending = self._pending, None
        record = self.record
        record.turns.append(text)
        n_turns = len(record.turns)

        if turn.kind == "answer":
            record.prediction = turn.answer
            record.conflicting_answers = turn.conflicting_answers
            terms = self.rules.shaping.answer_terms(record.searches, self.sample.metadata)
            return self._finish(Termination.ANSWERED, self._tally(terms))

        info: dict[str, Any] = {}
        observation: Observation
        step_shaping = 0.0
        if turn.kind == "search":
            hits = list(hits or [])[: self.rules.top_k]
            observation = self.template.actions.search_result(
                self.template, hits, self.rules.max_doc_words
            )
            step_shaping = self._search_shaping(turn.query or "", hits)
            record.searches += 1
            record.retrieved_doc_ids.extend(h.document.id for h in hits)
            record.retrieved_texts.extend(h.document.contents for h in hits)
        else:
            reason = turn.reason or "invalid_turn"
            self._first_invalid = self._first_invalid or reason
            if self.rules.on_invalid == "terminate":
                return self._finish(Termination.INVALID_OUTPUT)
            observation = self.template.actions.correction(turn)
            info |= {"invalid_reason": reason, "invalid_detail": self._detail(reason)}
        record.observations.append(observation.text)
        if n_turns >= self.rules.max_turns:
            return self._finish(Termination.TURN_BUDGET, step_shaping)
        info["searches"] = record.searches
        if observation.message is not None:
            # For a trainer that renders the reply through a chat template.
            info["message"] = observation.message
        return TurnOutcome(observation.text, step_shaping, False, False, info, shaping=step_shaping)

    def _search_shaping(self, query: str, hits: Sequence[SearchHit]) -> float:
        """The shaping reward of a search turn (before its hits join the record)."""
        shaping = self.rules.shaping
        if not shaping.enabled:
            return 0.0
        terms = shaping.search_terms(
            query,
            [h.document.id for h in hits],
            self._queries,
            self.record.retrieved_doc_ids,
            self.sample.metadata,
        )
        self._queries.append(query_key(query))
        return self._tally(terms)

    def _tally(self, terms: dict[str, float]) -> float:
        """Add a turn's terms to the episode's totals; return their sum (the step reward)."""
        for name, value in terms.items():
            self.shaping_totals[name] = self.shaping_totals.get(name, 0.0) + value
        return sum(terms.values(), 0.0)

    def end_early(self, reason: Termination = Termination.TOKEN_BUDGET) -> TurnOutcome:
        """End the episode from outside, between turns: the trainer's token budget ran out
        (``TOKEN_BUDGET``, truncated) or the model emitted EOS (``EOS``, terminated).
        Scored by the same reward rules as any other ending."""
        if self.done:
            raise RuntimeError("the episode is already over")
        reason = Termination(reason)
        if reason not in EPISODE_ENDS:
            raise ValueError(
                f"{reason!s} is a turn end, not an episode end; use one of "
                f"{sorted(r.value for r in EPISODE_ENDS)}"
            )
        self._pending = None
        return self._finish(reason)

    def _finish(self, reason: Termination, step_shaping: float = 0.0) -> TurnOutcome:
        record = self.record
        self.done = True
        record.termination = reason.value
        # The prefill is part of the assistant's text even though the prompt carries it.
        response = self.template.prefill + record.response
        format_reason = self.template.actions.violation(
            record.turns, response, self.rules.format_mode, self.template.result_tag
        )
        violation = None
        if record.conflicting_answers:
            violation = "conflicting_answers"
        elif self.rules.require_search and record.searches == 0 and reason == Termination.ANSWERED:
            violation = "answered_without_search"
        record.format_valid = format_reason is None and violation is None
        invalid_reason = None
        if not record.format_valid:
            # Conflicting answers are also several answer blocks: name the specific fault.
            invalid_reason = (
                violation
                if violation == "conflicting_answers"
                else self._explain(format_reason) or violation
            )
        reward = float(self.reward_fn(record)) - self.rules.search_cost * record.searches
        truncated = reason in TRUNCATING
        info = self.final_info(violation, invalid_reason)
        if not self.rules.shaping.enabled:
            return TurnOutcome(
                "", reward, not truncated, truncated, info, termination=reason, answer_reward=reward
            )
        # The step reward carries the last turn's shaping; info keeps the answer's own.
        info["answer_reward"] = reward
        info["shaping"] = dict(self.shaping_totals)
        return TurnOutcome(
            "", reward + step_shaping, not truncated, truncated, info, step_shaping, reason, reward
        )

    def _explain(self, format_reason: str | None) -> str | None:
        """The protocol's reason, made specific to this episode. The response holds the
        env's corrections too, whose tags would otherwise be blamed: an episode with a turn
        the env had to correct (or ended for it) is ``invalid_turn``, one that never
        answered is ``no_answer``. Think tags that do not pair because the first turn opened the
        template's prefill again are ``repeated_prefill`` (the prompt ends with it)."""
        if format_reason is None:
            return None
        record = self.record
        if self._first_invalid is not None:
            return self._first_invalid
        if record.prediction is None:
            return "no_answer"
        prefill = self.template.prefill.strip()
        if (
            format_reason in ("unclosed_think", "unopened_think")
            and prefill
            and self.record.turns
            and self.record.turns[0].lstrip().startswith(prefill)
        ):
            return "repeated_prefill"
        return format_reason

    def _detail(self, reason: str) -> str:
        """The sentence for an invalid-reason code: the template's format's, else the
        episode's."""
        return self.template.actions.violations.get(reason) or INVALID_REASONS.get(reason, reason)

    def final_info(
        self, violation: str | None = None, invalid_reason: str | None = None
    ) -> dict[str, Any]:
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
        if invalid_reason:
            info["invalid_reason"] = invalid_reason
            info["invalid_detail"] = self._detail(invalid_reason)
        recall = supporting_recall(self.sample.metadata, record.retrieved_doc_ids)
        if recall is not None:
            info["supporting_recall"] = recall
        for key in ("hops", "type"):
            if key in self.sample.metadata:
                info[key] = self.sample.metadata[key]
        return info
