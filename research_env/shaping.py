"""Step-level search rewards: optional shaping terms the env pays per turn.

An answer reward pays once, at the end, and says nothing about which search helped. The
terms here (after StepSearch's information gain and redundancy penalty, and the
no-search penalty of R1-Searcher and torchtitan's Search-R1 env) score each search turn
as it happens, so a trainer can credit an early good search even when the final answer
is wrong (the ``grpo`` advantage estimator with ``credit: turn``).

Every weight is a non-negative *size*: a gain is added, a penalty subtracted. All of them
0 (the default) is "off", and the env then behaves exactly as it does without shaping:
the same rewards and the same ``info``.

=======================  ===================================================================
``retrieval_gain``       + weight for each of the question's supporting documents that a
                         search returns for the first time in the episode (its top-k hits;
                         questions without ``supporting_doc_ids`` never earn it)
``redundant_query``      - weight on a search whose query, normalized (lower case, no
                         punctuation or articles, squashed spaces), was already issued in
                         the episode: the same question asked twice retrieves nothing new
``no_search_multihop``   - weight on the answer turn of a question with ``hops >= 2`` in its
                         metadata when the episode made no search: a multi-hop answer
                         given from memory is a guess (questions without ``hops`` are
                         never penalized)
=======================  ===================================================================

A search turn's Gymnasium step reward is its terms' sum; the answer turn's is the answer
reward plus its terms. The final ``info`` then keeps the answer's own reward apart
(``answer_reward``; ``em``/``f1`` are untouched) and ``shaping``, each term's total over
the episode.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from research_env.rewards import normalize_answer

TERMS = ("retrieval_gain", "redundant_query", "no_search_multihop")


@dataclass(frozen=True)
class SearchShaping:
    """The weights of the shaping terms (see the module docstring); all 0 = off.

    Attributes:
        retrieval_gain: paid per supporting document a search retrieves first.
        redundant_query: subtracted from a search that repeats an earlier query.
        no_search_multihop: subtracted from answering a multi-hop question unsearched.
    """

    retrieval_gain: float = 0.0
    redundant_query: float = 0.0
    no_search_multihop: float = 0.0

    def __post_init__(self) -> None:
        for name in TERMS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"shaping.{name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"shaping.{name} must be a finite number >= 0, got {value}: give the "
                    "size of the term (a gain is added, a penalty subtracted); 0 turns it off"
                )

    @classmethod
    def coerce(cls, value: SearchShaping | Mapping[str, Any] | None) -> SearchShaping:
        """A ``SearchShaping`` from itself, a mapping of weights (``{"redundant_query":
        0.1}``) or ``None`` (off); an unknown key is an error naming the valid ones."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(
                f"shaping must be a mapping of term weights or a SearchShaping, got {value!r}"
            )
        unknown = sorted(set(value) - set(TERMS))
        if unknown:
            raise ValueError(f"unknown shaping term(s) {unknown}; valid terms: {list(TERMS)}")
        return cls(**value)

    @property
    def active_terms(self) -> tuple[str, ...]:
        """The names of the terms switched on (weight > 0)."""
        return tuple(f.name for f in fields(self) if getattr(self, f.name) != 0)

    @property
    def enabled(self) -> bool:
        return bool(self.active_terms)

    def search_terms(
        self,
        query: str,
        hit_ids: Iterable[str],
        earlier_queries: Iterable[str],
        seen_ids: Iterable[str],
        metadata: Mapping[str, Any],
    ) -> dict[str, float]:
        """The terms of one search turn (only those switched on), given the episode's
        earlier normalized queries and earlier retrieved document ids."""
        terms: dict[str, float] = {}
        if self.retrieval_gain:
            supporting = set(metadata.get("supporting_doc_ids") or ())
            new = (set(hit_ids) & supporting) - set(seen_ids)
            terms["retrieval_gain"] = self.retrieval_gain * len(new)
        if self.redundant_query:
            repeated = query_key(query) in set(earlier_queries)
            terms["redundant_query"] = -self.redundant_query if repeated else 0.0
        return terms

    def answer_terms(self, searches: int, metadata: Mapping[str, Any]) -> dict[str, float]:
        """The terms of the answer turn (only those switched on)."""
        terms: dict[str, float] = {}
        if self.no_search_multihop:
            hops = metadata.get("hops")
            multihop = isinstance(hops, int) and not isinstance(hops, bool) and hops >= 2
            terms["no_search_multihop"] = (
                -self.no_search_multihop if multihop and searches == 0 else 0.0
            )
        return terms


def query_key(query: str) -> str:
    """The form in which two queries count as the same (SQuAD answer normalization)."""
    return normalize_answer(query)
