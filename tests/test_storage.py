"""research_env.storage: the cache root, atomic files and directories, content hashes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from research_env.storage import atomic_directory, atomic_file, cache_root, file_sha256


def test_cache_root_prefers_the_argument_then_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RESEARCH_GYM_CACHE", str(tmp_path / "env"))
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    assert cache_root() == tmp_path / "env"
    monkeypatch.delenv("RESEARCH_GYM_CACHE")
    assert cache_root() == Path.home() / ".cache" / "research-gym"


def test_file_sha256_is_the_hash_of_the_bytes(tmp_path):
    path = tmp_path / "corpus.jsonl"
    payload = os.urandom(5 << 20)  # more than one read block
    path.write_bytes(payload)
    assert file_sha256(path) == hashlib.sha256(payload).hexdigest()


def test_atomic_file_replaces_whole_and_is_readable_by_others(tmp_path):
    path = tmp_path / "sub" / "data.jsonl"
    with atomic_file(path) as staging:
        staging.write_text("new\n")
        assert not path.exists()  # nothing visible until the block succeeds
    assert path.read_text() == "new\n"
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["data.jsonl"]


def test_atomic_file_failure_keeps_the_old_file_and_no_staging(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_file(path) as staging:
        staging.write_text("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["data.jsonl"]


def fill(directory: Path, text: str) -> None:
    (directory / "file.txt").write_text(text)


def test_atomic_directory_replace_swaps_in_the_new_one(tmp_path):
    target = tmp_path / "step-1"
    with atomic_directory(target) as staging:
        fill(staging, "first")
    with atomic_directory(target, if_exists="replace") as staging:
        fill(staging, "second")
    assert (target / "file.txt").read_text() == "second"
    assert target.stat().st_mode & 0o777 == 0o755
    assert [p.name for p in tmp_path.iterdir()] == ["step-1"]


def test_atomic_directory_keep_leaves_the_first_finished_copy(tmp_path):
    target = tmp_path / "index"
    with atomic_directory(target, if_exists="keep") as staging:
        fill(staging, "first")
    with atomic_directory(target, if_exists="keep") as staging:
        fill(staging, "lost the race")
    assert (target / "file.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["index"]


@pytest.mark.parametrize("if_exists", ["replace", "keep"])
def test_atomic_directory_failure_leaves_target_as_it_was(tmp_path, if_exists):
    target = tmp_path / "ckpt"
    with atomic_directory(target) as staging:
        fill(staging, "good")
    with pytest.raises(OSError, match="disk full"), atomic_directory(target, if_exists) as staging:
        fill(staging, "partial")
        raise OSError("disk full")
    assert (target / "file.txt").read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
