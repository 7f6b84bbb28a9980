"""Claims on units of work in a shared directory, so that several processes (two cores of
one box, or several machines on a shared disk) can run the same ``research-env ablate``
command on one ``--out`` and split its runs instead of repeating them.

A claim is a file ``<name>.lock`` beside the unit's directory, created with ``O_EXCL`` (only
one process can create it) and holding who took it. A claim whose process has ended on this
host is stale and is taken over; one from another host cannot be checked from here and is
respected until someone removes it (the message says which file).
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def lock_path(unit: Path) -> Path:
    return unit.with_name(unit.name + ".lock")


def holder(unit: Path) -> dict[str, Any] | None:
    """Who holds ``unit``'s claim (pid, host, since), or None when it is free."""
    try:
        text = lock_path(unit).read_text(encoding="utf-8")
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
    """True when the claim was made on this host by a process that no longer runs."""
    return claim.get("host") == socket.gethostname() and not _alive(claim.get("pid"))


def claim(unit: Path) -> bool:
    """Take ``unit``'s claim for this process; False when a live process holds it. A stale
    claim (its process ended on this host) is replaced."""
    lock = lock_path(unit)
    lock.parent.mkdir(parents=True, exist_ok=True)
    payload = {"pid": os.getpid(), "host": socket.gethostname(),
               "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            held = holder(unit)
            if held is None:
                continue  # released meanwhile: try again
            if held.get("pid") == os.getpid() and held.get("host") == payload["host"]:
                return True
            if not is_stale(held):
                return False
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f)
        return True
    return False


def release(unit: Path) -> None:
    """Drop this process's claim on ``unit`` (another process's claim is left alone)."""
    held = holder(unit)
    if held and held.get("pid") == os.getpid() and held.get("host") == socket.gethostname():
        lock_path(unit).unlink(missing_ok=True)


def describe(unit: Path) -> str:
    held = holder(unit) or {}
    return (f"held by pid {held.get('pid')} on {held.get('host')} since {held.get('since')} "
            f"(remove {lock_path(unit)} if that process is gone)")  # fmt: skip
