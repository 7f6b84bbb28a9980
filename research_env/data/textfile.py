"""Dataset and corpus files as text: gzip read transparently, bad bytes located, never a
raw traceback.

Every reader (FlashRAG jsonl, the release formats, the BM25 and dense corpus) reads
through here, so every one reports the same faults the same way:

- bytes that are not UTF-8 become one bad line (``not UTF-8 text``), which
  ``on_error="skip"`` can leave out like any other bad record; the rest of the file
  still reads. (Decoding uses ``surrogateescape``, so an undecodable byte survives as a
  lone surrogate that :func:`undecodable` finds in its line.)
- a JSON line nested deeper than Python's recursion limit is invalid JSON, not a
  ``RecursionError``;
- a corrupt or truncated ``.gz`` file is a :class:`DataFormatError` naming the file and
  the line where the stream broke.

A UTF-8 byte-order mark (spreadsheet exports) is ignored.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from research_env.data.errors import DataFormatError

_SURROGATE = re.compile("[\udc80-\udcff]")
_GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)


def is_gzip(path: Path) -> bool:
    return path.suffix.lower() == ".gz"


def open_text(path: Path, mode: str = "r", *, compressed: bool | None = None) -> IO[str]:
    """Open for reading (``"r"``) or writing (``"w"``), gzip-compressed when ``compressed``
    (by default: when the name ends in ``.gz``).

    Reading keeps line endings as they are (``newline=""``, which CSV needs) and never
    fails on a byte: see :func:`undecodable`.
    """
    if mode == "r":
        options: dict[str, Any] = {
            "encoding": "utf-8-sig",
            "errors": "surrogateescape",
            "newline": "",
        }
    else:
        options = {"encoding": "utf-8"}
    if is_gzip(path) if compressed is None else compressed:
        return gzip.open(path, mode + "t", **options)  # type: ignore[return-value]
    return open(path, mode, **options)


def undecodable(text: str) -> str | None:
    """Why ``text`` (read by :func:`open_text`) is not UTF-8, or ``None`` when it is."""
    bad = _SURROGATE.search(text)
    if bad is None:
        return None
    byte = ord(bad.group()) - 0xDC00
    return (
        f"not UTF-8 text (byte 0x{byte:02x} at column {bad.start() + 1}); re-save the file as UTF-8"
    )


def decode_json(text: str) -> Any:
    """One JSON value; ``ValueError`` says why not (bad bytes, syntax, nesting depth)."""
    reason = undecodable(text)
    if reason is not None:
        raise ValueError(reason)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"invalid JSON ({err.msg} at column {err.colno})") from None
    except RecursionError:
        raise ValueError("invalid JSON (nested too deeply to read)") from None


@contextlib.contextmanager
def located_gzip_errors(path: Path, line: int | None = None) -> Iterator[None]:
    """Turn a corrupt gzip stream into a :class:`DataFormatError` for ``path``."""
    try:
        yield
    except _GZIP_ERRORS as err:
        raise DataFormatError(path, line, _gzip_reason(err)) from None


def _gzip_reason(err: BaseException) -> str:
    return f"corrupt gzip file ({err}); download or compress it again"


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(1-based line number, line)`` for every line, a broken gzip stream located."""
    line_no = 0
    try:
        with open_text(path) as handle:
            for line_no, line in enumerate(handle, start=1):
                yield line_no, line
    except _GZIP_ERRORS as err:
        raise DataFormatError(path, line_no + 1, _gzip_reason(err)) from None


def read_text(path: Path, size: int = -1) -> str:
    """The file's text (its first ``size`` characters when given)."""
    with located_gzip_errors(path), open_text(path) as handle:
        return handle.read(size)
