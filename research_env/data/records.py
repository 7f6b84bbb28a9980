"""What a reader returns, and the one rule every reader follows for bad records.

A bad record is never dropped silently. With ``on_error="raise"`` the first one stops
the read with a :class:`~research_env.data.errors.DataFormatError` naming the file, the
line and what is wrong; with ``"skip"`` it is left out, counted in
:attr:`Records.skipped` and kept in :attr:`Records.errors`, and one warning states the
count. A repeated id is a bad record (the second occurrence): served twice, it would
count twice in training and evaluation.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Generic, Literal, TypeVar

from research_env.data.errors import DataFormatError

__all__ = ["OnError", "RecordCollector", "Records", "check_on_error"]

T = TypeVar("T")
OnError = Literal["raise", "skip"]


class Records(list[T], Generic[T]):
    """The records read from a file: a plain list, plus what was skipped and why.

    ``skipped`` is always 0 when reading with ``on_error="raise"``.
    """

    skipped: int
    errors: list[DataFormatError]

    def __init__(self, items: Iterable[T] = ()) -> None:
        super().__init__(items)
        self.skipped = 0
        self.errors = []


def check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


class RecordCollector(Generic[T]):
    """Gathers one source's records under the rule above; ``key`` gives a record's id."""

    def __init__(self, key: Callable[[T], str], on_error: OnError) -> None:
        check_on_error(on_error)
        self.records: Records[T] = Records()
        self._key = key
        self._on_error = on_error
        self._seen: set[str] = set()

    def add(self, make: Callable[[], T], locate: Callable[[ValueError], DataFormatError]) -> None:
        """Keep ``make()``'s record; a ``ValueError`` from it (or a repeated id) becomes
        ``locate(error)``, raised or counted."""
        try:
            record = make()
            record_id = self._key(record)
            if record_id in self._seen:
                raise ValueError(f"duplicate id {record_id!r}")
        except ValueError as err:
            error = err if isinstance(err, DataFormatError) else locate(err)
            if self._on_error == "raise":
                raise error from None
            self.records.skipped += 1
            self.records.errors.append(error)
            return
        self._seen.add(record_id)
        self.records.append(record)

    def finish(self, where: str, unit: str = "record", stacklevel: int = 3) -> Records[T]:
        """The records, after warning once (as the caller's caller) about any skipped
        ``unit`` (a jsonl file's records are its lines)."""
        records = self.records
        if records.skipped:
            warnings.warn(
                f"{where}: skipped {records.skipped} malformed {unit}(s); "
                f"first: {records.errors[0]}",
                stacklevel=stacklevel + 1,
            )
        return records
