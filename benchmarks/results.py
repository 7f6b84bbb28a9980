"""Where the speed scripts put their numbers: one section each of ``benchmarks/RESULTS.md``.

A script renders its ``## ...`` section (or a ``### ...`` block inside one) and hands it
to :func:`publish`, which prints it and, unless told not to, replaces that section of
the file in place, leaving every other section as it is, so scripts can be rerun one at
a time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

RESULTS_PATH = Path(__file__).with_name("RESULTS.md")
_EMPTY_FILE = "# Benchmark results\n"

__all__ = ["RESULTS_PATH", "load_average", "publish", "replace_block"]


def load_average() -> str:
    """The 1/5/15-minute load averages, ``"1.2 / 0.9 / 0.7"``: the CPU is shared, so
    reports give it beside timings."""
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def replace_block(text: str, heading: str, block: str) -> str:
    """``text`` with the block under ``heading`` (up to the next heading of the same or a
    higher level) replaced by ``block``, or with ``block`` appended when absent."""
    level = len(heading) - len(heading.lstrip("#"))
    pattern = re.compile(
        rf"^{re.escape(heading)}\n.*?(?=^#{{1,{level}}} |\Z)", re.MULTILINE | re.DOTALL
    )
    if pattern.search(text):
        text = pattern.sub(lambda _: block.rstrip("\n") + "\n\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    return text.rstrip("\n") + "\n"


def publish(
    section: str, *, within: str | None = None, write: bool = True, path: Path = RESULTS_PATH
) -> None:
    """Print ``section`` and put it into ``path``.

    ``section`` starts with its heading line. With ``within`` (a ``## ...`` heading) it
    is a ``### ...`` block placed inside that section, which is created if missing.
    """
    print()
    print(section)
    if not write:
        return
    text = path.read_text() if path.exists() else _EMPTY_FILE
    heading = section.split("\n", 1)[0]
    if within is None:
        text = replace_block(text, heading, section)
    else:
        match = re.search(rf"^{re.escape(within)}\n.*?(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
        outer = match.group(0) if match else within + "\n"
        text = replace_block(text, within, replace_block(outer, heading, section))
    path.write_text(text)
    print(f"wrote the '{heading}' section of {path}")
