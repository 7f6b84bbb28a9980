"""A burst of concurrent clients against ``research-env serve`` and, when given its file,
Search-R1's own ``retrieval_server.py``: same corpus, same BM25, same machine, same run.

    python -m benchmarks.server_burst [--clients 64] [--requests 20] [--rounds 2] \\
        [--corpus synthetic] [--search-r1 path/to/search_r1/search/retrieval_server.py]

All clients connect first, then start together (the burst) and each sends ``--requests``
Search-R1 requests (one query, topk 3, scores on) back to back on its keep-alive
connection. The table gives answered queries per second over the burst, p50 / p99 / max
latency and errors (non-200 or a malformed answer). Rounds alternate the servers, both
running throughout, and are pooled; the queries are the questions of the synthetic dev
split. Everything binds 127.0.0.1 and stops by itself.

Search-R1's BM25 path searches with pyserini's ``LuceneSearcher``, which runs Lucene in a
JVM. This benchmark keeps to Python packages from PyPI, so it imports Search-R1's file
unchanged with a stand-in ``pyserini.search.lucene`` module whose ``LuceneSearcher``
answers from the same BM25 index ``research-env serve`` uses (bm25s). What differs is
then only the server: Search-R1's FastAPI endpoint (a sync ``def``, one thread per
request from the thread pool, one search call per query) against ours (micro-batching).
Its imports (faiss, torch, transformers, datasets) must be installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

HOST = "127.0.0.1"
TOPK = 3


# --------------------------------------------------------------- the servers
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _wait_until_serving(process: subprocess.Popen[bytes], port: int, name: str) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode} before serving")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{name} did not start serving within 180 s")


def start_ours(corpus: Path, index_dir: Path, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "research_env.commands.serve", "--corpus", str(corpus)]
    command += ["--index-dir", str(index_dir), "--port", str(port), "--default-topk", str(TOPK)]
    return subprocess.Popen(command, stderr=subprocess.DEVNULL)


def start_search_r1(
    server_file: Path, corpus: Path, index_dir: Path, port: int
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.server_burst",
        "--_run-search-r1",
        str(server_file),
    ]
    command += ["--corpus", str(corpus), "--index-dir", str(index_dir), "--_port", str(port)]
    return subprocess.Popen(command, stderr=subprocess.DEVNULL)


class _LuceneStandIn:
    """The slice of pyserini's ``LuceneSearcher`` that Search-R1's BM25 path calls
    (``search(query, k)`` -> hits with ``docid`` and ``score``; ``doc(docid).raw()``),
    answered by our BM25 over the same corpus."""

    retriever: Any = None  # set before Search-R1's module builds its retriever

    def __init__(self, _index_path: str) -> None:
        self._raw: dict[str, str] = {}

    def search(self, query: str, k: int) -> list[Any]:
        hits = self.retriever.search([query], k)[0]
        for hit in hits:
            doc = hit.document
            self._raw[doc.id] = json.dumps({"id": doc.id, "contents": doc.contents})
        return [types.SimpleNamespace(docid=h.document.id, score=h.score) for h in hits]

    def doc(self, docid: Any) -> Any:
        if docid == 0:  # Search-R1 asks doc(0) once to learn that documents are stored
            return types.SimpleNamespace(raw=lambda: "{}")
        return types.SimpleNamespace(raw=lambda: self._raw[docid])


def run_search_r1(server_file: Path, corpus: Path, index_dir: Path, port: int) -> None:
    """The Search-R1 server process: its module, unchanged, over the stand-in searcher."""
    import uvicorn

    from research_env.sources import RETRIEVERS

    _LuceneStandIn.retriever = RETRIEVERS["bm25"](corpus, cache_dir=index_dir)
    lucene = types.ModuleType("pyserini.search.lucene")
    lucene.LuceneSearcher = _LuceneStandIn  # type: ignore[attr-defined]
    for name in ("pyserini", "pyserini.search"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["pyserini.search.lucene"] = lucene
    spec = importlib.util.spec_from_file_location("search_r1_retrieval_server", server_file)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot import {server_file}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # What its __main__ block does (its endpoint reads these module globals), with BM25.
    config = module.Config(
        retrieval_method="bm25",
        retrieval_topk=TOPK,
        index_path=str(index_dir),
        corpus_path=str(corpus),
        faiss_gpu=False,
    )
    module.__dict__.update(config=config, retriever=module.get_retriever(config))
    uvicorn.run(module.app, host=HOST, port=port, log_level="warning")


# ------------------------------------------------------------------ the burst
async def _post(reader: Any, writer: Any, body: bytes) -> tuple[int, bytes]:
    head = (
        f"POST /retrieve HTTP/1.1\r\nhost: {HOST}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    status_line = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return int(status_line.split()[1]), await reader.readexactly(length)


def _answer_docs(status: int, payload: bytes) -> list[str] | None:
    """The top documents' contents in a one-query answer, or None when it is malformed.
    (Contents, not ids: Search-R1 answers a stored Lucene document without its id.)"""
    if status != 200:
        return None
    try:
        hits = json.loads(payload)["result"][0]
        return [str(h["document"]["contents"]) for h in hits]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


async def _client(port: int, queries: list[str], start: asyncio.Event, out: dict) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    await start.wait()
    try:
        for query in queries:
            body = json.dumps({"queries": [query], "topk": TOPK, "return_scores": True})
            began = time.perf_counter()
            try:
                status, payload = await asyncio.wait_for(_post(reader, writer, body.encode()), 60)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
                out["errors"] += 1
                return
            out["latencies"].append(time.perf_counter() - began)
            if _answer_docs(status, payload) is None:
                out["errors"] += 1
    finally:
        writer.close()


async def burst(port: int, plans: list[list[str]]) -> dict[str, Any]:
    """Every client connects, then all start at once; latencies and the burst's length."""
    out: dict[str, Any] = {"latencies": [], "errors": 0}
    start = asyncio.Event()
    tasks = [asyncio.create_task(_client(port, plan, start, out)) for plan in plans]
    await asyncio.sleep(0.5)  # let every connection open
    began = time.perf_counter()
    start.set()
    await asyncio.gather(*tasks)
    out["seconds"] = time.perf_counter() - began
    return out


async def top_docs(port: int, queries: list[str]) -> list[list[str] | None]:
    reader, writer = await asyncio.open_connection(HOST, port)
    answers = []
    for query in queries:
        body = json.dumps({"queries": [query], "topk": TOPK, "return_scores": True}).encode()
        answers.append(_answer_docs(*await _post(reader, writer, body)))
    writer.close()
    return answers


# ---------------------------------------------------------------------- main
def _row(name: str, runs: list[dict[str, Any]], clients: int) -> str:
    latencies = np.array([x for run in runs for x in run["latencies"]]) * 1e3
    answered = len(latencies)
    seconds = sum(run["seconds"] for run in runs)
    errors = sum(run["errors"] for run in runs)
    p50, p99 = np.percentile(latencies, [50, 99]) if answered else (float("nan"),) * 2
    worst = latencies.max() if answered else float("nan")
    return (
        f"| {name} | {clients} | {answered / seconds:,.0f} | {p50:.1f} | {p99:.1f} | "
        f"{worst:.1f} | {errors} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=20, help="requests per client")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--corpus", default="synthetic", help="dataset name or corpus jsonl")
    parser.add_argument("--search-r1", type=Path, default=None, help="its retrieval_server.py")
    parser.add_argument("--index-dir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_run-search-r1", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from research_env import data
    from research_env.commands.serve import corpus_file

    if args._run_search_r1 is not None:
        run_search_r1(args._run_search_r1, Path(args.corpus), args.index_dir, args._port)
        return

    index_dir = Path(tempfile.mkdtemp(prefix="server-burst-"))
    corpus = corpus_file(Path(args.corpus), index_dir)
    questions = [s.question for s in data.load_split("synthetic", "dev")]
    plans = [
        [questions[(c * args.requests + i) % len(questions)] for i in range(args.requests)]
        for c in range(args.clients)
    ]
    servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        port = _free_port()
        servers["research-env serve"] = (start_ours(corpus, index_dir, port), port)
        _wait_until_serving(*servers["research-env serve"], "research-env serve")
        if args.search_r1 is not None:
            port = _free_port()
            servers["Search-R1 retrieval_server.py"] = (
                start_search_r1(args.search_r1.resolve(), corpus, index_dir, port),
                port,
            )
            _wait_until_serving(*servers["Search-R1 retrieval_server.py"], "Search-R1")
        check = questions[:50]
        answers = {name: asyncio.run(top_docs(port, check)) for name, (_, port) in servers.items()}
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
        load = os.getloadavg()
        for _ in range(args.rounds):
            for name, (_, port) in servers.items():
                runs[name].append(asyncio.run(burst(port, plans)))
    finally:
        for process, _ in servers.values():
            process.kill()
    with open(corpus, encoding="utf-8") as lines:
        n_docs = sum(1 for _ in lines)
    print(
        f"\n{args.clients} clients x {args.requests} requests, {args.rounds} rounds, "
        f"{n_docs:,} documents ({args.corpus}), load average at start "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}\n"
    )
    print("| server | clients | q/s | p50 ms | p99 ms | max ms | errors |")
    print("|:---|---:|---:|---:|---:|---:|---:|")
    for name, server_runs in runs.items():
        print(_row(name, server_runs, args.clients))
    if len(answers) == 2:
        ours, theirs = answers.values()
        same = sum(a == b and a is not None for a, b in zip(ours, theirs, strict=True))
        print(f"\nSame top-{TOPK} documents from both servers on {same}/{len(check)} queries.")


if __name__ == "__main__":
    main()
