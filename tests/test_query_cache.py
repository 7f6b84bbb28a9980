"""The persistent query cache: replays identical hits without calling the inner
retriever, survives a process restart, keys on the retriever's fingerprint, and reports its
hit rate in the env's final info."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from world import DOCS, SAMPLES, KeywordRetriever

from research_env.env import MultiHopSearchEnv
from research_env.retrievers.controls import RandomRetriever
from research_env.retrievers.query_cache import (
    PersistentCachedRetriever,
    QueryCacheError,
    with_query_cache,
)
from research_env.vector import SearchVectorEnv

QUERIES = ["Brisa Telk company", "Quimby Forge headquarters", "The Glass Tide author"]


def test_replay_returns_identical_hits_without_calling_the_inner_retriever(tmp_path):
    inner = KeywordRetriever()
    cache = PersistentCachedRetriever(inner, tmp_path / "q.sqlite")
    first = cache.search(QUERIES, 2)
    assert len(inner.calls) == 1 and cache.misses == 3 and cache.hits == 0
    again = cache.search(QUERIES, 2)
    assert again == first and len(inner.calls) == 1
    assert cache.hits == 3 and cache.hit_rate == 0.5
    # Another k is another key.
    cache.search(QUERIES[:1], 1)
    assert len(inner.calls) == 2


def test_repeats_within_a_call_go_to_the_inner_retriever_once(tmp_path):
    inner = KeywordRetriever()
    cache = PersistentCachedRetriever(inner, tmp_path / "q.sqlite")
    hits = cache.search([QUERIES[0], QUERIES[0], QUERIES[1]], 2)
    assert inner.calls == [[QUERIES[0], QUERIES[1]]]
    assert hits[0] == hits[1] and (cache.hits, cache.misses) == (1, 2)


def test_the_cache_survives_a_restart(tmp_path):
    path = tmp_path / "q.sqlite"
    first = PersistentCachedRetriever(KeywordRetriever(), path)
    expected = first.search(QUERIES, 2)
    first.close()
    # A new process replays the file: its retriever raises if it is ever called.
    tests_dir = Path(__file__).parent
    script = f"""
import sys; sys.path.insert(0, {str(tests_dir)!r})
from research_env.retrievers.query_cache import PersistentCachedRetriever
class Never:
    def fingerprint(self):
        return __import__("research_env.fingerprint", fromlist=["x"]).describe_retriever(
            __import__("world").KeywordRetriever())
    def search(self, queries, k):
        raise AssertionError("the inner retriever was called")
cache = PersistentCachedRetriever(Never(), {str(path)!r})
hits = cache.search({QUERIES!r}, 2)
print([[h.document.id for h in row] for row in hits], cache.hit_rate)
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ids = [[h.document.id for h in row] for row in expected]
    assert out.strip() == f"{ids} 1.0"
    # Reopened in this process too: identical hits, scores included.
    reopened = PersistentCachedRetriever(KeywordRetriever(), path)
    assert reopened.search(QUERIES, 2) == expected and reopened.hit_rate == 1.0
    assert reopened.stats()["entries"] == 3


def test_another_retriever_configuration_never_reads_the_entries(tmp_path):
    path = tmp_path / "q.sqlite"
    seeded = PersistentCachedRetriever(RandomRetriever(DOCS, seed=0), path)
    seeded.search(QUERIES, 2)
    other = PersistentCachedRetriever(RandomRetriever(DOCS, seed=1), path)
    other.search(QUERIES, 2)
    assert other.misses == 3 and other.hits == 0
    assert other.fingerprint() == {"name": "random", "documents": 4, "seed": 1}


def test_env_reports_the_hit_rate_in_the_final_info(tmp_path):
    path = tmp_path / "q.sqlite"
    inner = KeywordRetriever()
    env = MultiHopSearchEnv(dataset=SAMPLES, retriever=inner, retriever_cache=path, max_turns=3)
    assert isinstance(env.retriever, PersistentCachedRetriever)
    infos = []
    for _ in range(2):
        env.reset(options={"index": 1})
        env.step("<search>Who wrote The Glass Tide?</search>")
        *_, info = env.step("<answer>\\boxed{Tamsy Orr}</answer>")
        infos.append(info)
    assert len(inner.calls) == 1
    assert infos[0]["retrieval_cache_hit_rate"] == 0.0
    assert infos[1]["retrieval_cache_hit_rate"] == 0.5
    # No cache, no key.
    plain = MultiHopSearchEnv(dataset=SAMPLES, retriever=KeywordRetriever(), max_turns=3)
    plain.reset(options={"index": 1})
    *_, info = plain.step("<answer>\\boxed{Orr}</answer>")
    assert "retrieval_cache_hit_rate" not in info


def test_vector_env_shares_one_cache_and_reports_it(tmp_path):
    path = tmp_path / "q.sqlite"
    envs = SearchVectorEnv(
        2, autoreset_mode="Disabled", dataset=SAMPLES, retriever=KeywordRetriever(),
        retriever_cache=path, max_turns=3,
    )  # fmt: skip
    assert envs.envs[0].retriever is envs.envs[1].retriever
    assert with_query_cache(envs.envs[0].retriever, path) is envs.envs[0].retriever
    envs.reset(options={"index": 1})
    envs.step(["<search>Who wrote The Glass Tide?</search>"] * 2)
    *_, infos = envs.step(["<answer>\\boxed{Orr}</answer>"] * 2)
    assert list(infos["retrieval_cache_hit_rate"]) == [0.5, 0.5]
    ended = envs.resized(2)
    ended.reset(options={"index": 1})
    outcomes = ended.end_early([0, 1])
    assert all("retrieval_cache_hit_rate" in o.info for o in outcomes.values())


# ------------------------------------------------------------------ damaged and read-only
def test_a_file_that_is_not_a_database_is_an_error_naming_it(tmp_path):
    path = tmp_path / "q.sqlite"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(QueryCacheError, match=rf"query cache {re.escape(str(path))}: .*delete"):
        PersistentCachedRetriever(KeywordRetriever(), path)


def test_a_damaged_database_is_an_error_naming_it(tmp_path):
    path = tmp_path / "q.sqlite"
    cache = PersistentCachedRetriever(KeywordRetriever(), path)
    cache.search([f"query {i}" for i in range(300)], 2)
    cache.close()
    data = bytearray(path.read_bytes())
    data[4096:] = b"\xff" * (len(data) - 4096)  # every page after the first
    path.write_bytes(bytes(data))
    with pytest.raises(QueryCacheError, match=re.escape(str(path))):
        PersistentCachedRetriever(KeywordRetriever(), path).search(QUERIES, 2)


def test_a_row_that_does_not_decode_is_a_miss(tmp_path):
    path = tmp_path / "q.sqlite"
    inner = KeywordRetriever()
    cache = PersistentCachedRetriever(inner, path)
    expected = cache.search(QUERIES, 2)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE hits SET hits = '{not json' WHERE query = ?", (QUERIES[0],))
    again = cache.search(QUERIES, 2)
    assert again == expected
    assert inner.calls[-1] == [QUERIES[0]] and cache.hits == 2
    assert cache.search(QUERIES, 2) == expected and len(inner.calls) == 2  # stored again


@contextlib.contextmanager
def read_only(*paths):
    """Make ``paths`` unwritable: mode bits, or (as root, whom they do not stop) the
    immutable attribute; skips where neither is possible."""
    if os.geteuid() != 0:
        modes = [p.stat().st_mode for p in paths]
        for p in paths:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p, mode in zip(paths, modes, strict=True):
                p.chmod(mode)
        return
    if shutil.which("chattr") is None:
        pytest.skip("running as root without chattr: cannot make a file read-only")
    done = []
    try:
        for p in paths:
            if subprocess.run(["chattr", "+i", str(p)], capture_output=True).returncode:
                pytest.skip("chattr +i is not supported here")
            done.append(p)
        yield
    finally:
        for p in done:
            subprocess.run(["chattr", "-i", str(p)], check=True)


@pytest.mark.parametrize("what", ["file", "directory"])
def test_a_read_only_cache_serves_its_hits_and_passes_misses_through(tmp_path, what):
    folder = tmp_path / "shipped"
    path = folder / "q.sqlite"
    first = PersistentCachedRetriever(KeywordRetriever(), path)
    expected = first.search(QUERIES[:2], 2)
    first.close()
    locked = (path,) if what == "file" else (folder,)
    with read_only(*locked):
        inner = KeywordRetriever()
        with pytest.warns(RuntimeWarning, match="read-only") as warned:
            cache = PersistentCachedRetriever(inner, path)
            hits = cache.search(QUERIES, 2)
            cache.search(QUERIES, 2)
        assert hits[:2] == expected and cache.read_only
        assert inner.calls == [[QUERIES[2]], [QUERIES[2]]]  # misses pass through, not stored
        assert len([w for w in warned if "read-only" in str(w.message)]) == 1
        cache.close()
