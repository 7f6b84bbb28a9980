"""A simulated search engine: a language model writes the documents (ZeroSearch's idea).

``retriever="simulated"`` answers a query with ``k`` passages that a local causal LM writes
on the spot. Each passage is written in one of two modes:

- *useful*: a relevant, correct passage. When the env says which question is being
  played (:class:`~research_env.retrievers.base.ContextualRetriever`), the prompt carries
  that question's gold facts: its decomposition's sub-answers, the text of its supporting
  documents when the corpus has them, and its golden answers, as ZeroSearch conditions its
  simulator on the question and answer. Without a question it is a relevant passage for
  the query alone.
- *noisy*: a plausible passage about the query that is irrelevant or wrong.

``noise_rate`` is the fraction of the ``k`` passages written in noisy mode: a float, or a
curriculum, a callable ``step -> rate`` (:func:`noise_curriculum`) read at the step set by
:meth:`SimulatedSearchEngine.set_step` (a trainer callback calls it after every update,
:class:`algorithms.simulated_search.NoiseCurriculum`). With ``k * rate`` not a whole
number, the count is rounded up or down at random (seeded by the query), so the mean is
exact; which slots are noisy is shuffled the same way, so a policy cannot learn that, say,
the last document lies.

Batched and cached: one ``search`` call turns every passage slot of every query into a
prompt, answers the prompts already seen from a query cache
(:class:`~research_env.retrievers.cache.CachedRetriever`, or the on-disk
:class:`~research_env.retrievers.query_cache.PersistentCachedRetriever` with
``retriever_cache=``), and sends the distinct rest to the writer in **one** call. A
passage's prompt is a pure function of the query, its mode, its slot within that mode and
(useful mode) the question's facts, so the same query, mode and seed give the same
passages, and changing the noise rate reuses the passages already written.

The writer needs torch, so it is not here: anything with ``write(prompts) -> texts``
works (``writer=`` a callable object), and a named writer comes from
:data:`PASSAGE_WRITERS`, which :mod:`algorithms.simulated_search` fills with ``"lm"``
(a local Hugging Face model; ``import algorithms.simulated_search`` first).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from research_env.data.types import Document, QASample
from research_env.retrievers.base import SearchHit
from research_env.retrievers.cache import BatchQueryCache, CachedRetriever

__all__ = [
    "PASSAGE_WRITERS",
    "PassageWriter",
    "SimulatedSearchEngine",
    "gold_facts",
    "noise_curriculum",
    "passage_prompt",
    "register_passage_writer",
    "simulated_factory",
]

NoiseRate = float | Callable[[int], float]


@runtime_checkable
class PassageWriter(Protocol):
    """Writes one passage per prompt, all prompts in one batched call, deterministically
    for a given batch; ``fingerprint()`` names what changes its answers (model, seed,
    sampling)."""

    def write(self, prompts: Sequence[str]) -> list[str]: ...

    def fingerprint(self) -> dict[str, Any]: ...


# Named writers (``retriever_kwargs={"writer": name}``): name -> factory(**writer_kwargs).
PASSAGE_WRITERS: dict[str, Callable[..., PassageWriter]] = {}


def register_passage_writer(name: str, factory: Callable[..., PassageWriter]) -> None:
    """Make ``writer=name`` work for ``retriever="simulated"``."""
    PASSAGE_WRITERS[name] = factory


def noise_curriculum(
    start: float, end: float, steps: int, base: float | None = None
) -> Callable[[int], float]:
    """A noise-rate schedule from ``start`` (step 0) to ``end`` (step ``steps`` and after).

    ``base=None`` is linear; a ``base > 1`` follows ZeroSearch's curve
    ``start + (base ** (step / steps) - 1) / (base - 1) * (end - start)``, which stays easy
    longer and turns hard near the end."""
    for name, value in (("start", start), ("end", end)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"noise_curriculum: {name} must be in [0, 1], got {value}")
    if steps < 1:
        raise ValueError(f"noise_curriculum: steps must be >= 1, got {steps}")
    if base is not None and (base <= 0 or base == 1):
        raise ValueError(f"noise_curriculum: base must be > 0 and not 1 (None: linear), got {base}")

    def rate(step: int) -> float:
        progress = min(max(step, 0), steps) / steps
        if base is not None:
            progress = (base**progress - 1) / (base - 1)
        return start + progress * (end - start)

    return rate


def _substitute(question: str, answers: Sequence[str]) -> str:
    """A decomposition sub-question with its ``#1``, ``#2`` placeholders filled in."""
    return re.sub(
        r"#(\d+)",
        lambda m: answers[int(m[1]) - 1] if 0 < int(m[1]) <= len(answers) else m[0],
        question,
    )


def gold_facts(sample: QASample, documents: Callable[[str], str | None] | None = None) -> list[str]:
    """What a useful passage may state about ``sample``: its decomposition's steps as
    ``sub-question answer`` lines, the text of its supporting documents (looked up with
    ``documents(id)``, when given), and its golden answers."""
    facts: list[str] = []
    answers: list[str] = []
    for step in sample.metadata.get("decomposition") or []:
        if isinstance(step, Mapping) and step.get("question") and step.get("answer"):
            answers.append(str(step["answer"]))
            facts.append(f"{_substitute(str(step['question']), answers)} {step['answer']}")
    if documents is not None:
        for doc_id in sample.metadata.get("supporting_doc_ids") or []:
            text = documents(str(doc_id))
            if text:
                facts.append(" ".join(text.split()))
    if sample.golden_answers:
        facts.append(f"The answer to {sample.question!r} is {sample.golden_answers[0]}.")
    return facts


def passage_prompt(query: str, mode: str, slot: int, facts: Sequence[str] = ()) -> str:
    """The writer's instruction for passage ``slot`` (counted within ``mode``) of ``query``."""
    head = (
        "You are a search engine. Write one search result for the query below: a short "
        "title on the first line, then a passage of about 40 words.\n"
    )
    if mode == "noisy":
        body = (
            "The passage must look like a real search result about the query, but its "
            "information must be irrelevant to the query or wrong.\n"
        )
    else:
        body = "The passage must be relevant to the query and factually correct.\n"
        if facts:
            body += "It should state whichever of these facts answer the query:\n"
            body += "".join(f"- {fact}\n" for fact in facts)
    return f"{head}{body}Result number: {slot + 1}\nQuery: {query}\nResult:\n"


def _as_document(prompt: str, text: str, mode: str, query: str) -> Document:
    """A written passage as a corpus document: the first line is its title when the model
    wrote a short one, else the query is; the id names the mode (``sim-noisy-...``), so
    an analysis of ``retrieved_doc_ids`` can count the noisy documents a policy saw."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    title, body = query, " ".join(lines)
    if len(lines) >= 2 and len(lines[0]) <= 100:
        title = re.sub(r"^(title\s*:\s*)", "", lines[0], flags=re.I).strip().strip('"') or query
        body = " ".join(lines[1:])
    digest = hashlib.blake2b(prompt.encode(), digest_size=8).hexdigest()
    return Document(f"sim-{mode}-{digest}", f'"{title}"\n{body}')


class _WriterRetriever:
    """The writer seen as a retriever of prompts (one hit each), so the library's query
    caches sit in front of it unchanged."""

    def __init__(self, writer: PassageWriter) -> None:
        self.writer = writer

    def fingerprint(self) -> dict[str, Any]:
        return {"name": "simulated-writer", **dict(self.writer.fingerprint())}

    def search(self, queries: Sequence[str], k: int) -> list[list[SearchHit]]:
        texts = list(self.writer.write(list(queries)))
        if len(texts) != len(queries) or not all(isinstance(t, str) for t in texts):
            raise RuntimeError(
                f"{type(self.writer).__name__}.write returned {len(texts)} items for "
                f"{len(queries)} prompts; it must return one string per prompt"
            )
        return [[SearchHit(Document("", text), 0.0)] for text in texts]


def _check_rate(rate: Any, where: str) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise ValueError(f"{where} must be a number in [0, 1] (a fraction of top_k), got {rate!r}")
    return float(rate)


class SimulatedSearchEngine:
    """``k`` passages written by ``writer`` per query; implements ``Retriever`` and
    ``ContextualRetriever``. See the module docstring.

    Arguments:
        writer: a :class:`PassageWriter`.
        noise_rate: fraction of each query's passages written in noisy mode (0 = all
            useful, 1 = all noisy), or a curriculum ``step -> rate``.
        seed: seeds which slots are noisy (the writer has its own seed).
        documents: ``id -> contents`` lookup of the corpus, for supporting-document facts.
        cache_size: entries of the in-memory passage cache.
    """

    def __init__(
        self,
        writer: PassageWriter,
        *,
        noise_rate: NoiseRate = 0.0,
        seed: int = 0,
        documents: Callable[[str], str | None] | None = None,
        cache_size: int = 100_000,
    ) -> None:
        if not callable(getattr(writer, "write", None)):
            raise ValueError(
                f"writer must have write(prompts) -> list[str] (a PassageWriter); got {writer!r}"
            )
        if not callable(noise_rate):
            _check_rate(noise_rate, "noise_rate")
        self.writer = writer
        self.noise_rate = noise_rate
        self.seed = int(seed)
        self.documents = documents
        self.step = 0
        self.passages: BatchQueryCache = CachedRetriever(_WriterRetriever(writer), cache_size)

    @property
    def current_noise_rate(self) -> float:
        """The noise rate now: the float, or the curriculum at :attr:`step`."""
        if callable(self.noise_rate):
            return _check_rate(self.noise_rate(self.step), f"noise_rate({self.step})")
        return float(self.noise_rate)

    def set_step(self, step: int) -> None:
        """Tell a curriculum which training step it is."""
        self.step = int(step)

    def fingerprint(self) -> dict[str, Any]:
        rate = "curriculum" if callable(self.noise_rate) else self.noise_rate
        return {
            "name": "simulated",
            "noise_rate": rate,
            "seed": self.seed,
            "writer": self.passages.inner.fingerprint(),  # type: ignore[attr-defined]
        }

    def cached_on(self, path: str | os.PathLike[str]) -> SimulatedSearchEngine:
        """Keep written passages in the sqlite file ``path`` (``retriever_cache=``), so a
        later run replays them without loading the model's answers again."""
        from research_env.retrievers.query_cache import PersistentCachedRetriever

        self.passages = PersistentCachedRetriever(self.passages.inner, path)
        return self

    @property
    def hit_rate(self) -> float:
        return self.passages.hit_rate

    def search(self, queries: Sequence[str], k: int) -> list[list[SearchHit]]:
        return self.search_with_context(queries, k, [None] * len(queries))

    def search_with_context(
        self, queries: Sequence[str], k: int, contexts: Sequence[QASample | None]
    ) -> list[list[SearchHit]]:
        """``k`` written passages per query; ``contexts[i]`` is the question query ``i``
        was asked for (its facts condition the useful passages), or None."""
        if k < 1:
            raise ValueError(f"k must be >= 1, not {k}")
        if len(contexts) != len(queries):
            raise ValueError(f"{len(queries)} queries but {len(contexts)} contexts")
        rate = self.current_noise_rate
        plans = [self._plan(q, k, rate, c) for q, c in zip(queries, contexts, strict=True)]
        prompts = [prompt for plan in plans for prompt, _ in plan]
        written = self.passages.search(prompts, 1) if prompts else []
        results: list[list[SearchHit]] = []
        position = 0
        for query, plan in zip(queries, plans, strict=True):
            hits = []
            for prompt, mode in plan:
                text = written[position][0].document.contents if written[position] else ""
                hits.append(SearchHit(_as_document(prompt, text, mode, query), 0.0))
                position += 1
            results.append(hits)
        return results

    def _plan(
        self, query: str, k: int, rate: float, context: QASample | None
    ) -> list[tuple[str, str]]:
        """``(prompt, mode)`` for each of the ``k`` slots of ``query``."""
        key = json.dumps([self.seed, query, context.id if context else None])
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8]))
        noisy = math.floor(rate * k + rng.random())
        noisy_slots = set(rng.permutation(k)[:noisy].tolist())
        facts = gold_facts(context, self.documents) if context is not None else []
        plan, counts = [], {"useful": 0, "noisy": 0}
        for slot in range(k):
            mode = "noisy" if slot in noisy_slots else "useful"
            plan.append((passage_prompt(query, mode, counts[mode], facts), mode))
            counts[mode] += 1
        return plan

    def __repr__(self) -> str:
        return f"SimulatedSearchEngine({self.writer!r}, noise_rate={self.noise_rate!r})"


def _corpus_lookup(corpus: Path) -> Callable[[str], str | None]:
    """``id -> contents`` over ``corpus``, read on first use (only useful-mode questions
    with supporting document ids need it)."""
    table: dict[str, str] = {}

    def lookup(doc_id: str) -> str | None:
        if not table:
            from research_env.data.jsonl import read_corpus_jsonl

            table.update((d.id, d.contents) for d in read_corpus_jsonl(corpus))
        return table.get(doc_id)

    return lookup


def simulated_factory(
    corpus: str | os.PathLike[str] | None = None,
    cache_dir: Any = None,
    *,
    writer: str | PassageWriter = "lm",
    noise_rate: NoiseRate | None = None,
    mode: str | None = None,
    seed: int = 0,
    **writer_kwargs: Any,
) -> SimulatedSearchEngine:
    """``retriever="simulated"`` (``retriever_kwargs``: ``mode="useful"|"noisy"`` or
    ``noise_rate``, ``seed``, ``writer``, and the named writer's own arguments such as
    ``model=``); ``"simulated/useful"`` and ``"simulated/noisy"`` fix the mode."""
    if mode is not None and noise_rate is not None:
        raise ValueError("simulated retriever: pass mode or noise_rate, not both")
    if mode is not None:
        if mode not in ("useful", "noisy"):
            raise ValueError(f"simulated retriever: mode must be 'useful' or 'noisy', got {mode!r}")
        noise_rate = 1.0 if mode == "noisy" else 0.0
    if isinstance(writer, str):
        if writer not in PASSAGE_WRITERS:
            known = sorted(PASSAGE_WRITERS) or "none registered"
            raise ValueError(
                f"simulated retriever: unknown writer {writer!r} (known: {known}); "
                "`import algorithms.simulated_search` registers the local-LM writer 'lm', "
                "or pass writer=<an object with write(prompts) -> list[str]>"
            )
        writer = PASSAGE_WRITERS[writer](seed=seed, **writer_kwargs)
    elif writer_kwargs:
        raise ValueError(
            f"simulated retriever: {sorted(writer_kwargs)} configure a named writer; "
            "a writer object takes its settings itself"
        )
    documents = _corpus_lookup(Path(corpus)) if corpus is not None else None
    return SimulatedSearchEngine(
        writer, noise_rate=0.0 if noise_rate is None else noise_rate, seed=seed,
        documents=documents,
    )  # fmt: skip


def useful_factory(
    corpus: Any = None, cache_dir: Any = None, **kwargs: Any
) -> SimulatedSearchEngine:
    """``retriever="simulated/useful"``: every passage useful."""
    return simulated_factory(corpus, cache_dir, mode="useful", **kwargs)


def noisy_factory(
    corpus: Any = None, cache_dir: Any = None, **kwargs: Any
) -> SimulatedSearchEngine:
    """``retriever="simulated/noisy"``: every passage noisy."""
    return simulated_factory(corpus, cache_dir, mode="noisy", **kwargs)
