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
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from random import Random
from typing import Any

from research_env.data.jsonl import write_corpus_jsonl, write_qa_jsonl
from research_env.data.types import Document, QASample
from research_env.storage import atomic_file

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


# =========================================================================== templates
# {x} is the subject (a name, a noun phrase, or "#k" in a sub-question); {v} a value.
# Work templates may also use {noun} {verb} {role} {made} {released} (see _WORK_FORMS).


@dataclass(frozen=True)
class _Relation:
    name: str
    subject: str  # entity kind
    target: str  # entity kind, or "year" / "occupation" for attributes
    lookup: str  # the sub-question of this hop: plain and search-friendly
    asks: tuple[str, ...]  # phrasings when this is the question's last hop
    phrases: tuple[str, ...] = ()  # noun phrases for an inner hop; empty for attributes
    checks: tuple[str, ...] = ()  # yes/no phrasings with {x} and {v}


# The tables below read best one entry per line, so the formatter leaves them alone.
# fmt: off
_RELATIONS = (
    _Relation(
        "born_in", "person", "city", "In which city was {x} born?",
        asks=("In which city was {x} born?", "Where was {x} born?",
              "What is the birthplace of {x}?"),
        phrases=("the birthplace of {x}", "the city where {x} was born", "the home town of {x}"),
        checks=("Was {x} born in {v}?",),
    ),
    _Relation(
        "spouse", "person", "person", "Who was {x} married to?",
        asks=("Who was {x} married to?", "Who was the spouse of {x}?", "Whom did {x} marry?"),
        phrases=("the spouse of {x}", "the person married to {x}"),
        checks=("Was {x} married to {v}?",),
    ),
    _Relation(
        "birth_year", "person", "year", "In what year was {x} born?",
        asks=("In what year was {x} born?", "When was {x} born?",
              "What is the birth year of {x}?"),
        checks=("Was {x} born in {v}?",),
    ),
    _Relation(
        "occupation", "person", "occupation", "What was the occupation of {x}?",
        asks=("What was the occupation of {x}?", "What did {x} do for a living?"),
    ),
    _Relation(
        "country", "city", "country", "In which country is {x} located?",
        asks=("In which country is {x}?", "In which country is {x} located?",
              "{x} lies in which country?"),
        phrases=("the country where {x} is located", "the country containing {x}"),
        checks=("Is {x} located in {v}?", "Is {x} in {v}?"),
    ),
    _Relation(
        "city_founded", "city", "year", "In what year was the city {x} founded?",
        asks=("In what year was {x} founded?", "When was {x} founded?"),
        checks=("Was {x} founded in {v}?",),
    ),
    _Relation(
        "capital", "country", "city", "What is the capital of {x}?",
        asks=("What is the capital of {x}?", "Which city is the capital of {x}?"),
        phrases=("the capital of {x}", "the capital city of {x}"),
        checks=("Is {v} the capital of {x}?",),
    ),
    _Relation(
        "established", "country", "year", "In what year was the state {x} established?",
        asks=("In what year was {x} established?", "When was the state of {x} established?"),
        checks=("Was {x} established in {v}?",),
    ),
    _Relation(
        "founder", "org", "person", "Who founded {x}?",
        asks=("Who founded {x}?", "Who was the founder of {x}?", "Who established {x}?"),
        phrases=("the founder of {x}", "the person who founded {x}"),
        checks=("Was {x} founded by {v}?",),
    ),
    _Relation(
        "headquarters", "org", "city", "In which city is {x} headquartered?",
        asks=("In which city is {x} headquartered?", "Where is {x} based?",
              "Where are the headquarters of {x}?"),
        phrases=("the city where {x} is headquartered", "the home city of {x}"),
        checks=("Is {x} headquartered in {v}?", "Is {x} based in {v}?"),
    ),
    _Relation(
        "org_founded", "org", "year", "In what year was {x} founded?",
        asks=("In what year was {x} founded?", "When was {x} founded?"),
        checks=("Was {x} founded in {v}?",),
    ),
    _Relation(
        "creator", "work", "person", "Who {verb} {x}?",
        asks=("Who {verb} {x}?", "Who was the {role} of {x}?"),
        phrases=("the {role} of {x}", "the person who {verb} {x}"),
        checks=("Was {x} {made} by {v}?",),
    ),
    _Relation(
        "released", "work", "year", "In what year was {x} {released}?",
        asks=("In what year was {x} {released}?", "When was {x} {released}?"),
        checks=("Was {x} {released} in {v}?",),
    ),
)
_YEAR_OF = {"person": "birth_year", "city": "city_founded", "org": "org_founded",
            "work": "released"}
_WORK_FORMS = {
    "novel": {"noun": "novel", "verb": "wrote", "role": "author", "made": "written",
              "released": "published", "occupation": "novelist"},
    "film": {"noun": "film", "verb": "directed", "role": "director", "made": "directed",
             "released": "released", "occupation": "film director"},
    "album": {"noun": "album", "verb": "recorded", "role": "artist", "made": "recorded",
              "released": "released", "occupation": "singer"},
}
_OTHER_OCCUPATIONS = ("architect", "chemist", "merchant", "painter", "engineer", "physician",
                      "politician", "astronomer", "lawyer", "banker", "sculptor", "historian",
                      "botanist", "diplomat")
_ORG_TYPES = (  # (kind of organisation, name suffixes)
    ("shipping company", ("Lines", "Shipping", "Maritime")),
    ("trading company", ("Group", "Trading", "Holdings")),
    ("bank", ("Bank", "Savings", "Credit")),
    ("brewery", ("Brewery", "Breweries")),
    ("publishing house", ("Press", "Books", "Publishing")),
    ("research institute", ("Institute", "Laboratories")),
    ("university", ("Academy", "College", "University")),
    ("orchestra", ("Philharmonic", "Ensemble")),
    ("newspaper", ("Gazette", "Courier", "Herald")),
    ("record label", ("Records", "Recordings")),
    ("engineering firm", ("Works", "Engineering", "Industries")),
)
_TITLE_SHAPES = (
    "{w}", "Tides of {w}", "The {w} Letters", "Silent {w}", "The Last {w}", "Songs from {w}",
    "{w} in Winter", "The House of {w}", "Ashes of {w}", "Beyond {w}", "The {w} Garden",
    "A Crown for {w}", "{w} Nights", "The Lanterns of {w}", "Return to {w}", "Hollow {w}",
)

# Comparison phrasings: (asking for the earlier one, asking for the later one).
_COMPARE_ASKS = {
    "person": (("Who was born earlier, {a} or {b}?", "Who was born first, {a} or {b}?"),
               ("Who was born later, {a} or {b}?", "Who is younger, {a} or {b}?")),
    "org": (("Which was founded first, {a} or {b}?", "Which is older, {a} or {b}?"),
            ("Which was founded more recently, {a} or {b}?",)),
    "work": (("Which came out first, {a} or {b}?", "Which was released earlier, {a} or {b}?"),
             ("Which came out more recently, {a} or {b}?",)),
    "city": (("Which city was founded first, {a} or {b}?", "Which city is older, {a} or {b}?"),
             ("Which city was founded more recently, {a} or {b}?",)),
}
# "Do the two share X?": the shared relation and its phrasings.
_SAME_ASKS = {
    "person": ("born_in", ("Were {a} and {b} born in the same city?",
                           "Do {a} and {b} come from the same city?")),
    "city": ("country", ("Are {a} and {b} in the same country?",
                         "Are {a} and {b} located in the same country?")),
    "org": ("headquarters", ("Are {a} and {b} headquartered in the same city?",
                             "Are {a} and {b} based in the same city?")),
    "work": ("creator", ("Were {a} and {b} created by the same person?",
                         "Do {a} and {b} have the same creator?")),
}

# Document sentences. Each entity's document states its own facts and nothing else, so
# that a chain of h relations needs exactly h documents.
_PERSON_INTROS = ("{name} (born {year}) was {a_occupation}.",
                  "{name} was {a_occupation}, born in {year}.",
                  "Born in {year}, {name} worked as {a_occupation}.")
_PERSON_BIRTHPLACES = ("{Sur} was born in {city}.", "{Pron} was born in the city of {city}.",
                       "{Sur}'s home town was {city}, where {pron} was born.")
_PERSON_SPOUSES = ("{Pron} was married to {spouse}.", "{Sur} married {spouse}.",
                   "{Sur} and {spouse} were married.")
_PERSON_FILLERS = ("{Sur} spent many years travelling abroad.",
                   "{Sur} kept detailed diaries throughout {poss} life.",
                   "{Pron} was known for a quiet and careful manner.",
                   "{Sur} corresponded with many scholars of the period.")
_CITY_INTROS = ("{name} is a city in {country}.", "{name} is a town in {country}.",
                "{name} is a city located in {country}.", "The city of {name} lies in {country}.")
_CITY_FOUNDINGS = ("{name} was founded in {year}.", "It was founded in {year}.",
                   "The settlement of {name} dates back to {year}, when it was founded.")
_CITY_FILLER = "{name} is known for its {feature}."
_CITY_FEATURES = ("old harbour", "stone bridges", "textile market", "spring festival",
                  "hot springs", "clock tower", "vineyards", "river port", "covered bazaar",
                  "botanical gardens")
_COUNTRY_INTROS = ("{name} is a country {region}.", "{name} is a sovereign state {region}.")
_COUNTRY_REGIONS = ("on the northern coast", "in the eastern highlands",
                    "bordering the inland sea", "on a large southern island",
                    "in the western river valleys", "among the central lakes")
_COUNTRY_CAPITALS = ("Its capital is {capital}.", "The capital of {name} is {capital}.",
                     "{capital} is its capital and largest city.")
_COUNTRY_FOUNDINGS = ("{name} was established as a state in {year}.",
                      "The state of {name} was established in {year}.")
_ORG_INTROS = ("{name} is {a_kind} headquartered in {city}.",
               "{name} is {a_kind} based in {city}.",
               "{name} is {a_kind}; its headquarters are in {city}.")
_ORG_FOUNDINGS = ("It was founded in {year} by {founder}.", "{founder} founded {name} in {year}.",
                  "{name} was founded by {founder} in {year}.")
_WORK_INTROS = ("{name} is a {year} {noun} by {creator}.",
                "{name} is {a_noun} {made} by {creator}. It was {released} in {year}.",
                "{creator} {verb} the {noun} {name}, which was {released} in {year}.")
_WORK_FILLERS = ("The {noun} was well received by critics.",
                 "It was later translated into several languages.",
                 "It remains one of the best known works of its time.",
                 "Critics praised its unusual structure.")

# Name material. Repetition weights the draw: mostly single consonants and open
# syllables keep names short and pronounceable ("Velmora Qastrin"); the rare cluster
# keeps them unfamiliar.
_ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "q",
           "b", "d", "k", "l", "m", "n", "r", "s", "t", "v", "br", "dr", "kr", "st", "th", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "i", "o", "a", "ae", "ei", "ou", "y")
_CODAS = ("", "", "", "", "", "", "n", "r", "l", "s", "m", "k", "th", "x", "nd", "rn")
_FEMALE_ENDINGS = ("a", "ine", "ella", "ira", "eth", "ona")
_MALE_ENDINGS = ("or", "an", "ek", "ius", "ard", "en")
_CITY_ENDINGS = ("", "", "", "vik", "mar", "dun", "esk", "holt")
_COUNTRY_ENDINGS = ("ia", "and", "ora", "esh", "ovia")
# fmt: on

_RELATIONS_OF: dict[str, list[_Relation]] = defaultdict(list)
for _rel in _RELATIONS:
    _RELATIONS_OF[_rel.subject].append(_rel)
_RELATION = {r.name: r for r in _RELATIONS}
_EMPTY_FORM = dict.fromkeys(_WORK_FORMS["novel"], "")
_VOWEL_RE = re.compile(r"[aeiouy]")
_VOWEL_LETTERS = frozenset("aeiouy")


def _reserved_words() -> frozenset[str]:
    """Every English word of the templates. Generated names must not be one of them, or
    a name would collide with ordinary text under BM25."""
    texts: list[str] = []
    for rel in _RELATIONS:
        texts += [rel.lookup, *rel.asks, *rel.phrases, *rel.checks]
    for form in _WORK_FORMS.values():
        texts += form.values()
    for kind, suffixes in _ORG_TYPES:
        texts += [kind, *suffixes]
    for earlier, later in _COMPARE_ASKS.values():
        texts += [*earlier, *later]
    for _, asks in _SAME_ASKS.values():
        texts += asks
    texts += [*_OTHER_OCCUPATIONS, *_TITLE_SHAPES, *_PERSON_INTROS, *_PERSON_BIRTHPLACES]
    texts += [*_PERSON_SPOUSES, *_PERSON_FILLERS, *_CITY_INTROS, *_CITY_FOUNDINGS, _CITY_FILLER]
    texts += [*_CITY_FEATURES, *_COUNTRY_INTROS, *_COUNTRY_REGIONS, *_COUNTRY_CAPITALS]
    texts += [*_COUNTRY_FOUNDINGS, *_ORG_INTROS, *_ORG_FOUNDINGS, *_WORK_INTROS, *_WORK_FILLERS]
    texts.append("she he her his")
    return frozenset(re.findall(r"[a-z]+", " ".join(texts).lower()))


# =========================================================================== names


class _Names:
    """Unique pronounceable words. Every word is unique across the whole world (so a
    name token points at one entity) except where a look-alike is made on purpose."""

    def __init__(self, rng: Random) -> None:
        self.rng = rng
        self.taken: set[str] = set(_reserved_words())

    def _syllable(self) -> str:
        rng = self.rng
        return rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)

    def claim(self, word: str) -> bool:
        key = word.lower()
        if key in self.taken or len(key) < 4:
            return False
        self.taken.add(key)
        return True

    def word(self, syllables: Sequence[int] = (2, 2, 3), ending: Sequence[str] = ("",)) -> str:
        while True:
            n = self.rng.choice(syllables)
            word = "".join(self._syllable() for _ in range(n))
            tail = self.rng.choice(ending)
            if tail[:1] in _VOWEL_LETTERS and word[-1] in _VOWEL_LETTERS:
                word = word[:-1]  # "Velmo" + "ia" -> "Velmia", not "Velmoia"
            word = (word + tail).capitalize()
            if self.claim(word):
                return word

    def first_name(self, female: bool) -> str:
        endings = _FEMALE_ENDINGS if female else _MALE_ENDINGS
        while True:
            word = self._syllable() + self.rng.choice(_ONSETS) + self.rng.choice(endings)
            word = word.capitalize()
            if self.claim(word):
                return word

    def look_alike(self, word: str) -> str | None:
        """A new word one vowel away from ``word`` ("Qastrin" -> "Qastren")."""
        spots = [m.start() for m in _VOWEL_RE.finditer(word.lower())]
        for _ in range(20):
            i = self.rng.choice(spots)
            vowel = self.rng.choice("aeiou")
            candidate = word[:i] + (vowel.upper() if i == 0 else vowel) + word[i + 1 :]
            if self.claim(candidate):
                return candidate
        return None


# =========================================================================== the world

_ENTITY_KINDS = frozenset({"person", "city", "country", "org", "work"})


@dataclass
class _Entity:
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
        return _WORK_FORMS[self.form] if self.kind == "work" else _EMPTY_FORM


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


class _WorldBuilder:
    """Creates the entities and their facts, then one document per entity."""

    def __init__(self, config: SyntheticConfig, rng: Random) -> None:
        self.config = config
        self.rng = rng
        self.names = _Names(rng)
        self.entities: list[_Entity] = []
        self.by_kind: dict[str, list[_Entity]] = defaultdict(list)

    def _add(self, kind: str, name: str, stem: str, **kwargs: Any) -> _Entity:
        entity = _Entity(len(self.entities), kind, name, stem, **kwargs)
        self.entities.append(entity)
        self.by_kind[kind].append(entity)
        return entity

    def _twin(self, kind: str) -> _Entity | None:
        """An existing entity to name a new one after, for ``near_miss_fraction`` of them."""
        pool = self.by_kind[kind]
        if pool and self.rng.random() < self.config.near_miss_fraction:
            return self.rng.choice(pool)
        return None

    def build(self) -> list[_Entity]:
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
            name = names.word((1, 2), _COUNTRY_ENDINGS)
            self._add("country", name, name, facts={"established": rng.randint(1500, 1950)})
        countries = self.by_kind["country"]
        for i in range(cfg.n_cities):
            twin = self._twin("city")
            name = (names.look_alike(twin.name) if twin else None) or names.word(
                (1, 2), _CITY_ENDINGS
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
                occupation = rng.choice(_OTHER_OCCUPATIONS)
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
            kind, suffixes = rng.choice(_ORG_TYPES)
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
            for form, spec in _WORK_FORMS.items()
        }
        forms = [f for f in ("novel", "novel", "film", "album") if makers[f]]
        if not forms:  # a tiny world without novelists: let anyone write
            makers["novel"], forms = self.by_kind["person"], ["novel"]
        for _ in range(cfg.n_works):
            form = rng.choice(forms)
            twin = self._twin("work")
            stem, title = "", ""
            if twin is not None:  # same invented word, another title shape
                candidate = rng.choice(_TITLE_SHAPES).format(w=twin.stem)
                if names.claim(candidate):
                    stem, title = twin.stem, candidate
            if not title:
                stem = names.word((2,))
                title = rng.choice(_TITLE_SHAPES).format(w=stem)
                names.claim(title)
            creator = rng.choice(makers[form])
            year = min(2024, creator.facts["birth_year"] + rng.randint(20, 60))
            facts = {"creator": creator.index, "released": year}
            self._add("work", title, stem, form=form, facts=facts)


# =========================================================================== documents


def _document(entity: _Entity, entities: list[_Entity], rng: Random) -> Document:
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
        first = pick(_PERSON_INTROS, a_occupation=_with_article(e.form))
        extra.append(pick(_PERSON_BIRTHPLACES, Sur=e.stem, city=name_of("born_in"), **pron))
        if "spouse" in facts:
            extra.append(pick(_PERSON_SPOUSES, Sur=e.stem, spouse=name_of("spouse"), **pron))
        if rng.random() < 0.4:
            extra.append(pick(_PERSON_FILLERS, Sur=e.stem, **pron))
    elif e.kind == "city":
        first = pick(_CITY_INTROS, country=name_of("country"))
        extra.append(pick(_CITY_FOUNDINGS))
        if rng.random() < 0.5:
            extra.append(pick((_CITY_FILLER,), feature=rng.choice(_CITY_FEATURES)))
    elif e.kind == "country":
        first = pick(_COUNTRY_INTROS, region=rng.choice(_COUNTRY_REGIONS))
        extra.append(pick(_COUNTRY_CAPITALS, capital=name_of("capital")))
        extra.append(pick(_COUNTRY_FOUNDINGS))
    elif e.kind == "org":
        first = pick(_ORG_INTROS, a_kind=_with_article(e.form), city=name_of("headquarters"))
        extra.append(pick(_ORG_FOUNDINGS, founder=name_of("founder")))
    else:
        words = e.form_words
        first = pick(
            _WORK_INTROS, creator=name_of("creator"), a_noun=_with_article(e.form), **words
        )
        if rng.random() < 0.5:
            extra.append(pick(_WORK_FILLERS, **words))
    rng.shuffle(extra)
    text = " ".join([first, *extra])
    return Document(id=e.doc_id, contents=f'"{e.name}"\n{text}')


# =========================================================================== questions

# A hop: look up ``relation`` in the document of ``subject``.
_Hop = tuple[_Entity, _Relation]


@dataclass
class _Draft:
    """A question before it gets an id: text, answers, hops and a duplicate key."""

    kind: str
    question: str
    answers: tuple[str, ...]
    answer_type: str
    hops: list[_Hop]
    key: tuple[Any, ...]


class _QuestionMaker:
    def __init__(self, entities: list[_Entity], rng: Random) -> None:
        self.entities = entities
        self.rng = rng
        self.by_kind: dict[str, list[_Entity]] = defaultdict(list)
        # (relation, target index or year) -> subjects: for "same city?" questions with "yes"
        self.subjects_of: dict[tuple[str, int], list[_Entity]] = defaultdict(list)
        for e in entities:
            self.by_kind[e.kind].append(e)
            for relation, value in e.facts.items():
                self.subjects_of[relation, value].append(e)

    # ------------------------------------------------------------------ hop helpers

    def target(self, subject: _Entity, relation: _Relation) -> _Entity | None:
        if relation.target in _ENTITY_KINDS:
            return self.entities[subject.facts[relation.name]]
        return None

    def value(self, subject: _Entity, relation: _Relation) -> str:
        if relation.target == "occupation":
            return subject.form
        target = self.target(subject, relation)
        return target.name if target is not None else str(subject.facts[relation.name])

    def phrase(self, hops: Sequence[_Hop]) -> str:
        """The noun phrase for where ``hops`` lead: "the birthplace of the founder of X"."""
        text = hops[0][0].surface
        for subject, relation in hops:
            phrases = relation.phrases
            if " where " in text:  # "the city where the city where ..." reads badly
                phrases = tuple(p for p in phrases if " where " not in p) or phrases
            text = self.rng.choice(phrases).format(x=text, **subject.form_words)
        return text

    def walk(self, n_hops: int, last_ok: Any = None) -> list[_Hop] | None:
        """A random chain of ``n_hops`` relations through distinct entities; attributes
        (years, occupation) may only end it. ``last_ok(relation)`` filters the last hop."""
        rng = self.rng
        subject = rng.choice(self.entities)
        visited = {subject.index}
        hops: list[_Hop] = []
        for i in range(n_hops):
            last = i == n_hops - 1
            options: list[_Relation] = []
            weights: list[float] = []
            for relation in _RELATIONS_OF[subject.kind]:
                if relation.name != "occupation" and relation.name not in subject.facts:
                    continue
                is_link = relation.target in _ENTITY_KINDS
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
            if relation.target in _ENTITY_KINDS:
                subject = self.entities[subject.facts[relation.name]]
                visited.add(subject.index)
        return hops

    def side(self, kind: str, bridged: bool) -> list[_Hop] | None:
        """Hops reaching an entity of ``kind``: none (start there) or one bridge relation.
        The returned chain is only the bridge; the caller adds the final lookup."""
        if not bridged:
            return []
        bridges = [r for r in _RELATIONS if r.target == kind and r.phrases]
        relation = self.rng.choice(bridges)
        subjects = [e for e in self.by_kind[relation.subject] if relation.name in e.facts]
        return [(self.rng.choice(subjects), relation)] if subjects else None

    # ------------------------------------------------------------------ question kinds

    def compositional(self, n_hops: int) -> _Draft | None:
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
        return _Draft("compositional", text, answers, answer_type, hops, key)

    def check(self, n_hops: int) -> _Draft | None:
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
        return _Draft("yesno", text, (answer,), "yesno", hops, key)

    def comparison(self, n_hops: int) -> _Draft | None:
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
        year_relation = _RELATION[_YEAR_OF[kind]]
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
        text = rng.choice(_COMPARE_ASKS[kind][0 if earlier else 1]).format(a=a, b=b)
        hops = [*bridge_a, (end_a, year_relation), *bridge_b, (end_b, year_relation)]
        key = ("comparison", *sorted((tuple(s.index for s, _ in br), e.index) for br, e in sides))
        return _Draft("comparison", text, winner.aliases, kind, hops, key)

    def same(self, n_hops: int) -> _Draft | None:
        """Yes/no: do two things share a birthplace / country / headquarters / creator?"""
        rng = self.rng
        n_bridges = n_hops - 2
        kind = rng.choice(
            ["person", "city", "org", "work"] if n_bridges == 0 else ["person", "city"]
        )
        relation_name, asks = _SAME_ASKS[kind]
        relation = _RELATION[relation_name]
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
            bridge_rel = rng.choice([r for r in _RELATIONS if r.target == kind and r.phrases])
            sources = self.subjects_of[bridge_rel.name, end_b.index]
            if not sources:
                return None
            bridge_b: list[_Hop] = [(rng.choice(sources), bridge_rel)]
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
        return _Draft("yesno", text, (answer,), "yesno", hops, key)

    def draft(self, kind: str, n_hops: int) -> _Draft | None:
        if kind == "compositional":
            return self.compositional(n_hops)
        if kind == "comparison":
            return self.comparison(n_hops)
        if n_hops >= 2 and self.rng.random() < 0.5:
            return self.same(n_hops)
        return self.check(n_hops)

    def sample(self, draft: _Draft, sample_id: str) -> QASample:
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


def _make_questions(
    config: SyntheticConfig, entities: list[_Entity], rng: Random
) -> list[tuple[_Draft, _QuestionMaker]]:
    maker = _QuestionMaker(entities, rng)
    drafts: list[_Draft] = []
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


# =========================================================================== public API


def generate(config: SyntheticConfig | None = None) -> SyntheticWorld:
    """Build a world from ``config`` (default: the env's default world). Deterministic:
    the same config gives the same corpus and questions in any process."""
    config = config or SyntheticConfig()
    rng = Random(config.seed)
    builder = _WorldBuilder(config, rng)
    entities = builder.build()
    corpus = sorted((_document(e, entities, rng) for e in entities), key=lambda d: d.id)
    drafted = _make_questions(config, entities, rng)
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
