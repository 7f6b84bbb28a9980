"""``research-env view``: see what the loss sees.

Writes one self-contained HTML page (:mod:`~research_app.view_page`) from token
transcripts (:mod:`algorithms.transcripts`): every episode's tokens with their boundaries,
coloured by role (prompt, trained, generated but untrained, retrieved, environment text),
the loss mask, sampling log-prob and advantage of each token on hover, the reward and why
the episode ended, and filters by EM, hop count, searches, source and step.

A big run must not make a 1 GB page: at most ``limit`` episodes come from each file (an
even spread over the file, so the first and the last steps of a long run both show) and
the embedded data stops at ``max_mb``; the page says what was left out.

    from research_app.view import write_view
    write_view("runs/demo")            # -> runs/demo/view.html
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from algorithms.transcripts import ROLE_NAMES, SUFFIX, read_transcripts, record_problem
from research_app.view_page import embed_json, render_page

DEFAULT_LIMIT = 500  # episodes per file
DEFAULT_MAX_MB = 32.0  # embedded episode data, all files together
PAGE_SIZE = 25  # episodes drawn at once: the DOM holds one page's tokens

EPILOG = f"""\
PATH is a run directory (every *{SUFFIX} file under it is read) or one such file.
Token transcripts come from training with logging.save_transcripts > 0 (their loss mask
and advantages are the update's), from research-env demo (eval and training episodes),
or from research_app.harness.evaluate_model(..., token_transcripts=PATH).

examples:
  research-env train --algo grpo --out runs/g --set logging.save_transcripts=8
  research-env view runs/g                      # -> runs/g/view.html
  research-env view runs/g/transcripts/train{SUFFIX} -o /tmp/train.html --limit 100
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "view",
        help="an HTML page of episodes token by token: what the loss trains on and what it masks",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", type=Path, help=f"a run directory or a *{SUFFIX} file")
    parser.add_argument(
        "-o", "--out", type=Path, default=None,
        help="the HTML file (default: PATH/view.html for a directory, else beside the file)",
    )  # fmt: skip
    parser.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT,
        help=f"at most this many episodes from each file, spread evenly (default {DEFAULT_LIMIT})",
    )  # fmt: skip
    parser.add_argument(
        "--max-mb", type=float, default=DEFAULT_MAX_MB,
        help=f"stop embedding episodes past this many MB of data (default {DEFAULT_MAX_MB:g})",
    )  # fmt: skip
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    out = write_view(args.path, args.out, limit=args.limit, max_mb=args.max_mb)
    print(f"view: {out}", file=sys.stderr)
    return 0


def find_transcripts(path: str | Path) -> list[Path]:
    """The token-transcript files of ``path`` (a file, or every ``*.tokens.jsonl`` under a
    directory), with errors that say how to get some."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pass a run directory or a *{SUFFIX} file")
    files = sorted(path.rglob(f"*{SUFFIX}"))
    if not files:
        raise FileNotFoundError(
            f"no *{SUFFIX} file under {path}: train with --set logging.save_transcripts=8 "
            "(or run research-env demo) to write token transcripts"
        )
    return files


def load_episodes(
    files: list[Path], *, limit: int = DEFAULT_LIMIT, max_mb: float = DEFAULT_MAX_MB
) -> tuple[list[dict[str, Any]], list[str]]:
    """The episodes to embed and notes on what was left out. Each file gives at most
    ``limit`` episodes, every ``ceil(n / limit)``-th one; all files together stop at
    ``max_mb`` of JSON."""
    if limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    if max_mb <= 0:
        raise ValueError(f"--max-mb must be > 0, got {max_mb}")
    budget = int(max_mb * 1e6)
    episodes: list[dict[str, Any]] = []
    notes: list[str] = []
    used = 0
    for path in files:
        total = _count_lines(path)
        stride = max(1, math.ceil(total / limit))
        kept, skipped, first_problem = 0, 0, ""
        for record in read_transcripts(path, every=stride):
            problem = record_problem(record)
            if problem is None:
                try:  # the page's JSON: NaN and infinity become null
                    size = len(embed_json(record))
                except RecursionError:
                    problem = "nested too deeply to embed"
            if problem is not None:
                skipped, first_problem = skipped + 1, first_problem or problem
                continue
            if used + size > budget:
                notes.append(
                    f"Stopped at {max_mb:g} MB of data in {path.name} (--max-mb): "
                    f"{len(episodes)} episodes embedded."
                )
                return episodes, notes
            used += size
            record.setdefault("source", path.name.removesuffix(SUFFIX))
            episodes.append(record)
            kept += 1
        if skipped:
            notes.append(f"{path.name}: {skipped} malformed episode(s) skipped ({first_problem}).")
        if stride > 1:
            notes.append(f"{path.name}: every {stride}th of {total} episodes ({kept} shown).")
    return episodes, notes


def write_view(
    path: str | Path,
    out: str | Path | None = None,
    *,
    limit: int = DEFAULT_LIMIT,
    max_mb: float = DEFAULT_MAX_MB,
    title: str | None = None,
) -> Path:
    """Write the HTML page for the token transcripts at ``path``; return its path."""
    files = find_transcripts(path)  # before any work: a wrong path fails now
    episodes, notes = load_episodes(files, limit=limit, max_mb=max_mb)
    source = Path(path)
    if out is None:
        out = source / "view.html" if source.is_dir() else _beside(source)
    out = Path(out)
    notes.insert(0, f"{len(episodes)} episodes from {', '.join(str(f) for f in files)}.")
    payload = {"episodes": episodes, "roles": ROLE_NAMES, "page_size": PAGE_SIZE, "notes": notes}
    page = render_page(title or f"ReSearch-Gym view: {source.name}", payload)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


def _beside(file: Path) -> Path:
    stem = file.name.removesuffix(SUFFIX).removesuffix(".jsonl")
    return file.with_name(f"{stem}.view.html")


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())
