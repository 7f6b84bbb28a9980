"""Which release a file or record comes from, told by its keys.

``format="auto"`` readers call :func:`detect_format` (or :func:`detect` on a record
already read); the file extension only decides how records are stored (see
:mod:`._files`), except that a sheet (``.csv``/``.tsv``) is always Bamboogle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from research_env.data.formats import twowiki
from research_env.data.formats._base import PathArg
from research_env.data.formats._files import peek_first
from research_env.data.formats.registry import FORMATS

__all__ = ["detect", "detect_format", "format_of_record"]


def format_of_record(obj: Any) -> str | None:
    """The format whose release has a record with these keys, or ``None``.

    Keys tell them apart: ``golden_answers`` is FlashRAG; ``paragraphs`` /
    ``question_decomposition`` MuSiQue; ``evidences`` or a type only 2Wiki has is 2Wiki;
    ``context`` + ``supporting_facts`` (or ``level``) HotpotQA; a bare question/answer
    pair Bamboogle.
    """
    if not isinstance(obj, dict):
        return None
    keys = set(obj)
    if "golden_answers" in keys:
        return "flashrag"
    if keys & {"paragraphs", "question_decomposition", "answer_aliases", "answerable"}:
        return "musique"
    if "context" in keys:
        # Both have a "comparison" type; only HotpotQA has levels, only 2Wiki evidences.
        if "evidences" in keys or obj.get("type") in twowiki.TWOWIKI_ONLY_TYPES:
            return "2wiki"
        if keys & {"supporting_facts", "level", "_id", "id"}:
            return "hotpotqa"
    folded = {k.lower() for k in keys if isinstance(k, str)}
    if {"question", "answer"} <= folded:
        return "bamboogle"
    return None


def detect(first: Any, where: str) -> str:
    """The format of a source whose first record is ``first``; ``where`` names it in errors."""
    if first is None:
        raise ValueError(f"{where}: no records (empty file or dataset)")
    name = format_of_record(first)
    if name is None:
        keys = sorted(first) if isinstance(first, dict) else type(first).__name__
        raise ValueError(
            f"{where}: cannot detect the dataset format from the first record's keys "
            f"{keys}; pass format= (--format) one of {', '.join(FORMATS)}"
        )
    return name


def detect_format(path: PathArg) -> str:
    """The format name of a file, from its extension and first record."""
    path = Path(path)
    return detect(peek_first(path), str(path))
