"""The dataset release formats this library reads, by name: how each record is parsed.

Each entry of :data:`FORMATS` is a :class:`~._base.Format`: a name (and aliases), a
description for ``--help``, the module's ``parse(obj, position)`` and whether the release
ships paragraphs for a closed corpus. Adding a format is one module and one entry here.
"""

from __future__ import annotations

from research_env.data.formats import bamboogle, flashrag, hotpotqa, musique, twowiki
from research_env.data.formats._base import Format

__all__ = ["FORMATS", "FORMAT_CHOICES", "resolve_format"]

FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "hotpotqa",
            "HotpotQA json (distractor/fullwiki): _id, question, answer, type, level, "
            "supporting_facts, context",
            hotpotqa.parse,
            ships_paragraphs=True,
            extensions=(".json",),
        ),
        Format(
            "musique",
            "MuSiQue jsonl: id, question, answer, answer_aliases, answerable, paragraphs, "
            "question_decomposition",
            musique.parse,
            ships_paragraphs=True,
            extensions=(".jsonl",),
        ),
        Format(
            "2wiki",
            "2WikiMultiHopQA json: _id, question, answer, type, context, supporting_facts, "
            "evidences",
            twowiki.parse,
            ships_paragraphs=True,
            extensions=(".json",),
            aliases=("2wikimultihopqa", "twowiki"),
        ),
        Format(
            "bamboogle",
            "Bamboogle sheet (csv/tsv/json): Question, Answer",
            bamboogle.parse,
            ships_paragraphs=False,
            extensions=(".csv", ".tsv", ".json", ".jsonl"),
        ),
        Format(
            "flashrag",
            "FlashRAG jsonl: id, question, golden_answers, metadata",
            flashrag.parse,
            ships_paragraphs=False,
            extensions=(".jsonl",),
        ),
    )
}
FORMAT_CHOICES = ("auto", *FORMATS)


def resolve_format(name: str) -> Format:
    """The :class:`Format` called ``name`` (or one of its aliases)."""
    key = name.lower()
    for fmt in FORMATS.values():
        if key == fmt.name or key in fmt.aliases:
            return fmt
    raise ValueError(f"unknown format {name!r}; choose one of {', '.join(FORMAT_CHOICES)}")
