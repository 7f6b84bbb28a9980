"""Which file of a directory holds a split, and which split a file name announces.

Releases name files by split in many ways (``hotpot_dev_distractor_v1.json``,
``musique_ans_v1.0_dev.jsonl``, 2Wiki's ``dev.json``, FlashRAG's ``dev.jsonl``); the
split is a word of the name, and ``dev``/``validation``/``val`` stand for each other.
"""

from __future__ import annotations

from pathlib import Path

from research_env.data.formats._files import base_suffix
from research_env.data.formats.detect import detect_format
from research_env.data.formats.registry import resolve_format
from research_env.data.split_names import SPLIT_SYNONYMS, name_tokens, split_from_name

__all__ = ["QA_SUFFIXES", "SPLIT_SYNONYMS", "raw_files", "split_file", "split_from_name"]

QA_SUFFIXES = (".json", ".jsonl", ".ndjson", ".csv", ".tsv")


def raw_files(directory: Path) -> list[Path]:
    """The QA data files directly in ``directory`` (not its ``corpus.jsonl``), sorted."""
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and base_suffix(p) in QA_SUFFIXES
        and p.name.split(".")[0] != "corpus"
        and p.name not in ("dataset_info.json", "state.json", "dataset_dict.json")
    )


def split_file(directory: Path, split: str, format: str = "auto") -> Path:
    """The data file of ``split`` in ``directory``: ``<split>.jsonl`` (or ``.json``...),
    else the one file whose name has the split as a word (``musique_ans_v1.0_dev``).
    With an explicit ``format``, only files of that format are candidates, so one
    directory can hold several releases."""
    files = raw_files(directory)
    if format != "auto":
        files = [f for f in files if _detect_or_none(f) == resolve_format(format).name]
    exact = [f for f in files if f.name.split(".")[0] == split]
    if len(exact) == 1:
        return exact[0]
    for word in SPLIT_SYNONYMS.get(split, (split,)):
        matches = [f for f in files if word in name_tokens(f.name)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = ", ".join(f.name for f in matches)
            raise ValueError(
                f"{directory}: several files match split {split!r}: {names}; pass the file "
                "itself, or format= (--format) to choose among releases"
            )
    found = sorted({s for f in files if (s := split_from_name(f.name) or f.stem)})
    raise ValueError(
        f"{directory} has no {split}.jsonl; splits there: {found or 'none'} (a release "
        "file counts when its name has the split as a word: hotpot_dev_distractor_v1.json)"
    )


def _detect_or_none(path: Path) -> str | None:
    try:
        return detect_format(path)
    except ValueError:
        return None
