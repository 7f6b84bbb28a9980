"""Claims on units of work in a shared directory, so that several processes (two cores of
one box, or several machines on a shared disk) can run the same ``research-env ablate``
command on one ``--out`` and split its runs instead of repeating them.

A claim is a file ``<name>.lock`` beside the unit's directory, holding who took it. It is
written whole under a private name and then hard-linked into place (a link cannot replace
an existing file: only one process creates it, and it is never seen empty or half written).
A claim whose process has ended on this host is stale and is taken over; one from another
host cannot be checked from here and is respected until someone removes it (the message
says which file). An empty claim file (a writer that died between creating and writing it)
is stale once it is :data:`EMPTY_GRACE_S` seconds old.

A takeover checks and replaces the stale claim while holding an exclusive ``flock`` on
``<name>.lock.guard`` (a file that stays), so two processes that both found the claim
stale cannot each remove the other's fresh one: the second sees the first's live claim.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

EMPTY_GRACE_S = 10.0  # an empty claim file older than this is a writer that died


def lock_path(unit: Path) -> Path:
    return unit.with_name(unit.name + ".lock")


def holder(unit: Path) -> dict[str, Any] | None:
    """Who holds ``unit``'s claim (pid, host, since), or None when it is free."""
    lock = lock_path(unit)
    try:
        text = lock.read_text(encoding="utf-8")
        if not text:
            age = time.time() - lock.stat().st_mtime
            return {"pid": None, "host": None, "since": None, "empty_for": age}
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None  # being written this instant, or torn: treat as held by an unknown
    return data if isinstance(data, dict) else {"pid": None, "host": None, "since": None}


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # unknown: do not take it over
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(claim: dict[str, Any]) -> bool:
    """True when the claim was made on this host by a process that no longer runs, or is
    an empty file older than :data:`EMPTY_GRACE_S`."""
    if claim.get("empty_for") is not None:
        return float(claim["empty_for"]) > EMPTY_GRACE_S
    return claim.get("host") == socket.gethostname() and not _alive(claim.get("pid"))


def claim(unit: Path) -> bool:
    """Take ``unit``'s claim for this process; False when a live process holds it. A stale
    claim (its process ended on this host) is replaced."""
    lock = lock_path(unit)
    lock.parent.mkdir(parents=True, exist_ok=True)
    payload = {"pid": os.getpid(), "host": socket.gethostname(),
               "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
    for _ in range(2):
        if _create(lock, payload):
            return True
        held = holder(unit)
        if held is None:
            continue  # released meanwhile: try again
        if _mine(held):
            return True
        if not is_stale(held):
            return False
        with _guard(lock):  # check again and replace, one process at a time
            held = holder(unit)
            if held is not None:
                if _mine(held):
                    return True
                if not is_stale(held):
                    return False
                lock.unlink(missing_ok=True)
            if _create(lock, payload):
                return True
    return False


def _mine(held: dict[str, Any]) -> bool:
    return held.get("pid") == os.getpid() and held.get("host") == socket.gethostname()


def _create(lock: Path, payload: dict[str, Any]) -> bool:
    """Create ``lock`` holding ``payload`` unless it exists: written under a private name,
    then linked into place whole."""
    private = lock.with_name(f"{lock.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    private.write_text(json.dumps(payload), encoding="utf-8")
    try:
        os.link(private, lock)
        return True
    except FileExistsError:
        return False
    except OSError:  # a filesystem without hard links: create exclusively, then write
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f)
        return True
    finally:
        private.unlink(missing_ok=True)


@contextlib.contextmanager
def _guard(lock: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``<lock>.guard`` for the duration (the file stays)."""
    import fcntl

    fd = os.open(lock.with_name(lock.name + ".guard"), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def release(unit: Path) -> None:
    """Drop this process's claim on ``unit`` (another process's claim is left alone)."""
    held = holder(unit)
    if held and _mine(held):
        lock_path(unit).unlink(missing_ok=True)


def describe(unit: Path) -> str:
    held = holder(unit) or {}
    return (f"held by pid {held.get('pid')} on {held.get('host')} since {held.get('since')} "
            f"(remove {lock_path(unit)} if that process is gone)")  # fmt: skip
