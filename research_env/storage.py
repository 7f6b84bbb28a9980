"""Where the library keeps files, and how it writes them so readers never see half of one.

Every cache (the synthetic world, closed corpora, BM25 and dense indexes, dequantized
offline models) lives under one root, :func:`cache_root`. Every file or directory that
another process may read is written to a private staging sibling and renamed into place
(:func:`atomic_file`, :func:`atomic_directory`): a rename within one directory is atomic,
so a reader sees the old state or the new one, never a torn write, even when the writer
is killed mid-way or two processes write the same path at once.

Torch-free and dependency-free: the environment, the retrievers and the trainers all
import it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "CACHE_ENV_VAR",
    "atomic_directory",
    "atomic_file",
    "cache_root",
    "file_sha256",
    "read_json_file",
]

CACHE_ENV_VAR = "RESEARCH_GYM_CACHE"
PathArg = str | os.PathLike[str]
IfExists = Literal["replace", "keep"]

# mkstemp/mkdtemp create private entries; caches and data files are meant to be shared.
_FILE_MODE = 0o644
_DIRECTORY_MODE = 0o755


def cache_root(cache_dir: PathArg | None = None) -> Path:
    """``cache_dir`` if given, else ``$RESEARCH_GYM_CACHE``, else ``~/.cache/research-gym``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get(CACHE_ENV_VAR)
    return Path(env) if env else Path.home() / ".cache" / "research-gym"


def file_sha256(path: PathArg) -> str:
    """The hex SHA-256 of a file's bytes, read in 4 MiB blocks (corpora can be gigabytes).

    Caches key on content rather than path or mtime, so a copied corpus reuses its index
    and an edited one never serves a stale index.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_file(path: PathArg) -> Iterator[Path]:
    """Yield a staging path beside ``path``; when the block succeeds it replaces ``path``.

    On an exception the staging file is removed and ``path`` is left as it was. The
    parent directory is created if missing. When two writers race, the last rename wins,
    whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    staging = Path(name)
    try:
        staging.chmod(_FILE_MODE)
        yield staging
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)  # a no-op once renamed


@contextlib.contextmanager
def atomic_directory(target: PathArg, if_exists: IfExists = "replace") -> Iterator[Path]:
    """Yield an empty staging directory beside ``target``; on success it *becomes* ``target``.

    ``if_exists`` says what happens when ``target`` is already there at the rename:

    - ``"replace"`` (checkpoints, outputs): the old directory is moved aside and deleted
      only after the new one is in place.
    - ``"keep"`` (content-addressed caches): another process built the same thing first;
      its copy is as good as ours, so ours is discarded.

    On an exception the staging directory is deleted and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield staging
        staging.chmod(_DIRECTORY_MODE)
        try:
            os.replace(staging, target)  # atomic; fails when target is a non-empty directory
        except OSError:
            if not target.exists():
                raise  # not a lost race: something else is wrong
            if if_exists == "replace":
                _swap_in(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staging: Path, target: Path) -> None:
    """Replace the directory ``target`` by ``staging``. Rename cannot overwrite a non-empty
    directory, so the old one is moved aside first and deleted only once the new one is in
    place; if that fails, the old one is put back."""
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, aside / target.name)
    try:
        os.replace(staging, target)
    except OSError:
        os.replace(aside / target.name, target)
        aside.rmdir()
        raise
    shutil.rmtree(aside, ignore_errors=True)


def read_json_file(path: PathArg, what: str = "") -> Any:
    """The JSON value in ``path``; a ``ValueError`` naming the file (and ``what`` it should
    hold) when it is not UTF-8, not JSON, or nested too deeply to read."""
    path = Path(path)
    hint = f" ({what})" if what else ""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}{hint}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset "
            f"{err.start})"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}{hint}: invalid JSON ({err.msg} at line {err.lineno}, column {err.colno})"
        ) from None
    except RecursionError:
        raise ValueError(f"{path}{hint}: invalid JSON (nested too deeply to read)") from None
