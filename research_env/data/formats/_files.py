"""Records out of files: jsonl, a JSON list, CSV/TSV; each record with where it sits.

Located records let every error say ``file, line N`` (jsonl, CSV) or ``file, record K
(line N)`` (a JSON list, whose records may all sit on line 1). Files are read through
:mod:`research_env.data.textfile`: gzip transparently, a byte-order mark ignored, a
record with bytes that are not UTF-8 reported as one bad record, a corrupt ``.gz``
located.

A CSV/TSV sheet has a header row when its first row names a ``question`` column;
otherwise (a spreadsheet exported as released, Bamboogle's) every row is a record and
reaches the format's parser as a list of cells.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from research_env.data.formats._base import RecordFormatError
from research_env.data.textfile import (
    decode_json,
    located_gzip_errors,
    numbered_lines,
    open_text,
    read_text,
    undecodable,
)

CONTAINERS = ("jsonl", "json", "csv", "tsv")
_WHITESPACE = re.compile(r"\s*")
_PEEK_CHUNK = 1 << 20


@dataclass(frozen=True)
class Located:
    """A decoded record, its 0-based position among the records, and its location."""

    obj: Any
    position: int
    line: int | None
    record: int | None  # shown in errors for JSON lists and hub rows


def base_suffix(path: Path) -> str:
    """``.json`` for ``x.json.gz``: the suffix that says what is inside."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def container_of(path: Path) -> str:
    """How records are stored: by extension, else by the first character of the file."""
    suffix = base_suffix(path)
    if suffix in (".csv", ".tsv"):
        return suffix[1:]
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    head = read_text(path, 4096).lstrip()
    if head.startswith("["):
        return "json"
    if head.startswith("{"):
        return "jsonl"  # a .json file of one object per line is common (2Wiki dumps)
    raise RecordFormatError(
        path,
        1,
        f"cannot tell how records are stored: expected a JSON list '[...]', "
        f"one JSON object per line, or a .csv/.tsv file; file starts with {head[:20]!r}",
    )


def iter_located(path: Path, container: str | None = None) -> Iterator[Located]:
    container = container or container_of(path)
    if container == "jsonl":
        return _iter_jsonl(path)
    if container == "json":
        return _iter_json_list(path)
    if container in ("csv", "tsv"):
        return _iter_csv(path, "\t" if container == "tsv" else ",")
    raise ValueError(f"unknown container {container!r}; choose one of {CONTAINERS}")


def _iter_jsonl(path: Path) -> Iterator[Located]:
    position = 0
    for line_no, line in numbered_lines(path):
        if not line.strip():
            continue
        obj: Any
        try:
            obj = decode_json(line)
        except ValueError as err:
            # Yield the failure so the caller can skip it: the next line is intact.
            obj = Undecodable(str(err))
        yield Located(obj, position, line_no, None)
        position += 1


@dataclass(frozen=True)
class Undecodable:
    """A jsonl line that is not JSON; the parser turns it into a located error."""

    reason: str


def _iter_json_list(path: Path) -> Iterator[Located]:
    """Decode the list one element at a time, to know where each record starts.

    A syntax error inside the list ends the read even with ``on_error="skip"``: there
    is no telling where the next record begins.
    """
    text = read_text(path)
    decoder = json.JSONDecoder()
    pos = _WHITESPACE.match(text).end()  # type: ignore[union-attr]
    if not text.startswith("[", pos):
        raise RecordFormatError(path, 1, "expected a JSON list of records")
    pos += 1
    line, counted_to, index = 1, 0, 0
    while True:
        pos = _WHITESPACE.match(text, pos).end()  # type: ignore[union-attr]
        if text.startswith("]", pos):
            return
        line += text.count("\n", counted_to, pos)
        counted_to = pos
        start = pos
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            syntax = f"invalid JSON ({err.msg} at column {err.colno})"
            bad_bytes = undecodable(text[pos : err.pos + 1])
            raise RecordFormatError(path, err.lineno, bad_bytes or syntax, record=index) from None
        except RecursionError:
            raise RecordFormatError(
                path, line, "invalid JSON (nested too deeply to read)", record=index
            ) from None
        bad_bytes = undecodable(text[start:pos])
        yield Located(Undecodable(bad_bytes) if bad_bytes else obj, index, line, index)
        index += 1
        pos = _WHITESPACE.match(text, pos).end()  # type: ignore[union-attr]
        if text.startswith(",", pos):
            pos += 1
        elif not text.startswith("]", pos):
            at = line + text.count("\n", counted_to, pos)
            raise RecordFormatError(
                path, at, "invalid JSON (expected ',' or ']' after a record)", record=index
            )


def _iter_csv(path: Path, delimiter: str) -> Iterator[Located]:
    with located_gzip_errors(path), open_text(path) as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        # (line where the row ends, its cells)
        rows: Iterator[tuple[int, list[str]]] = ((reader.line_num, row) for row in reader)
        first = next(rows, None)
        if first is None:
            raise RecordFormatError(path, 1, "empty file: expected a header row and records")
        header = first[1] if _is_header(first[1]) else None
        if header is None:
            rows = itertools.chain([first], rows)
        position = 0
        for line, row in rows:
            if not any(cell.strip() for cell in row):
                continue
            bad_bytes = undecodable(delimiter.join(row))
            obj: Any = row if header is None else dict(zip(header, row, strict=False))
            yield Located(Undecodable(bad_bytes) if bad_bytes else obj, position, line, None)
            position += 1


def _is_header(row: list[str]) -> bool:
    """A header row names the question column; a record row holds a question."""
    return any(cell.strip().lower() == "question" for cell in row)


def peek_first(path: Path, container: str | None = None) -> Any | None:
    """The first record of a file without reading all of it (``None`` when empty).

    A JSON list is decoded from a growing prefix, so detecting the format of a 500 MB
    HotpotQA file reads about a megabyte.
    """
    container = container or container_of(path)
    if container != "json":
        for located in iter_located(path, container):
            if not isinstance(located.obj, Undecodable):
                return located.obj
        return None
    decoder = json.JSONDecoder()
    with located_gzip_errors(path), open_text(path) as handle:
        text = ""
        while True:
            chunk = handle.read(_PEEK_CHUNK)
            text += chunk
            start = _WHITESPACE.match(text, text.index("[") + 1).end()  # type: ignore[union-attr]
            if text.startswith("]", start):
                return None
            try:
                return decoder.raw_decode(text, start)[0]
            except json.JSONDecodeError:
                if not chunk:
                    raise RecordFormatError(path, 1, "invalid JSON in the first record") from None
            except RecursionError:
                raise RecordFormatError(
                    path, 1, "invalid JSON (the first record is nested too deeply to read)"
                ) from None
