"""What every format module shares: the parsed record, located errors, field checks.

A format module is a ``parse(obj, position) -> ParsedRecord`` function over one decoded
record (a JSON object, a CSV row as a dict, or a Hugging Face dataset row) and its
0-based position in the file (for formats whose records carry no id). It raises
:class:`FieldError` naming the field that is wrong; the reader adds where the record
sits in its file, so the user gets ``file, line/record, field, reason`` in one message.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from research_env.data.jsonl import DataFormatError
from research_env.data.types import Document, QASample

PathArg = str | os.PathLike[str]


@dataclass(frozen=True)
class ParsedRecord:
    """One question and the paragraphs its record ships (empty for QA-only formats)."""

    sample: QASample
    paragraphs: tuple[Document, ...] = ()


@dataclass(frozen=True)
class Format:
    """A dataset release format: its name, how to parse a record, how to recognize one."""

    name: str
    description: str
    parse: Callable[[Any, int], ParsedRecord]
    ships_paragraphs: bool
    extensions: tuple[str, ...]
    aliases: tuple[str, ...] = field(default=())


class FieldError(ValueError):
    """A record field that is missing or of the wrong shape."""

    def __init__(self, field_name: str, reason: str) -> None:
        self.field = field_name
        self.reason = reason
        super().__init__(f"field {field_name!r}: {reason}")


class RecordFormatError(DataFormatError):
    """A bad record, located by file (or source) and by line and/or record number.

    ``line`` is 1-based in the file (for a JSON list it is where the record starts;
    a one-line JSON file puts every record on line 1, so ``record`` (0-based index in
    the list) is what finds it); both are ``None`` for a fault of the whole source (no
    records at all). ``field`` names the offending field when known.
    """

    def __init__(
        self,
        path: PathArg,
        line: int | None,
        reason: str,
        record: int | None = None,
        field_name: str | None = None,
    ) -> None:
        self.path = str(path)
        self.line = line
        self.record = record
        self.field = field_name
        self.reason = reason
        if record is not None and line is not None:
            location = f", record {record} (line {line})"
        elif record is not None:
            location = f", record {record}"
        elif line is not None:
            location = f", line {line}"
        else:
            location = ""
        ValueError.__init__(self, f"{self.path}{location}: {reason}")


# --------------------------------------------------------------------------- checks


def require(obj: dict[str, Any], name: str) -> Any:
    if name not in obj or obj[name] is None:
        raise FieldError(name, "missing")
    return obj[name]


def require_dict(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def text_field(obj: dict[str, Any], name: str, *, optional: bool = False) -> str:
    """A non-empty string field; numbers (years, counts) are accepted as their text."""
    value = obj.get(name)
    if value is None:
        if optional:
            return ""
        raise FieldError(name, "missing")
    if isinstance(value, bool):
        raise FieldError(name, f"expected a string, got {value!r}")
    if isinstance(value, (int, float)):
        return str(value)
    if not isinstance(value, str):
        raise FieldError(name, f"expected a string, got {type(value).__name__}")
    if not value.strip() and not optional:
        raise FieldError(name, "is empty")
    return value


def id_field(obj: dict[str, Any], *names: str) -> str:
    """The record id from the first present of ``names`` (``_id`` vs HF's ``id``)."""
    for name in names:
        value = obj.get(name)
        if value is None:
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, str) and value:
            return value
        raise FieldError(name, f"expected a non-empty string id, got {value!r}")
    raise FieldError(names[0], "missing")


def rows(value: Any, name: str, columns: tuple[str, ...]) -> list[Any]:
    """A list field, also accepted in Hugging Face's columnar form.

    ``datasets`` turns a list of records into a dict of equal-length lists (HotpotQA's
    ``context`` becomes ``{"title": [...], "sentences": [...]}``); this turns that back
    into a list of ``[col0, col1, ...]`` rows (for ``columns`` given) so one parser
    reads both the original release and the hub's copy.
    """
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        missing = [c for c in columns if c not in value]
        if missing:
            raise FieldError(name, f"columnar form lacks {missing}; has {sorted(value)}")
        cols = [value[c] for c in columns]
        if not all(isinstance(c, list) for c in cols) or len({len(c) for c in cols}) > 1:
            raise FieldError(name, f"columns {list(columns)} must be lists of one length")
        return [list(r) for r in zip(*cols, strict=True)]
    raise FieldError(name, f"expected a list, got {type(value).__name__}")


def record_rows(value: Any, name: str, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """A list of objects (MuSiQue's ``paragraphs``), or its columnar form as a dict."""
    if isinstance(value, dict):
        return [dict(zip(keys, r, strict=True)) for r in rows(value, name, keys)]
    items = rows(value, name, keys)
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise FieldError(f"{name}[{i}]", f"expected an object, got {type(item).__name__}")
    return items


def answer_list(*answers: str) -> tuple[str, ...]:
    """Golden answers without blanks or repeats, first one first."""
    seen: dict[str, None] = {}
    for answer in answers:
        answer = answer.strip()
        if answer:
            seen.setdefault(answer, None)
    return tuple(seen)
