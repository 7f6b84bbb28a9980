"""The synthetic world's vocabulary: every English phrase its questions and documents use.

Relations (what a hop looks up, how a question asks it, how an inner hop is phrased, how
a yes/no question checks it), comparison and "same X?" phrasings, document sentences,
kinds of works and organisations. Kept apart from the code that draws from them so the
world's language can be read, and extended, in one place; the generator's rng draws from
these tuples by position, so reordering or adding entries changes the world (bump
``GENERATOR_VERSION`` in :mod:`research_env.data.synthetic`). :func:`reserved_words`
lists every word here so that invented names never collide with ordinary text.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

# {x} is the subject (a name, a noun phrase, or "#k" in a sub-question); {v} a value.
# Work templates may also use {noun} {verb} {role} {made} {released} (see WORK_FORMS).


@dataclass(frozen=True)
class Relation:
    name: str
    subject: str  # entity kind
    target: str  # entity kind, or "year" / "occupation" for attributes
    lookup: str  # the sub-question of this hop: plain and search-friendly
    asks: tuple[str, ...]  # phrasings when this is the question's last hop
    phrases: tuple[str, ...] = ()  # noun phrases for an inner hop; empty for attributes
    checks: tuple[str, ...] = ()  # yes/no phrasings with {x} and {v}


# The tables below read best one entry per line, so the formatter leaves them alone.
# fmt: off
RELATIONS = (
    Relation(
        "born_in", "person", "city", "In which city was {x} born?",
        asks=("In which city was {x} born?", "Where was {x} born?",
              "What is the birthplace of {x}?"),
        phrases=("the birthplace of {x}", "the city where {x} was born", "the home town of {x}"),
        checks=("Was {x} born in {v}?",),
    ),
    Relation(
        "spouse", "person", "person", "Who was {x} married to?",
        asks=("Who was {x} married to?", "Who was the spouse of {x}?", "Whom did {x} marry?"),
        phrases=("the spouse of {x}", "the person married to {x}"),
        checks=("Was {x} married to {v}?",),
    ),
    Relation(
        "birth_year", "person", "year", "In what year was {x} born?",
        asks=("In what year was {x} born?", "When was {x} born?",
              "What is the birth year of {x}?"),
        checks=("Was {x} born in {v}?",),
    ),
    Relation(
        "occupation", "person", "occupation", "What was the occupation of {x}?",
        asks=("What was the occupation of {x}?", "What did {x} do for a living?"),
    ),
    Relation(
        "country", "city", "country", "In which country is {x} located?",
        asks=("In which country is {x}?", "In which country is {x} located?",
              "{x} lies in which country?"),
        phrases=("the country where {x} is located", "the country containing {x}"),
        checks=("Is {x} located in {v}?", "Is {x} in {v}?"),
    ),
    Relation(
        "city_founded", "city", "year", "In what year was the city {x} founded?",
        asks=("In what year was {x} founded?", "When was {x} founded?"),
        checks=("Was {x} founded in {v}?",),
    ),
    Relation(
        "capital", "country", "city", "What is the capital of {x}?",
        asks=("What is the capital of {x}?", "Which city is the capital of {x}?"),
        phrases=("the capital of {x}", "the capital city of {x}"),
        checks=("Is {v} the capital of {x}?",),
    ),
    Relation(
        "established", "country", "year", "In what year was the state {x} established?",
        asks=("In what year was {x} established?", "When was the state of {x} established?"),
        checks=("Was {x} established in {v}?",),
    ),
    Relation(
        "founder", "org", "person", "Who founded {x}?",
        asks=("Who founded {x}?", "Who was the founder of {x}?", "Who established {x}?"),
        phrases=("the founder of {x}", "the person who founded {x}"),
        checks=("Was {x} founded by {v}?",),
    ),
    Relation(
        "headquarters", "org", "city", "In which city is {x} headquartered?",
        asks=("In which city is {x} headquartered?", "Where is {x} based?",
              "Where are the headquarters of {x}?"),
        phrases=("the city where {x} is headquartered", "the home city of {x}"),
        checks=("Is {x} headquartered in {v}?", "Is {x} based in {v}?"),
    ),
    Relation(
        "org_founded", "org", "year", "In what year was {x} founded?",
        asks=("In what year was {x} founded?", "When was {x} founded?"),
        checks=("Was {x} founded in {v}?",),
    ),
    Relation(
        "creator", "work", "person", "Who {verb} {x}?",
        asks=("Who {verb} {x}?", "Who was the {role} of {x}?"),
        phrases=("the {role} of {x}", "the person who {verb} {x}"),
        checks=("Was {x} {made} by {v}?",),
    ),
    Relation(
        "released", "work", "year", "In what year was {x} {released}?",
        asks=("In what year was {x} {released}?", "When was {x} {released}?"),
        checks=("Was {x} {released} in {v}?",),
    ),
)
YEAR_OF = {"person": "birth_year", "city": "city_founded", "org": "org_founded",
           "work": "released"}
WORK_FORMS = {
    "novel": {"noun": "novel", "verb": "wrote", "role": "author", "made": "written",
              "released": "published", "occupation": "novelist"},
    "film": {"noun": "film", "verb": "directed", "role": "director", "made": "directed",
             "released": "released", "occupation": "film director"},
    "album": {"noun": "album", "verb": "recorded", "role": "artist", "made": "recorded",
              "released": "released", "occupation": "singer"},
}
OTHER_OCCUPATIONS = ("architect", "chemist", "merchant", "painter", "engineer", "physician",
                     "politician", "astronomer", "lawyer", "banker", "sculptor", "historian",
                     "botanist", "diplomat")
ORG_TYPES = (  # (kind of organisation, name suffixes)
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
TITLE_SHAPES = (
    "{w}", "Tides of {w}", "The {w} Letters", "Silent {w}", "The Last {w}", "Songs from {w}",
    "{w} in Winter", "The House of {w}", "Ashes of {w}", "Beyond {w}", "The {w} Garden",
    "A Crown for {w}", "{w} Nights", "The Lanterns of {w}", "Return to {w}", "Hollow {w}",
)

# Comparison phrasings: (asking for the earlier one, asking for the later one).
COMPARE_ASKS = {
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
SAME_ASKS = {
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
PERSON_INTROS = ("{name} (born {year}) was {a_occupation}.",
                 "{name} was {a_occupation}, born in {year}.",
                 "Born in {year}, {name} worked as {a_occupation}.")
PERSON_BIRTHPLACES = ("{Sur} was born in {city}.", "{Pron} was born in the city of {city}.",
                      "{Sur}'s home town was {city}, where {pron} was born.")
PERSON_SPOUSES = ("{Pron} was married to {spouse}.", "{Sur} married {spouse}.",
                  "{Sur} and {spouse} were married.")
PERSON_FILLERS = ("{Sur} spent many years travelling abroad.",
                  "{Sur} kept detailed diaries throughout {poss} life.",
                  "{Pron} was known for a quiet and careful manner.",
                  "{Sur} corresponded with many scholars of the period.")
CITY_INTROS = ("{name} is a city in {country}.", "{name} is a town in {country}.",
               "{name} is a city located in {country}.", "The city of {name} lies in {country}.")
CITY_FOUNDINGS = ("{name} was founded in {year}.", "It was founded in {year}.",
                  "The settlement of {name} dates back to {year}, when it was founded.")
CITY_FILLER = "{name} is known for its {feature}."
CITY_FEATURES = ("old harbour", "stone bridges", "textile market", "spring festival",
                 "hot springs", "clock tower", "vineyards", "river port", "covered bazaar",
                 "botanical gardens")
COUNTRY_INTROS = ("{name} is a country {region}.", "{name} is a sovereign state {region}.")
COUNTRY_REGIONS = ("on the northern coast", "in the eastern highlands",
                   "bordering the inland sea", "on a large southern island",
                   "in the western river valleys", "among the central lakes")
COUNTRY_CAPITALS = ("Its capital is {capital}.", "The capital of {name} is {capital}.",
                    "{capital} is its capital and largest city.")
COUNTRY_FOUNDINGS = ("{name} was established as a state in {year}.",
                     "The state of {name} was established in {year}.")
ORG_INTROS = ("{name} is {a_kind} headquartered in {city}.",
              "{name} is {a_kind} based in {city}.",
              "{name} is {a_kind}; its headquarters are in {city}.")
ORG_FOUNDINGS = ("It was founded in {year} by {founder}.", "{founder} founded {name} in {year}.",
                 "{name} was founded by {founder} in {year}.")
WORK_INTROS = ("{name} is a {year} {noun} by {creator}.",
               "{name} is {a_noun} {made} by {creator}. It was {released} in {year}.",
               "{creator} {verb} the {noun} {name}, which was {released} in {year}.")
WORK_FILLERS = ("The {noun} was well received by critics.",
                "It was later translated into several languages.",
                "It remains one of the best known works of its time.",
                "Critics praised its unusual structure.")

# fmt: on

RELATIONS_OF: dict[str, list[Relation]] = defaultdict(list)
for _rel in RELATIONS:
    RELATIONS_OF[_rel.subject].append(_rel)
RELATION = {r.name: r for r in RELATIONS}
EMPTY_FORM = dict.fromkeys(WORK_FORMS["novel"], "")


def reserved_words() -> frozenset[str]:
    """Every English word of the templates. Generated names must not be one of them, or
    a name would collide with ordinary text under BM25."""
    texts: list[str] = []
    for rel in RELATIONS:
        texts += [rel.lookup, *rel.asks, *rel.phrases, *rel.checks]
    for form in WORK_FORMS.values():
        texts += form.values()
    for kind, suffixes in ORG_TYPES:
        texts += [kind, *suffixes]
    for earlier, later in COMPARE_ASKS.values():
        texts += [*earlier, *later]
    for _, asks in SAME_ASKS.values():
        texts += asks
    texts += [*OTHER_OCCUPATIONS, *TITLE_SHAPES, *PERSON_INTROS, *PERSON_BIRTHPLACES]
    texts += [*PERSON_SPOUSES, *PERSON_FILLERS, *CITY_INTROS, *CITY_FOUNDINGS, CITY_FILLER]
    texts += [*CITY_FEATURES, *COUNTRY_INTROS, *COUNTRY_REGIONS, *COUNTRY_CAPITALS]
    texts += [*COUNTRY_FOUNDINGS, *ORG_INTROS, *ORG_FOUNDINGS, *WORK_INTROS, *WORK_FILLERS]
    texts.append("she he her his")
    return frozenset(re.findall(r"[a-z]+", " ".join(texts).lower()))
