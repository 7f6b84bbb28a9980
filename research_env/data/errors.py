"""The error every data reader raises for a bad file or record: where, and what is wrong."""

from __future__ import annotations

import os

PathLike = str | os.PathLike[str]


class DataFormatError(ValueError):
    """A record that does not have the expected shape, located by file and line.

    ``line`` is 1-based, or ``None`` when the fault belongs to the whole file (a gzip
    stream that is corrupt somewhere, a file that is not text). A ``ValueError``, so the
    command line reports it as a user error rather than a crash.
    """

    def __init__(self, path: PathLike, line: int | None, reason: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = self.path if line is None else f"{self.path}, line {line}"
        super().__init__(f"{where}: {reason}")
