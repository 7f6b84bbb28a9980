"""Readers for the original releases of public multi-hop QA datasets.

One function reads them all::

    read = read_records("hotpot_dev_distractor_v1.json")     # format detected
    read.format                        # "hotpotqa"
    [r.sample for r in read.records]   # QASample, FlashRAG shape, with metadata
    [r.paragraphs for r in read.records]  # the paragraphs each question ships

Formats (``FORMATS``): ``hotpotqa``, ``musique``, ``2wiki``, ``bamboogle``, ``flashrag``.
``format="auto"`` looks at the file extension (``.csv``/``.tsv`` are Bamboogle-style
sheets) and the keys of the first record (:func:`format_of_record`); pass the name to
override. A source is a file (``.json``, ``.jsonl``, ``.csv``, ``.tsv``, optionally
``.gz``), a directory (``<split>.jsonl``, an original file whose name contains the
split, or a dataset saved by Hugging Face ``datasets``), or ``hf:NAME[:CONFIG]`` for the
hub.

Every sample's metadata has ``dataset``, ``hops``, ``type`` (where the release has
one), ``supporting_doc_ids`` (ids of the closed-corpus documents built from its
supporting paragraphs, see :mod:`research_env.data.closed_corpus`) and, for MuSiQue and
2Wiki, a ``decomposition`` the scripted oracle can follow.

A bad record raises :class:`RecordFormatError` (a ``DataFormatError``) naming the file,
line or record number, and field. ``on_error="skip"`` leaves bad records out and counts
them in ``records.skipped`` / ``records.errors``, with a warning: nothing is dropped
silently.

The package, one idea a module: :mod:`.registry` (the formats by name), :mod:`.detect`
(which format a record is), :mod:`.splits` (which file holds a split), :mod:`.reader`
(reading a source), :mod:`._files` (records out of jsonl/JSON/CSV files, located),
:mod:`._base` (what format modules share), and one module per release.
"""

from __future__ import annotations

from research_env.data.formats._base import FieldError, Format, ParsedRecord, RecordFormatError
from research_env.data.formats._files import peek_first
from research_env.data.formats.detect import detect_format, format_of_record
from research_env.data.formats.reader import HUB_PREFIX, ReadResult, read_records
from research_env.data.formats.registry import FORMAT_CHOICES, FORMATS, resolve_format
from research_env.data.formats.splits import SPLIT_SYNONYMS, raw_files, split_from_name

__all__ = [
    "FORMATS",
    "FORMAT_CHOICES",
    "HUB_PREFIX",
    "SPLIT_SYNONYMS",
    "FieldError",
    "Format",
    "ParsedRecord",
    "ReadResult",
    "RecordFormatError",
    "detect_format",
    "format_of_record",
    "peek_first",
    "raw_files",
    "read_records",
    "resolve_format",
    "split_from_name",
]
