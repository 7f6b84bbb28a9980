"""Which split a name stands for: ``dev``, ``validation`` and ``val`` stand for each other,
and a file name announces its split as one of its words. Shared by the release readers
(``formats/splits.py``) and the hub reader (``hub.py``); imports neither.
"""

from __future__ import annotations

import re
from pathlib import Path

SPLIT_SYNONYMS = {
    "dev": ("dev", "validation", "val"),
    "validation": ("validation", "dev", "val"),
    "val": ("val", "validation", "dev"),
    "train": ("train",),
    "test": ("test",),
}


def name_tokens(name: str) -> list[str]:
    """The lower-case words of a name (``Hotpot_dev-v1`` -> hotpot, dev, v1)."""
    return [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]


def split_from_name(name: str) -> str | None:
    """The split a file name announces (``hotpot_dev_distractor_v1.json`` -> ``dev``)."""
    for token in name_tokens(Path(name).name):
        if token in SPLIT_SYNONYMS:
            return token
    return None
