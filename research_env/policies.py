"""Scripted policies: baselines, test drivers and demonstrations for warm starts.

A scripted policy looks at the unwrapped env's current episode (question, metadata,
record so far) and writes the next turn as text, exactly as a language model would.

- :class:`OraclePolicy` follows the sample's decomposition: it searches each
  sub-question in turn (filling in the answers of earlier hops), thinks aloud in short
  sentences written from the decomposition, and gives the golden answer only once the
  retrieved documents contain every fact it needs. Its success rate measures whether
  the retriever makes the questions solvable; its transcripts serve as demonstrations.
  Data without decompositions but with supporting facts (HotpotQA, 2WikiMultiHopQA) is
  played from those: it searches each supporting paragraph's title and answers once every
  supporting document was retrieved. Data with neither is refused (``ValueError``).

A policy accepts the env as ``gym.make`` returns it (wrapped) or the bare env, and writes
its turns in the env template's action format (tags, or tool calls for ``tool-call``).
- :class:`RandomPolicy` searches random words of the question or answers a random word.
"""

from __future__ import annotations

import random
import re
from typing import Any, Protocol

from research_env.env import MultiHopSearchEnv
from research_env.rewards import normalize_answer

_PLACEHOLDER_RE = re.compile(r"#(\d+)")
_LABELS = frozenset({"yes", "no"})


class ScriptedPolicy(Protocol):
    def act(self, env: Any) -> str: ...


def _bare(env: Any) -> MultiHopSearchEnv:
    """The :class:`MultiHopSearchEnv` under any Gymnasium wrappers."""
    bare = getattr(env, "unwrapped", env)
    if not isinstance(bare, MultiHopSearchEnv):
        raise TypeError(f"a scripted policy plays a MultiHopSearchEnv, got {type(bare).__name__}")
    if bare.episode is None:
        raise ValueError("reset the env first")
    return bare


def _open_think(env: MultiHopSearchEnv, thought: str) -> str:
    """Write a thought; the first turn continues the template's prefilled ``<think>``."""
    episode = env.episode
    assert episode is not None
    first = not episode.record.turns
    opener = "" if first and env.template.prefill.endswith("<think>") else "<think>"
    return f"{opener}{thought}</think>\n"


def fill_placeholders(question: str, answers: list[str]) -> str:
    """Replace ``#1``, ``#2``... with the answers of earlier hops."""

    def sub(match: re.Match[str]) -> str:
        i = int(match.group(1)) - 1
        return answers[i] if 0 <= i < len(answers) else match.group(0)

    return _PLACEHOLDER_RE.sub(sub, question)


class OraclePolicy:
    """Search each sub-question of the decomposition, then answer if the facts were found.

    Without a decomposition it plays from the supporting facts (one search per supporting
    title); a question with neither raises ``ValueError``: answering "unknown" would score
    it as a retrieval failure.
    """

    def act(self, env: Any) -> str:
        env = _bare(env)
        episode = env.episode
        assert episode is not None
        metadata = episode.sample.metadata
        steps: list[dict[str, Any]] = list(metadata.get("decomposition") or [])
        if not steps:
            return self._act_from_supporting_facts(env)
        answers = [str(s.get("answer", "")) for s in steps]
        hop = episode.record.searches
        turns_left = env.rules.max_turns - len(episode.record.turns)
        if hop < len(steps) and turns_left > 1:
            query = fill_placeholders(str(steps[hop]["question"]), answers)
            if hop == 0:
                thought = f"To answer this I first need to know: {query}"
            else:
                thought = f"So {answers[hop - 1]} is the answer to that. Next: {query}"
            return _open_think(env, thought) + env.template.actions.write_search(query)
        if self._facts_found(episode.record.retrieved_texts, answers):
            final = episode.sample.golden_answers[0]
            thought = f"The documents give every fact needed, so the answer is {final}."
        else:
            final = "unknown"
            thought = "The documents did not give me what I needed."
        return _open_think(env, thought) + env.template.actions.write_answer(final)

    def _act_from_supporting_facts(self, env: MultiHopSearchEnv) -> str:
        episode = env.episode
        assert episode is not None
        sample = episode.sample
        titles = supporting_titles(sample.metadata)
        if not titles:
            raise ValueError(
                f"the oracle cannot play question {sample.id!r}: its sample has neither a gold "
                "decomposition (metadata 'decomposition', as the synthetic data and MuSiQue "
                "have) nor supporting facts (metadata 'supporting_facts', as HotpotQA and "
                "2WikiMultiHopQA have)"
            )
        hop = episode.record.searches
        turns_left = env.rules.max_turns - len(episode.record.turns)
        if hop < len(titles) and turns_left > 1:
            query = titles[hop]
            thought = (
                f"To answer this I should read about {query}."
                if hop == 0
                else f"I also need to read about {query}."
            )
            return _open_think(env, thought) + env.template.actions.write_search(query)
        supporting = sample.metadata.get("supporting_doc_ids") or []
        retrieved = set(episode.record.retrieved_doc_ids)
        found = all(d in retrieved for d in supporting) if supporting else self._facts_found(
            episode.record.retrieved_texts, list(sample.golden_answers[:1])
        )  # fmt: skip
        if found:
            final = sample.golden_answers[0]
            thought = f"The documents give every fact needed, so the answer is {final}."
        else:
            final = "unknown"
            thought = "The documents did not give me what I needed."
        return _open_think(env, thought) + env.template.actions.write_answer(final)

    @staticmethod
    def _facts_found(texts: list[str], answers: list[str]) -> bool:
        """Every span answer of the decomposition occurs in some retrieved document."""
        if not answers:
            return False
        haystack = " ".join(normalize_answer(t) for t in texts)
        needed = [normalize_answer(a) for a in answers]
        return all(a in haystack for a in needed if a and a not in _LABELS)


def supporting_titles(metadata: dict[str, Any]) -> list[str]:
    """The distinct titles of a sample's ``supporting_facts`` (``[[title, sentence], ...]``),
    in order."""
    titles: dict[str, None] = {}
    for fact in metadata.get("supporting_facts") or []:
        if isinstance(fact, (list, tuple)) and fact and isinstance(fact[0], str) and fact[0]:
            titles.setdefault(fact[0], None)
    return list(titles)


class RandomPolicy:
    """Search a few random words of the question, or answer with a random word."""

    def __init__(self, seed: int | None = None, answer_probability: float = 0.3) -> None:
        self.rng = random.Random(seed)
        self.answer_probability = answer_probability

    def act(self, env: Any) -> str:
        env = _bare(env)
        episode = env.episode
        assert episode is not None
        words = episode.sample.question.rstrip("?").split() or ["?"]
        if self.rng.random() < self.answer_probability:
            guess = self.rng.choice(words)
            return _open_think(env, "I will guess.") + f"<answer>\\boxed{{{guess}}}</answer>"
        query = " ".join(self.rng.sample(words, k=min(3, len(words))))
        return _open_think(env, "Let me search.") + env.template.actions.write_search(query)


POLICIES = {"oracle": OraclePolicy, "random": RandomPolicy}


def get_policy(name: str, seed: int | None = None) -> ScriptedPolicy:
    if name == "oracle":
        return OraclePolicy()
    if name == "random":
        return RandomPolicy(seed)
    raise ValueError(f"unknown scripted policy {name!r}; choose one of {sorted(POLICIES)}")
