"""Invented names for the synthetic world: pronounceable, unique, and look-alikes on purpose.

Names are built from random syllables (``"Velmora Qastrin"``), so no model knows them
from pre-training, and every word is unique across a world, so a name token points at
one entity under BM25; :meth:`Names.look_alike` makes the deliberate exceptions
(``"Qastren"`` beside ``"Qastrin"``) that give retrieval something to get wrong.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from random import Random

from research_env.data.synthetic_vocabulary import reserved_words

# fmt: off
# Name material. Repetition weights the draw: mostly single consonants and open
# syllables keep names short and pronounceable ("Velmora Qastrin"); the rare cluster
# keeps them unfamiliar.
_ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "q",
           "b", "d", "k", "l", "m", "n", "r", "s", "t", "v", "br", "dr", "kr", "st", "th", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "i", "o", "a", "ae", "ei", "ou", "y")
_CODAS = ("", "", "", "", "", "", "n", "r", "l", "s", "m", "k", "th", "x", "nd", "rn")
_FEMALE_ENDINGS = ("a", "ine", "ella", "ira", "eth", "ona")
_MALE_ENDINGS = ("or", "an", "ek", "ius", "ard", "en")
CITY_ENDINGS = ("", "", "", "vik", "mar", "dun", "esk", "holt")
COUNTRY_ENDINGS = ("ia", "and", "ora", "esh", "ovia")
# fmt: on

_VOWEL_RE = re.compile(r"[aeiouy]")
_VOWEL_LETTERS = frozenset("aeiouy")


class Names:
    """Unique pronounceable words. Every word is unique across the whole world (so a
    name token points at one entity) except where a look-alike is made on purpose."""

    def __init__(self, rng: Random) -> None:
        self.rng = rng
        self.taken: set[str] = set(reserved_words())

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
