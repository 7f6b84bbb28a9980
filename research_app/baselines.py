"""The two baselines the search agent is measured against, with the same model.

- ``direct``: no retrieval. One turn with the ``direct`` template; the env's retriever is
  replaced by :class:`NoRetriever`, so a model that tries to search anyway gets no
  documents (and, with ``max_turns=1``, no second turn).
- ``rag``: naive retrieval-augmented generation (:class:`RetrieveOnceEnv`). The question
  itself is sent to the retriever once; its top-k documents are written into the prompt
  (``rag`` template), and the model answers in one turn (its own searches return nothing).
- ``agent``: the environment as configured (default template, multi-turn search).

:func:`baseline_vector_env` builds the vector env each one is played in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from gymnasium.vector import AutoresetMode

from research_env.env import MultiHopSearchEnv
from research_env.episode import Episode
from research_env.retrievers.base import SearchHit, as_hits, retrieve
from research_env.templates import PromptTemplate, get_template
from research_env.vector import SearchVectorEnv

BASELINES = ("direct", "rag", "agent")
BASELINE_TEMPLATES = {"direct": "direct", "rag": "rag"}


class NoRetriever:
    """A retriever with nothing in it: the baselines' answer to a search they should not make."""

    def search(self, queries: Sequence[str], k: int) -> list[list[SearchHit]]:
        return [[] for _ in queries]


class RetrieveOnceEnv(MultiHopSearchEnv):
    """Naive RAG as an env: on ``reset`` the question is sent to ``question_retriever``
    once and its top-k documents are written into the prompt, before the question.

    The episode's own searches go to :class:`NoRetriever`. The documents count as
    retrieved, so ``supporting_recall`` measures what the prompt held.
    """

    def __init__(self, *, question_retriever: Any, **env_kwargs: Any) -> None:
        super().__init__(**{**env_kwargs, "retriever": NoRetriever()})
        self.question_retriever = question_retriever

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        _, info = super().reset(seed=seed, options=options)
        assert self.episode is not None
        sample = self.episode.sample
        # The question's own sample goes along: a simulated engine writes from its facts.
        found = retrieve(self.question_retriever, [sample.question], self.rules.top_k, [sample])
        hits = as_hits(found, self.question_retriever)[0]
        template = with_documents(self.template, hits[: self.rules.top_k])
        self.episode = Episode(sample, template, self.rules, self.reward_fn)
        self.episode.record.retrieved_doc_ids.extend(h.document.id for h in hits)
        self.episode.record.retrieved_texts.extend(h.document.contents for h in hits)
        info["messages"] = template.render_messages(sample.question)
        info["documents"] = [h.document.id for h in hits]
        return self.episode.prompt, info


def with_documents(template: PromptTemplate, hits: Sequence[SearchHit]) -> PromptTemplate:
    """``template`` whose question is preceded by a ``Documents:`` block listing ``hits``
    (the layout of the ``rag`` template's worked example)."""
    lines = [
        f"Doc {i} (Title: {h.document.title}) {h.document.text.strip()}"
        for i, h in enumerate(hits, 1)
    ]
    block = "Documents:\n" + ("\n".join(lines) if lines else "No documents found.") + "\n"
    escaped = block.replace("{", "{{").replace("}", "}}")  # the block goes into a format string
    return replace(template, question_format=escaped + template.question_format)


def baseline_vector_env(
    baseline: str, env_kwargs: dict[str, Any], base: MultiHopSearchEnv, num_envs: int
) -> SearchVectorEnv:
    """A vector env of ``num_envs`` episodes of ``baseline``, over ``base``'s loaded
    samples and retriever (autoreset disabled: the rollout engine resets it)."""
    kwargs = {**env_kwargs, "dataset": base.samples, "retriever": base.retriever}
    env_class: Any = MultiHopSearchEnv
    if baseline != "agent":
        kwargs |= {"template": get_template(BASELINE_TEMPLATES[baseline]), "max_turns": 1}
    if baseline == "direct":
        kwargs["retriever"] = NoRetriever()
    if baseline == "rag":
        kwargs["question_retriever"] = kwargs.pop("retriever")
        env_class = RetrieveOnceEnv
    return SearchVectorEnv(
        num_envs, autoreset_mode=AutoresetMode.DISABLED, env_class=env_class, **kwargs
    )
