"""Read every record of a source (file, directory, saved or hub dataset) in any format.

A bad record raises :class:`~._base.RecordFormatError` naming the file, line or record
number, and field; ``on_error="skip"`` leaves it out and counts it in
``records.skipped`` / ``records.errors``, with a warning. A source with no records at
all is an error: an empty split would only fail later, far from its cause.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from research_env.data.formats._base import (
    FieldError,
    Format,
    ParsedRecord,
    PathArg,
    RecordFormatError,
)
from research_env.data.formats._files import Located, Undecodable, container_of, iter_located
from research_env.data.formats.detect import detect
from research_env.data.formats.registry import resolve_format
from research_env.data.formats.splits import split_file, split_from_name
from research_env.data.records import OnError, RecordCollector, Records, check_on_error
from research_env.data.types import Document, QASample

__all__ = ["HUB_PREFIX", "ReadResult", "read_records"]

HUB_PREFIX = "hf:"


@dataclass
class ReadResult:
    """Parsed records of one source, the format they were read as, and the split (when
    the source named one)."""

    records: Records[ParsedRecord]
    format: str
    source: str
    split: str | None = None

    @property
    def samples(self) -> Records[QASample]:
        """The questions, with the skip count and errors of the read."""
        out: Records[QASample] = Records(r.sample for r in self.records)
        out.skipped, out.errors = self.records.skipped, self.records.errors
        return out

    def paragraphs(self) -> Iterator[Document]:
        """Every paragraph of every record, duplicates included, in file order."""
        for record in self.records:
            yield from record.paragraphs


def read_records(
    source: PathArg,
    format: str = "auto",
    on_error: OnError = "raise",
    split: str | None = None,
    config: str | None = None,
    cache_dir: PathArg | None = None,
) -> ReadResult:
    """Parse every record of ``source``: a file, a directory (``split`` picks the file
    or the saved split), or ``hf:NAME[:CONFIG]`` (``config`` overrides the name's)."""
    check_on_error(on_error)  # before reading anything
    if format != "auto":
        resolve_format(format)  # fail on a bad name before reading anything
    text = str(source)
    if text.startswith(HUB_PREFIX):
        from research_env.data import hub

        name, _, name_config = text[len(HUB_PREFIX) :].partition(":")
        if split is None:
            raise ValueError(f"{text}: pass the split to load from the hub (e.g. 'validation')")
        rows = hub.hub_rows(name, split, config or name_config or None, cache_dir=cache_dir)
        return _parse_rows(rows, f"{text} ({split})", format, on_error, split)
    path = Path(source)
    if path.is_dir():
        from research_env.data import hub

        if hub.is_local_dataset_dir(path):
            chosen, rows = hub.local_rows(path, split)
            return _parse_rows(rows, f"{path} ({chosen})", format, on_error, chosen)
        if split is None:
            raise ValueError(f"{path} is a directory: pass the split to read (e.g. 'dev')")
        path = split_file(path, split, format)
    elif not path.is_file():
        raise FileNotFoundError(f"no such file or directory: {path}")
    elif path.suffix == ".parquet":  # one file of a hub dataset, e.g. Search-R1's train.parquet
        from research_env.data import hub

        chosen = split or split_from_name(path.name) or path.stem
        return _parse_rows(hub.parquet_file_rows(path), str(path), format, on_error, chosen)
    return _read_file(path, format, on_error, split or split_from_name(path.name))


def _read_file(path: Path, format: str, on_error: OnError, split: str | None) -> ReadResult:
    container = container_of(path)
    located = iter_located(path, container)
    if format == "auto" and container in ("csv", "tsv"):
        format = "bamboogle"  # the only release shipped as a sheet
    return _parse_located(located, str(path), format, on_error, split)


def _hub_located(rows: Iterable[dict[str, Any]]) -> Iterator[Located]:
    for index, row in enumerate(rows):
        yield Located(row, index, None, index)


def _parse_rows(
    rows: Iterable[dict[str, Any]], where: str, format: str, on_error: OnError, split: str
) -> ReadResult:
    return _parse_located(_hub_located(rows), where, format, on_error, split)


def _parse_located(
    located: Iterator[Located], where: str, format: str, on_error: OnError, split: str | None
) -> ReadResult:
    # Detect from the first record that is JSON at all: a corrupt first line of a
    # jsonl file is one bad record, reported below like any other.
    head: list[Located] = []
    for item in located:
        head.append(item)
        if not isinstance(item.obj, Undecodable):
            break
    if format == "auto":
        decoded = head[-1].obj if head and not isinstance(head[-1].obj, Undecodable) else None
        if decoded is None and head:
            raise RecordFormatError(where, head[0].line, head[0].obj.reason, head[0].record)
        fmt = resolve_format(detect(decoded, where))
    else:
        fmt = resolve_format(format)
    collector: RecordCollector[ParsedRecord] = RecordCollector(lambda r: r.sample.id, on_error)
    for item in itertools.chain(head, located):
        # add() calls both at once, so ``item`` is the current record's.
        collector.add(lambda: _parse(fmt, item), lambda err: _locate(err, where, item))  # noqa: B023
    if not collector.records:
        raise RecordFormatError(where, None, _no_records(collector.records))
    return ReadResult(collector.finish(where, stacklevel=4), fmt.name, where, split)


def _parse(fmt: Format, item: Located) -> ParsedRecord:
    if isinstance(item.obj, Undecodable):
        raise ValueError(item.obj.reason)
    return fmt.parse(item.obj, item.position)


def _locate(error: ValueError, where: str, item: Located) -> RecordFormatError:
    field = error.field if isinstance(error, FieldError) else None
    return RecordFormatError(where, item.line, str(error), item.record, field)


def _no_records(records: Records[ParsedRecord]) -> str:
    if records.skipped:
        return f"no valid records: all {records.skipped} were malformed; first: {records.errors[0]}"
    return "no records (a header row or blank lines only): a split needs at least one question"
