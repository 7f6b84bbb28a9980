"""``ReSearch-MultiHop-Structured-v0``: the same search episodes with a discrete action space.

A language model is slow to train; an ablation of the reward, ``top_k``, ``max_turns`` or
the retriever should take minutes. This env keeps the episode (questions, retriever,
protocol, reward) of ``ReSearch-MultiHop-v0`` and swaps the text policy for a choice among
a few *candidate operations*, so a small Stable-Baselines3 network can play it on a CPU.

Every action becomes a synthesized text turn (``<search>q</search>`` or
``<answer>\\boxed{a}</answer>``) that is played through an ordinary
:class:`~research_env.env.MultiHopSearchEnv`, so parsing, retrieval, format checks and
rewards are the very code the LLM env runs.

Candidates are built from the question and the retrieved documents only (capitalised
entity spans, four-digit years, yes / no); they never read the golden answers or the
sample's metadata (``tests/test_structured.py`` shuffles the golds to prove it).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from research_env.env import MultiHopSearchEnv
from research_env.rewards import normalize_answer
from research_env.termination import Termination

# A capitalised word, optionally chained to the next by a lowercase connector ("Tides of Vask").
_SPAN_RE = re.compile(
    r"\b[A-Z][\w'-]*(?:\s+(?:(?:of|the|in|for|from|de|van|von)\s+)*[A-Z][\w'-]*)*"
)
_YEAR_RE = re.compile(r"\b(1\d{3}|20\d{2})\b")
# Words that start a sentence or a question rather than a name.
_NOT_NAMES_TEXT = (
    "who what which where when why how in is are was were do does did it its the a an he "
    "she his her they their born doc title yes no for from of to on at by and or critics "
    "settlement"
)
_NOT_NAMES = frozenset(_NOT_NAMES_TEXT.split())
# Question openers, one feature each (the last slot is "anything else").
_OPENERS = ("who", "what", "which", "where", "when", "in", "is", "are", "was", "were", "do", "did")
_YES_NO = ("yes", "no")


@dataclass(frozen=True)
class CandidateSet:
    """The operations on offer at one step: ``queries[i]`` is action ``i``, ``answers[j]``
    is action ``len(queries) + j``, and the last action stops without answering.

    ``query_features`` / ``answer_features`` hold, per slot, the numbers the observation
    shows (see :class:`StructuredSearchEnv`, Observation Space)."""

    queries: tuple[str, ...]
    answers: tuple[str, ...]
    query_features: np.ndarray
    answer_features: np.ndarray


def entity_spans(text: str) -> list[str]:
    """Capitalised name spans of ``text`` in order, leading stop words dropped, deduplicated."""
    spans: list[str] = []
    seen: set[str] = set()
    for match in _SPAN_RE.finditer(text):
        words = match.group(0).split()
        while words and words[0].lower() in _NOT_NAMES:
            words = words[1:]
        while words and words[-1].lower() in _NOT_NAMES:
            words = words[:-1]
        if not words:
            continue
        span = " ".join(words)
        key = span.lower()
        if key not in seen:
            seen.add(key)
            spans.append(span)
    return spans


def years(text: str) -> list[str]:
    return list(dict.fromkeys(_YEAR_RE.findall(text)))


def build_candidates(
    question: str,
    last_documents: Sequence[str],
    searched: Sequence[str],
    n_queries: int,
    n_answers: int,
) -> CandidateSet:
    """The candidate queries and answers for a state. Reads nothing but its arguments: the
    question, the documents the last search returned (best first) and the queries so far.

    Queries: the question itself, then entity spans of the last documents (best document
    first), then the question's own entity spans; spans already searched are left out.
    Answers: yes, no, the question's entity spans (a comparison answers with one of them),
    then spans and years of the last documents. Empty slots repeat the question (queries)
    or hold ``"unknown"`` (answers), flagged invalid in the features.
    """
    done = {normalize_answer(q) for q in searched}
    question_spans = entity_spans(question)
    doc_spans = [entity_spans(d) + years(d) for d in last_documents]

    query_pool: list[tuple[str, list[float]]] = [
        (question, [1.0, float(normalize_answer(question) in done), 0.0, 1.0, 0.0])
    ]
    seen_q = {normalize_answer(question)}
    for rank, spans in enumerate(doc_spans):
        for span in spans:
            key = normalize_answer(span)
            if key in done or key in seen_q or _YEAR_RE.fullmatch(span):
                continue
            seen_q.add(key)
            query_pool.append((span, [1.0, 0.0, 1.0, 0.0, float(rank == 0)]))
    for span in question_spans:
        key = normalize_answer(span)
        if key in done or key in seen_q:
            continue
        seen_q.add(key)
        query_pool.append((span, [1.0, 0.0, 0.0, 1.0, 0.0]))
    query_pool = query_pool[:n_queries]
    while len(query_pool) < n_queries:
        query_pool.append((question, [0.0, 0.0, 0.0, 0.0, 0.0]))

    norm_docs = [normalize_answer(d) for d in last_documents]

    def answer_features(span: str, from_question: bool, valid: bool = True) -> list[float]:
        key = normalize_answer(span)
        hits = sum(key in d for d in norm_docs) if key else 0
        return [
            float(valid),
            float(key in _YES_NO),
            float(from_question),
            float(bool(_YEAR_RE.fullmatch(span))),
            float(bool(norm_docs) and key in norm_docs[0]),
            min(hits, 3) / 3.0,
            float(key in done),
        ]

    answer_pool: list[tuple[str, list[float]]] = [
        (word, answer_features(word, False)) for word in _YES_NO
    ]
    seen_a = set(_YES_NO)
    for span in question_spans[:2]:
        seen_a.add(normalize_answer(span))
        answer_pool.append((span, answer_features(span, True)))
    fresh = [s for spans in doc_spans for s in spans]
    # Years and spans not searched yet first: the last hop's answer is new information.
    fresh.sort(key=lambda s: normalize_answer(s) in done)
    for span in fresh:
        key = normalize_answer(span)
        if key in seen_a:
            continue
        seen_a.add(key)
        answer_pool.append((span, answer_features(span, False)))
    answer_pool = answer_pool[:n_answers]
    while len(answer_pool) < n_answers:
        answer_pool.append(("unknown", answer_features("unknown", False, valid=False)))
    return CandidateSet(
        queries=tuple(q for q, _ in query_pool),
        answers=tuple(a for a, _ in answer_pool),
        query_features=np.asarray([f for _, f in query_pool], dtype=np.float32),
        answer_features=np.asarray([f for _, f in answer_pool], dtype=np.float32),
    )


def hashed_bag_of_words(text: str, dim: int) -> np.ndarray:
    """Counts of ``text``'s normalized words hashed into ``dim`` buckets (crc32, so the
    same in every process), each clipped to 3 and scaled to [0, 1]."""
    out = np.zeros(dim, dtype=np.float32)
    for word in normalize_answer(text).split():
        out[zlib.crc32(word.encode("utf-8")) % dim] += 1.0
    return np.minimum(out, 3.0) / 3.0


class StructuredSearchEnv(gym.Env[np.ndarray, np.int64]):
    """Multi-hop search episodes with discrete candidate actions, for fast RL ablations.

    ## Description
    The episodes of ``ReSearch-MultiHop-v0`` (same dataset, retriever, rules and reward)
    with the language model replaced by a choice among a few candidate operations. Each
    action is written as a text turn and played through an inner
    :class:`~research_env.env.MultiHopSearchEnv` (``env.text_env``): ``<search>q</search>``
    for a search, ``<answer>The answer is \\boxed{a}</answer>`` for an answer. The first
    turn closes the template's prefilled ``<think>``, if any, so the synthesized response
    is well formed under the strict ReSearch format. Candidates (see
    :func:`build_candidates`) come from the question and the last retrieved documents,
    never from the golden answers.

    ## Action Space
    ``Discrete(n_queries + n_answers + 1)``: action ``i < n_queries`` searches candidate
    query ``i``; action ``n_queries + j`` answers candidate answer ``j``; the last action
    stops without answering (scored like an LLM that ends its response: ``eos``).
    ``env.candidates`` lists the current candidates; ``describe_action(a)`` says in words.
    An action is a Python ``int`` or a NumPy integer (a scalar or a 0-d array); anything
    else (a float such as 2.7 or NaN, a bool, a string, None, an array with elements) or
    an integer outside the space raises one ``ValueError`` saying what was given.

    ## Observation Space
    ``Box(0, 1, (D,), float32)``, the concatenation of: hashed bag-of-words of the question
    (``hash_dim``), of the last query (``hash_dim // 2``) and of the last retrieved documents
    (``hash_dim``); the question's opening word (one-hot over who / what / which / where /
    when / in / is / are / was / were / do / did / other); turn counters (turns used and
    searches used over ``max_turns``, "one turn left"); per candidate query ``[valid,
    already searched, from the documents, from the question, from the best document]``;
    per candidate answer ``[valid, yes/no, from the question, a year, in the best document,
    share of documents containing it, already searched]``.

    ## Rewards
    Those of the text env, unchanged: 0 until the end, then the reward function (``reward``,
    default ``research``) minus ``search_cost`` per search.

    ## Starting State
    As the text env: a seeded uniform draw of a question, or ``options={"index": i}`` /
    ``{"question_id": id}``.

    ## Episode End
    Terminated on an answer or a stop; truncated when ``max_turns`` turns pass without an
    answer. The final ``info`` is the text env's (``em``, ``f1``, ``prediction``,
    ``searches``, ``termination``, ...).

    ## Arguments
    - ``n_queries=4``, ``n_answers=6``: candidate slots.
    - ``hash_dim=64``: buckets of the question's and the documents' bag of words.
    - ``**env_kwargs``: :class:`~research_env.env.MultiHopSearchEnv` arguments (``dataset``,
      ``split``, ``retriever`` -- ``bm25``, ``dense``, ``hybrid``, ``empty``, ``random`` --,
      ``top_k``, ``max_turns``, ``reward``, ...).

    ## Version History
    - v0: initial release.
    """

    metadata = {"render_modes": ["human", "ansi"]}  # noqa: RUF012 (Gymnasium convention)

    def __init__(
        self,
        n_queries: int = 4,
        n_answers: int = 6,
        hash_dim: int = 64,
        **env_kwargs: Any,
    ) -> None:
        if n_queries < 1 or n_answers < 1 or hash_dim < 2:
            raise ValueError("n_queries and n_answers must be >= 1 and hash_dim >= 2")
        self.text_env = MultiHopSearchEnv(**env_kwargs)
        self.render_mode = self.text_env.render_mode
        self.n_queries, self.n_answers, self.hash_dim = n_queries, n_answers, hash_dim
        self.action_space = gym.spaces.Discrete(n_queries + n_answers + 1)
        size = hash_dim * 2 + hash_dim // 2 + len(_OPENERS) + 1 + 3 + n_queries * 5 + n_answers * 7
        self.observation_space = gym.spaces.Box(0.0, 1.0, (size,), dtype=np.float32)
        self.candidates: CandidateSet | None = None
        self._question = ""
        self._searched: list[str] = []
        self._last_documents: list[str] = []
        self._question_features = np.zeros(0, dtype=np.float32)

    @property
    def stop_action(self) -> int:
        return self.n_queries + self.n_answers

    # -- Gymnasium API -------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        _, info = self.text_env.reset(seed=seed, options=options)
        self._question = info["question"]
        self._searched = []
        self._last_documents = []
        opener = np.zeros(len(_OPENERS) + 1, dtype=np.float32)
        first = normalize_answer(self._question).split()[:1]
        opener[_OPENERS.index(first[0]) if first and first[0] in _OPENERS else -1] = 1.0
        self._question_features = np.concatenate(
            [hashed_bag_of_words(self._question, self.hash_dim), opener]
        )
        self._refresh()
        return self._observation(), {
            "index": info["index"],
            "question_id": info["question_id"],
            "question": self._question,
        }

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        episode = self.text_env.episode
        if episode is None or episode.done or self.candidates is None:
            raise RuntimeError("call reset() before step(); the episode is over or never began")
        a = self._action_index(action)
        if a == self.stop_action:
            _, reward, terminated, truncated, info = self.text_env.end_early(Termination.EOS)
        else:
            n_texts = len(episode.record.retrieved_texts)
            _, reward, terminated, truncated, info = self.text_env.step(self.turn_text(a))
            if a < self.n_queries:
                self._searched.append(self.candidates.queries[a])
                self._last_documents = episode.record.retrieved_texts[n_texts:]
        if not (terminated or truncated):
            self._refresh()
        return self._observation(), float(reward), terminated, truncated, info

    def render(self) -> str | None:
        return self.text_env.render()

    def close(self) -> None:
        self.text_env.close()

    # -- candidates and features ----------------------------------------------------

    def _action_index(self, action: Any) -> int:
        """``action`` as an index of the action space, or the one documented ValueError."""
        integral = (isinstance(action, int) and not isinstance(action, bool)) or (
            isinstance(action, (np.integer, np.ndarray))
            and np.issubdtype(action.dtype, np.integer)
            and action.shape == ()
        )
        if not integral or not 0 <= int(action) <= self.stop_action:
            kind = type(action).__name__
            raise ValueError(
                f"action {action!r} ({kind}) is not in {self.action_space}: an action is an "
                f"integer from 0 to {self.stop_action} (a Python int or a NumPy integer)"
            )
        return int(action)

    def turn_text(self, action: int) -> str:
        """The text turn an action stands for (searches and answers; not the stop)."""
        assert self.candidates is not None and self.text_env.episode is not None
        if action < self.n_queries:
            body = f"<search>{self.candidates.queries[action]}</search>"
        else:
            answer = self.candidates.answers[action - self.n_queries]
            body = f"<answer>The answer is \\boxed{{{answer}}}</answer>"
        first = not self.text_env.episode.record.turns
        if first and self.text_env.template.prefill.endswith("<think>"):
            body = "I will use the candidate operation.</think>\n" + body
        return body

    def describe_action(self, action: int) -> str:
        """``'search: ...'``, ``'answer: ...'`` or ``'stop'``, for the current candidates."""
        assert self.candidates is not None
        if action < self.n_queries:
            return f"search: {self.candidates.queries[action]}"
        if action < self.stop_action:
            return f"answer: {self.candidates.answers[action - self.n_queries]}"
        return "stop"

    def _refresh(self) -> None:
        self.candidates = build_candidates(
            self._question, self._last_documents, self._searched, self.n_queries, self.n_answers
        )

    def _observation(self) -> np.ndarray:
        assert self.candidates is not None and self.text_env.episode is not None
        record = self.text_env.episode.record
        max_turns = self.text_env.rules.max_turns
        counters = np.array(
            [
                min(len(record.turns) / max_turns, 1.0),
                min(record.searches / max_turns, 1.0),
                float(max_turns - len(record.turns) == 1),
            ],
            dtype=np.float32,
        )
        last_query = self._searched[-1] if self._searched else ""
        return np.concatenate(
            [
                self._question_features,
                hashed_bag_of_words(last_query, self.hash_dim // 2),
                hashed_bag_of_words(" ".join(self._last_documents), self.hash_dim),
                counters,
                self.candidates.query_features.ravel(),
                self.candidates.answer_features.ravel(),
            ]
        ).astype(np.float32)
