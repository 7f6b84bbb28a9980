"""The synthetic world's entities: who and what exists, their facts, and one document each.

:class:`WorldBuilder` creates countries, cities, people, organisations and works, linked
by functional relations (a person is ``born_in`` a city, an organisation has a
``founder``, ...); :func:`entity_document` writes each entity's short encyclopedic
document, stating its own facts and only those, so a question that chains ``h``
relations needs ``h`` documents.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from random import Random
from typing import TYPE_CHECKING, Any

from research_env.data.synthetic_names import CITY_ENDINGS, COUNTRY_ENDINGS, Names
from research_env.data.synthetic_vocabulary import (
    CITY_FEATURES,
    CITY_FILLER,
    CITY_FOUNDINGS,
    CITY_INTROS,
    COUNTRY_CAPITALS,
    COUNTRY_FOUNDINGS,
    COUNTRY_INTROS,
    COUNTRY_REGIONS,
    EMPTY_FORM,
    ORG_FOUNDINGS,
    ORG_INTROS,
    ORG_TYPES,
    OTHER_OCCUPATIONS,
    PERSON_BIRTHPLACES,
    PERSON_FILLERS,
    PERSON_INTROS,
    PERSON_SPOUSES,
    TITLE_SHAPES,
    WORK_FILLERS,
    WORK_FORMS,
    WORK_INTROS,
)
from research_env.data.types import Document

if TYPE_CHECKING:
    from research_env.data.synthetic import SyntheticConfig

ENTITY_KINDS = frozenset({"person", "city", "country", "org", "work"})


@dataclass
class Entity:
    index: int
    kind: str  # "person" | "city" | "country" | "org" | "work"
    name: str
    stem: str  # the invented word the name is built on (a person's surname)
    form: str = ""  # person: occupation; org: kind of organisation; work: novel/film/album
    facts: dict[str, int] = field(default_factory=dict)  # relation -> entity index or year
    female: bool = False
    doc_id: str = ""

    @property
    def aliases(self) -> tuple[str, ...]:
        # A person is also found by surname alone (surnames are unique in a world).
        return (self.name, self.stem) if self.kind == "person" else (self.name,)

    @property
    def surface(self) -> str:
        """How a question names this entity when it is where the question starts."""
        return f"the {self.form} {self.name}" if self.kind == "work" else self.name

    @property
    def form_words(self) -> dict[str, str]:
        return WORK_FORMS[self.form] if self.kind == "work" else EMPTY_FORM


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


class WorldBuilder:
    """Creates the entities and their facts, then one document per entity."""

    def __init__(self, config: SyntheticConfig, rng: Random) -> None:
        self.config = config
        self.rng = rng
        self.names = Names(rng)
        self.entities: list[Entity] = []
        self.by_kind: dict[str, list[Entity]] = defaultdict(list)

    def _add(self, kind: str, name: str, stem: str, **kwargs: Any) -> Entity:
        entity = Entity(len(self.entities), kind, name, stem, **kwargs)
        self.entities.append(entity)
        self.by_kind[kind].append(entity)
        return entity

    def _twin(self, kind: str) -> Entity | None:
        """An existing entity to name a new one after, for ``near_miss_fraction`` of them."""
        pool = self.by_kind[kind]
        if pool and self.rng.random() < self.config.near_miss_fraction:
            return self.rng.choice(pool)
        return None

    def build(self) -> list[Entity]:
        self._add_places()
        self._add_people()
        self._add_orgs()
        self._add_works()
        order = list(range(len(self.entities)))
        self.rng.shuffle(order)  # document ids must not reveal the kind of entity
        for doc_number, index in enumerate(order):
            self.entities[index].doc_id = f"doc-{doc_number:06d}"
        return self.entities

    def _add_places(self) -> None:
        cfg, rng, names = self.config, self.rng, self.names
        for _ in range(cfg.n_countries):
            name = names.word((1, 2), COUNTRY_ENDINGS)
            self._add("country", name, name, facts={"established": rng.randint(1500, 1950)})
        countries = self.by_kind["country"]
        for i in range(cfg.n_cities):
            twin = self._twin("city")
            name = (names.look_alike(twin.name) if twin else None) or names.word(
                (1, 2), CITY_ENDINGS
            )
            # The first city of each country is its capital, so every country has one.
            country = countries[i] if i < len(countries) else rng.choice(countries)
            city = self._add("city", name, name, facts={"city_founded": rng.randint(600, 1800)})
            city.facts["country"] = country.index
            if i < len(countries):
                country.facts["capital"] = city.index

    def _add_people(self) -> None:
        cfg, rng, names = self.config, self.rng, self.names
        first_names = {
            female: [names.first_name(female) for _ in range(max(20, cfg.n_people // 8))]
            for female in (True, False)
        }
        cities = self.by_kind["city"]
        for _ in range(cfg.n_people):
            twin = self._twin("person")
            surname = names.look_alike(twin.stem) if twin else None
            if twin is not None and surname:  # same first name, surname one vowel away
                female, first = twin.female, twin.name.split()[0]
            else:
                female = rng.random() < 0.5
                first, surname = rng.choice(first_names[female]), names.word()
            born = rng.randint(1750, 1995)
            roll = rng.random()
            if roll < 0.2:
                occupation = "novelist"
            elif roll < 0.3 and born >= 1860:
                occupation = "film director"
            elif roll < 0.4 and born >= 1880:
                occupation = "singer"
            else:
                occupation = rng.choice(OTHER_OCCUPATIONS)
            facts = {"birth_year": born, "born_in": rng.choice(cities).index}
            self._add(
                "person", f"{first} {surname}", surname, form=occupation, female=female, facts=facts
            )
        # Marry neighbours in birth order, so spouses are of an age.
        people = sorted(self.by_kind["person"], key=lambda p: (p.facts["birth_year"], p.index))
        i = 0
        while i + 1 < len(people):
            a, b = people[i], people[i + 1]
            if rng.random() < 0.6 and b.facts["birth_year"] - a.facts["birth_year"] <= 12:
                a.facts["spouse"], b.facts["spouse"] = b.index, a.index
                i += 2
            else:
                i += 1

    def _add_orgs(self) -> None:
        cfg, rng, names = self.config, self.rng, self.names
        people = self.by_kind["person"]
        founders = [p for p in people if p.facts["birth_year"] <= 1975] or people
        cities = self.by_kind["city"]
        for _ in range(cfg.n_orgs):
            kind, suffixes = rng.choice(ORG_TYPES)
            twin = self._twin("org")
            name = ""
            if twin is not None:  # same invented word, another suffix: "Qorvane Records"
                candidate = f"{twin.stem} {rng.choice(suffixes)}"
                if names.claim(candidate):
                    name, stem = candidate, twin.stem
            if not name:
                stem = names.word((2,))
                name = f"{stem} {rng.choice(suffixes)}"
                names.claim(name)
            founder = rng.choice(founders)
            # Half the organisations stay in their founder's home town.
            home = founder.facts["born_in"] if rng.random() < 0.5 else rng.choice(cities).index
            year = min(2020, founder.facts["birth_year"] + rng.randint(22, 60))
            facts = {"founder": founder.index, "headquarters": home, "org_founded": year}
            self._add("org", name, stem, form=kind, facts=facts)

    def _add_works(self) -> None:
        cfg, rng, names = self.config, self.rng, self.names
        makers = {
            form: [p for p in self.by_kind["person"] if p.form == spec["occupation"]]
            for form, spec in WORK_FORMS.items()
        }
        forms = [f for f in ("novel", "novel", "film", "album") if makers[f]]
        if not forms:  # a tiny world without novelists: let anyone write
            makers["novel"], forms = self.by_kind["person"], ["novel"]
        for _ in range(cfg.n_works):
            form = rng.choice(forms)
            twin = self._twin("work")
            stem, title = "", ""
            if twin is not None:  # same invented word, another title shape
                candidate = rng.choice(TITLE_SHAPES).format(w=twin.stem)
                if names.claim(candidate):
                    stem, title = twin.stem, candidate
            if not title:
                stem = names.word((2,))
                title = rng.choice(TITLE_SHAPES).format(w=stem)
                names.claim(title)
            creator = rng.choice(makers[form])
            year = min(2024, creator.facts["birth_year"] + rng.randint(20, 60))
            facts = {"creator": creator.index, "released": year}
            self._add("work", title, stem, form=form, facts=facts)


def entity_document(entity: Entity, entities: list[Entity], rng: Random) -> Document:
    e, facts = entity, entity.facts
    year = facts.get("birth_year") or facts.get("city_founded") or facts.get("established")
    year = year or facts.get("org_founded") or facts.get("released")

    def name_of(relation: str) -> str:
        return entities[facts[relation]].name

    def pick(templates: Sequence[str], **slots: Any) -> str:
        return rng.choice(templates).format(name=e.name, year=year, **slots)

    extra: list[str] = []
    if e.kind == "person":
        pron = (
            {"Pron": "She", "pron": "she", "poss": "her"}
            if e.female
            else {"Pron": "He", "pron": "he", "poss": "his"}
        )
        first = pick(PERSON_INTROS, a_occupation=_with_article(e.form))
        extra.append(pick(PERSON_BIRTHPLACES, Sur=e.stem, city=name_of("born_in"), **pron))
        if "spouse" in facts:
            extra.append(pick(PERSON_SPOUSES, Sur=e.stem, spouse=name_of("spouse"), **pron))
        if rng.random() < 0.4:
            extra.append(pick(PERSON_FILLERS, Sur=e.stem, **pron))
    elif e.kind == "city":
        first = pick(CITY_INTROS, country=name_of("country"))
        extra.append(pick(CITY_FOUNDINGS))
        if rng.random() < 0.5:
            extra.append(pick((CITY_FILLER,), feature=rng.choice(CITY_FEATURES)))
    elif e.kind == "country":
        first = pick(COUNTRY_INTROS, region=rng.choice(COUNTRY_REGIONS))
        extra.append(pick(COUNTRY_CAPITALS, capital=name_of("capital")))
        extra.append(pick(COUNTRY_FOUNDINGS))
    elif e.kind == "org":
        first = pick(ORG_INTROS, a_kind=_with_article(e.form), city=name_of("headquarters"))
        extra.append(pick(ORG_FOUNDINGS, founder=name_of("founder")))
    else:
        words = e.form_words
        first = pick(WORK_INTROS, creator=name_of("creator"), a_noun=_with_article(e.form), **words)
        if rng.random() < 0.5:
            extra.append(pick(WORK_FILLERS, **words))
    rng.shuffle(extra)
    text = " ".join([first, *extra])
    return Document(id=e.doc_id, contents=f'"{e.name}"\n{text}')
