"""A seeded, procedurally generated multi-hop QA world that no model has seen.

Why generate instead of ship HotpotQA: the default env must work offline in seconds, and
an LLM cannot answer questions about invented entities from memory, so reward on this
world measures searching and composing facts, not recall. Names are built from random
syllables (``"Velmora Qastrin"``, ``"Qorvane Group"``), different for every seed.

The world holds countries, cities, people, organisations and works (novels, films,
albums) linked by functional relations: a person is ``born_in`` a city and may have a
``spouse``; a city lies in a ``country``; a country has a ``capital``; an organisation
has a ``founder`` and ``headquarters``; a work has a ``creator``; most things have a
year. Each entity gets one short encyclopedic document stating its own facts, and only
those, so a question that chains ``h`` relations needs ``h`` documents. Some entities
are named after another one on purpose (``"Qorvane Records"`` beside ``"Qorvane
Group"``, ``"Qastren"`` beside ``"Qastrin"``) so retrieval has look-alikes to get wrong.

Question kinds, each with 1-4 hops (a hop is one document lookup):

- ``compositional``: follow a chain of relations ("In which country was the founder of
  Qorvane Group born?" = founder, birthplace, country: 3 hops).
- ``comparison``: compare a year of two things, each reached directly or through one
  bridge ("Who was born earlier, the founder of Qorvane Group or Ilsa Mendrow?").
- ``yesno``: check a chained fact against a value, or ask whether two things share one.

Every sample's ``metadata`` has ``hops``, ``type``, ``supporting_doc_ids`` and a
``decomposition``: one search-friendly sub-question per hop (``#k`` stands for the answer
of hop ``k``), its answer and the document that states it. The answer of every hop occurs
literally in that hop's document.

This module is the configuration and the entry points (:func:`generate`,
:func:`write_world`); the world is made beside it: ``synthetic_vocabulary`` (every
phrase of questions and documents), ``synthetic_names`` (invented names),
``synthetic_entities`` (entities, facts and their documents) and ``synthetic_questions``
(questions and their decompositions).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from random import Random
from typing import Any

from research_env.data.jsonl import write_corpus_jsonl, write_qa_jsonl
from research_env.data.synthetic_entities import WorldBuilder, entity_document
from research_env.data.synthetic_questions import make_questions
from research_env.data.types import Document, QASample
from research_env.storage import atomic_file

__all__ = [
    "GENERATOR_VERSION",
    "QUESTION_TYPES",
    "SPLITS",
    "SyntheticConfig",
    "SyntheticWorld",
    "generate",
    "write_world",
]

# Bump when the same config would produce a different world; it invalidates caches.
GENERATOR_VERSION = 2

SPLITS = ("train", "dev", "test")
QUESTION_TYPES = ("compositional", "comparison", "yesno")


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and mix of a synthetic world. The defaults are the env's default dataset.

    ``hop_weights`` sets the share of questions per hop count (1-4); ``type_weights`` the
    share per kind among the kinds possible at that hop count (comparisons need 2+ hops).
    ``near_miss_fraction`` of people, cities, organisations and works are named after an
    existing entity of their kind, to make retrieval non-trivial.
    """

    seed: int = 0
    n_countries: int = 20
    n_cities: int = 200
    n_people: int = 1800
    n_orgs: int = 600
    n_works: int = 1000
    near_miss_fraction: float = 0.15
    n_questions: int = 3000
    hop_weights: dict[int, float] = field(
        default_factory=lambda: {1: 0.3, 2: 0.35, 3: 0.2, 4: 0.15}
    )
    type_weights: dict[str, float] = field(
        default_factory=lambda: {"compositional": 0.6, "comparison": 0.2, "yesno": 0.2}
    )
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)

    def __post_init__(self) -> None:
        counts = ("n_countries", "n_cities", "n_people", "n_orgs", "n_works", "n_questions")
        for name in counts:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.n_cities < self.n_countries:
            raise ValueError("n_cities must be at least n_countries (every country has a capital)")
        if self.n_people < 20:
            raise ValueError("n_people must be at least 20")
        if not set(self.hop_weights) <= {1, 2, 3, 4} or sum(self.hop_weights.values()) <= 0:
            raise ValueError(
                f"hop_weights needs keys in 1..4 and a positive sum: {self.hop_weights}"
            )
        if not set(self.type_weights) <= set(QUESTION_TYPES):
            raise ValueError(f"type_weights keys must be in {QUESTION_TYPES}: {self.type_weights}")
        if min(self.hop_weights.values()) < 0 or min(self.type_weights.values(), default=0) < 0:
            raise ValueError("weights must not be negative")
        if len(self.split_fractions) != 3 or abs(sum(self.split_fractions) - 1) > 1e-6:
            raise ValueError(
                f"split_fractions must be 3 numbers summing to 1: {self.split_fractions}"
            )
        if not 0 <= self.near_miss_fraction < 1:
            raise ValueError("near_miss_fraction must be in [0, 1)")

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["hop_weights"] = {str(k): v for k, v in sorted(self.hop_weights.items())}
        out["split_fractions"] = list(self.split_fractions)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> SyntheticConfig:
        obj = dict(obj)
        if "hop_weights" in obj:
            obj["hop_weights"] = {int(k): float(v) for k, v in obj["hop_weights"].items()}
        if "split_fractions" in obj:
            obj["split_fractions"] = tuple(obj["split_fractions"])
        return cls(**obj)


@dataclass
class SyntheticWorld:
    """A generated world: the corpus and the question splits ("train", "dev", "test")."""

    config: SyntheticConfig
    corpus: list[Document]
    splits: dict[str, list[QASample]]


def generate(config: SyntheticConfig | None = None) -> SyntheticWorld:
    """Build a world from ``config`` (default: the env's default world). Deterministic:
    the same config gives the same corpus and questions in any process."""
    config = config or SyntheticConfig()
    rng = Random(config.seed)
    builder = WorldBuilder(config, rng)
    entities = builder.build()
    corpus = sorted((entity_document(e, entities, rng) for e in entities), key=lambda d: d.id)
    drafted = make_questions(config, entities, rng)
    rng.shuffle(drafted)
    n_train = round(config.split_fractions[0] * len(drafted))
    n_dev = round(config.split_fractions[1] * len(drafted))
    bounds = {
        "train": (0, n_train),
        "dev": (n_train, n_train + n_dev),
        "test": (n_train + n_dev, len(drafted)),
    }
    splits = {
        split: [
            maker.sample(draft, f"{split}-{i:05d}")
            for i, (draft, maker) in enumerate(drafted[lo:hi])
        ]
        for split, (lo, hi) in bounds.items()
    }
    return SyntheticWorld(config=config, corpus=corpus, splits=splits)


def write_world(world: SyntheticWorld, out_dir: str | Path) -> Path:
    """Write ``corpus.jsonl``, ``train/dev/test.jsonl`` and ``world.json`` into ``out_dir``.

    Files hold no timestamps, so the same config always gives byte-identical files.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_corpus_jsonl(world.corpus, out / "corpus.jsonl")
    for split, samples in world.splits.items():
        write_qa_jsonl(samples, out / f"{split}.jsonl")
    summary = {
        "generator": "research_env.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "config": world.config.to_json(),
        "documents": len(world.corpus),
        "questions": {split: len(samples) for split, samples in world.splits.items()},
    }
    with atomic_file(out / "world.json") as staging:
        staging.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return out
