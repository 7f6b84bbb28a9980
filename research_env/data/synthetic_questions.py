"""Questions over the synthetic world: multi-hop chains, comparisons and yes/no checks.

:class:`QuestionMaker` walks the world's relations to draft a question of a given kind
and hop count; :func:`make_questions` draws the configured mix, dropping any question
that asks a fact already asked (even in other words), which would leak between splits.
:meth:`QuestionMaker.sample` packages a draft with its ``decomposition``: one
search-friendly sub-question per hop, its answer and the document that states it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from random import Random
from typing import TYPE_CHECKING, Any

from research_env.data.synthetic_entities import ENTITY_KINDS, Entity
from research_env.data.synthetic_vocabulary import (
    COMPARE_ASKS,
    RELATION,
    RELATIONS,
    RELATIONS_OF,
    SAME_ASKS,
    YEAR_OF,
    Relation,
)
from research_env.data.types import QASample

if TYPE_CHECKING:
    from research_env.data.synthetic import SyntheticConfig

# A hop: look up ``relation`` in the document of ``subject``.
Hop = tuple[Entity, Relation]


@dataclass
class Draft:
    """A question before it gets an id: text, answers, hops and a duplicate key."""

    kind: str
    question: str
    answers: tuple[str, ...]
    answer_type: str
    hops: list[Hop]
    key: tuple[Any, ...]


class QuestionMaker:
    def __init__(self, entities: list[Entity], rng: Random) -> None:
        self.entities = entities
        self.rng = rng
        self.by_kind: dict[str, list[Entity]] = defaultdict(list)
        # (relation, target index or year) -> subjects: for "same city?" questions with "yes"
        self.subjects_of: dict[tuple[str, int], list[Entity]] = defaultdict(list)
        for e in entities:
            self.by_kind[e.kind].append(e)
            for relation, value in e.facts.items():
                self.subjects_of[relation, value].append(e)

    # ------------------------------------------------------------------ hop helpers

    def target(self, subject: Entity, relation: Relation) -> Entity | None:
        if relation.target in ENTITY_KINDS:
            return self.entities[subject.facts[relation.name]]
        return None

    def value(self, subject: Entity, relation: Relation) -> str:
        if relation.target == "occupation":
            return subject.form
        target = self.target(subject, relation)
        return target.name if target is not None else str(subject.facts[relation.name])

    def phrase(self, hops: Sequence[Hop]) -> str:
        """The noun phrase for where ``hops`` lead: "the birthplace of the founder of X"."""
        text = hops[0][0].surface
        for subject, relation in hops:
            phrases = relation.phrases
            if " where " in text:  # "the city where the city where ..." reads badly
                phrases = tuple(p for p in phrases if " where " not in p) or phrases
            text = self.rng.choice(phrases).format(x=text, **subject.form_words)
        return text

    def walk(self, n_hops: int, last_ok: Any = None) -> list[Hop] | None:
        """A random chain of ``n_hops`` relations through distinct entities; attributes
        (years, occupation) may only end it. ``last_ok(relation)`` filters the last hop."""
        rng = self.rng
        subject = rng.choice(self.entities)
        visited = {subject.index}
        hops: list[Hop] = []
        for i in range(n_hops):
            last = i == n_hops - 1
            options: list[Relation] = []
            weights: list[float] = []
            for relation in RELATIONS_OF[subject.kind]:
                if relation.name != "occupation" and relation.name not in subject.facts:
                    continue
                is_link = relation.target in ENTITY_KINDS
                if is_link and subject.facts[relation.name] in visited:
                    continue
                if not (is_link or last) or (last and last_ok and not last_ok(relation)):
                    continue
                options.append(relation)
                weights.append(2.0 if is_link else 1.0)
            if not options:
                return None
            relation = rng.choices(options, weights)[0]
            hops.append((subject, relation))
            if relation.target in ENTITY_KINDS:
                subject = self.entities[subject.facts[relation.name]]
                visited.add(subject.index)
        return hops

    def side(self, kind: str, bridged: bool) -> list[Hop] | None:
        """Hops reaching an entity of ``kind``: none (start there) or one bridge relation.
        The returned chain is only the bridge; the caller adds the final lookup."""
        if not bridged:
            return []
        bridges = [r for r in RELATIONS if r.target == kind and r.phrases]
        relation = self.rng.choice(bridges)
        subjects = [e for e in self.by_kind[relation.subject] if relation.name in e.facts]
        return [(self.rng.choice(subjects), relation)] if subjects else None

    # ------------------------------------------------------------------ question kinds

    def compositional(self, n_hops: int) -> Draft | None:
        hops = self.walk(n_hops)
        if hops is None:
            return None
        subject, relation = hops[-1]
        inner = self.phrase(hops[:-1]) if len(hops) > 1 else subject.surface
        text = self.rng.choice(relation.asks).format(x=inner, **subject.form_words)
        target = self.target(subject, relation)
        answers = target.aliases if target is not None else (self.value(subject, relation),)
        key = ("compositional", hops[0][0].index, tuple(r.name for _, r in hops))
        answer_type = target.kind if target is not None else relation.target
        return Draft("compositional", text, answers, answer_type, hops, key)

    def check(self, n_hops: int) -> Draft | None:
        """Yes/no: is the end of a chain equal to a given value?"""
        rng = self.rng
        hops = self.walk(n_hops, last_ok=lambda r: bool(r.checks))
        if hops is None:
            return None
        subject, relation = hops[-1]
        truth = self.value(subject, relation)
        target = self.target(subject, relation)
        involved = {s.index for s, _ in hops}
        if rng.random() < 0.5:
            shown, answer = truth, "yes"
        elif target is None:  # a year: a near but different one
            shown, answer = str(int(truth) + rng.choice((-1, 1)) * rng.randint(1, 40)), "no"
        else:
            decoy = rng.choice(self.by_kind[target.kind])
            if decoy.index == target.index or decoy.index in involved:
                return None
            shown, answer = decoy.name, "no"
        inner = self.phrase(hops[:-1]) if len(hops) > 1 else subject.surface
        text = rng.choice(relation.checks).format(x=inner, v=shown, **subject.form_words)
        key = ("check", hops[0][0].index, tuple(r.name for _, r in hops), shown)
        return Draft("yesno", text, (answer,), "yesno", hops, key)

    def comparison(self, n_hops: int) -> Draft | None:
        """Which of two things has the earlier (or later) year; each side reached directly
        or through one bridge, so 2-4 hops."""
        rng = self.rng
        n_bridges = n_hops - 2
        kinds = (
            ["person", "person", "org", "work", "city"]
            if n_bridges == 0
            else ["person", "person", "city"]
        )
        kind = rng.choice(kinds)
        bridged = (
            [False, False]
            if n_bridges == 0
            else ([True, True] if n_bridges == 2 else rng.sample([True, False], 2))
        )
        year_relation = RELATION[YEAR_OF[kind]]
        sides = []
        for is_bridged in bridged:
            bridge = self.side(kind, is_bridged)
            if bridge is None:
                return None
            end = self.target(*bridge[0]) if bridge else rng.choice(self.by_kind[kind])
            assert end is not None
            sides.append((bridge, end))
        (bridge_a, end_a), (bridge_b, end_b) = sides
        years = [end.facts[year_relation.name] for end in (end_a, end_b)]
        involved = [s.index for s, _ in bridge_a + bridge_b] + [end_a.index, end_b.index]
        if years[0] == years[1] or len(set(involved)) != len(involved):
            return None
        earlier = rng.random() < 0.6
        winner = (
            (end_a if years[0] < years[1] else end_b)
            if earlier
            else (end_a if years[0] > years[1] else end_b)
        )
        a, b = (self.phrase(bridge) if bridge else end.surface for bridge, end in sides)
        text = rng.choice(COMPARE_ASKS[kind][0 if earlier else 1]).format(a=a, b=b)
        hops = [*bridge_a, (end_a, year_relation), *bridge_b, (end_b, year_relation)]
        key = ("comparison", *sorted((tuple(s.index for s, _ in br), e.index) for br, e in sides))
        return Draft("comparison", text, winner.aliases, kind, hops, key)

    def same(self, n_hops: int) -> Draft | None:
        """Yes/no: do two things share a birthplace / country / headquarters / creator?"""
        rng = self.rng
        n_bridges = n_hops - 2
        kind = rng.choice(
            ["person", "city", "org", "work"] if n_bridges == 0 else ["person", "city"]
        )
        relation_name, asks = SAME_ASKS[kind]
        relation = RELATION[relation_name]
        bridged = (
            [False, False]
            if n_bridges == 0
            else ([True, True] if n_bridges == 2 else rng.sample([True, False], 2))
        )
        bridge_a = self.side(kind, bridged[0])
        if bridge_a is None:
            return None
        end_a = self.target(*bridge_a[0]) if bridge_a else rng.choice(self.by_kind[kind])
        assert end_a is not None
        shared = end_a.facts[relation_name]
        # Half the time aim for a "yes": the second thing shares the value.
        pool = self.subjects_of[relation_name, shared] if rng.random() < 0.5 else self.by_kind[kind]
        end_b = rng.choice(pool)
        if bridged[1]:
            bridge_rel = rng.choice([r for r in RELATIONS if r.target == kind and r.phrases])
            sources = self.subjects_of[bridge_rel.name, end_b.index]
            if not sources:
                return None
            bridge_b: list[Hop] = [(rng.choice(sources), bridge_rel)]
        else:
            bridge_b = []
        involved = [s.index for s, _ in bridge_a + bridge_b] + [end_a.index, end_b.index]
        if len(set(involved)) != len(involved):
            return None
        answer = "yes" if end_b.facts[relation_name] == shared else "no"
        a = self.phrase(bridge_a) if bridge_a else end_a.surface
        b = self.phrase(bridge_b) if bridge_b else end_b.surface
        text = rng.choice(asks).format(a=a, b=b)
        hops = [*bridge_a, (end_a, relation), *bridge_b, (end_b, relation)]
        sides = [
            (tuple(s.index for s, _ in br), e.index)
            for br, e in ((bridge_a, end_a), (bridge_b, end_b))
        ]
        key = ("same", *sorted(sides))
        return Draft("yesno", text, (answer,), "yesno", hops, key)

    def draft(self, kind: str, n_hops: int) -> Draft | None:
        if kind == "compositional":
            return self.compositional(n_hops)
        if kind == "comparison":
            return self.comparison(n_hops)
        if n_hops >= 2 and self.rng.random() < 0.5:
            return self.same(n_hops)
        return self.check(n_hops)

    def sample(self, draft: Draft, sample_id: str) -> QASample:
        """Number the hops, write each one's search-friendly sub-question, and package."""
        decomposition = []
        previous_subject: dict[int, int] = {}  # entity index -> hop number that found it
        for number, (subject, relation) in enumerate(draft.hops, start=1):
            found_by = previous_subject.get(subject.index)
            x = f"#{found_by}" if found_by is not None else subject.surface
            decomposition.append(
                {
                    "question": relation.lookup.format(x=x, **subject.form_words),
                    "answer": self.value(subject, relation),
                    "doc_id": subject.doc_id,
                }
            )
            target = self.target(subject, relation)
            if target is not None:
                previous_subject[target.index] = number
        supporting = list(dict.fromkeys(step["doc_id"] for step in decomposition))
        question = draft.question[0].upper() + draft.question[1:]
        metadata = {
            "hops": len(decomposition),
            "type": draft.kind,
            "answer_type": draft.answer_type,
            "supporting_doc_ids": supporting,
            "decomposition": decomposition,
        }
        return QASample(sample_id, question, draft.answers, metadata)


def _weighted(rng: Random, weights: dict[Any, float]) -> Any:
    keys = [k for k, w in weights.items() if w > 0]
    return rng.choices(keys, [weights[k] for k in keys])[0]


def make_questions(
    config: SyntheticConfig, entities: list[Entity], rng: Random
) -> list[tuple[Draft, QuestionMaker]]:
    maker = QuestionMaker(entities, rng)
    drafts: list[Draft] = []
    seen_keys: set[tuple[Any, ...]] = set()
    seen_texts: set[str] = set()
    budget = 50 * config.n_questions
    while len(drafts) < config.n_questions and budget > 0:
        budget -= 1
        n_hops = _weighted(rng, config.hop_weights)
        kinds = {k: w for k, w in config.type_weights.items() if k != "comparison" or n_hops >= 2}
        if not any(w > 0 for w in kinds.values()):
            continue
        draft = maker.draft(_weighted(rng, kinds), n_hops)
        # One fact asked twice (even in other words) would leak between splits.
        if draft is None or draft.key in seen_keys or draft.question.lower() in seen_texts:
            continue
        seen_keys.add(draft.key)
        seen_texts.add(draft.question.lower())
        drafts.append(draft)
    if len(drafts) < config.n_questions:
        raise ValueError(
            f"could only make {len(drafts)} distinct questions of {config.n_questions}; "
            "make the world larger or ask for fewer questions"
        )
    return [(d, maker) for d in drafts]
