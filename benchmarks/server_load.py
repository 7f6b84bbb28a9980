"""Loopback load test of ``research-env serve``: micro-batching on vs off.

    python -m benchmarks.server_load --passages 100000 --clients 1 8 64 --requests 4000
    python -m benchmarks.server_load --retriever dense --passages 2000 --requests 600

What it does, all on 127.0.0.1 and with a finite number of requests (it stops by itself):

1. Generates N seeded Zipfian passages (``benchmarks/corpus.py``) and queries drawn from
   them, writes the corpus jsonl, and builds the ``--retriever`` index (BM25 by default,
   or dense MiniLM + flat faiss with one torch thread) once, cached in a temp dir.
2. Measures the in-process rate of the retriever's ``search``: batches of ``--max-batch``
   queries, and one query per call, as the two bounds a server can approach.
3. For batching on and then off, starts the server as a subprocess
   (``python -m research_env.commands.serve``), and for each client count C runs C
   concurrent keep-alive connections, each sending one query per request (Search-R1
   ``/retrieve``, topk 3, with scores) until ``--requests`` requests have been answered.
   It reports throughput (answered queries per second), p50/p99 latency, errors (non-200,
   malformed answer, timeout or dropped connection) and the server's mean batch size
   (from ``/health``).

The load generator is a minimal asyncio HTTP/1.1 client (raw sockets, keep-alive) so
that, on a small machine, the client's own overhead eats as little of the CPU the server
needs as possible. Client and server share the machine (and any other processes on
it); the batching-on/off comparison is measured in the same run, so read the ratio.

Results are printed as markdown and written to the ``## Retrieval server`` section of
``benchmarks/RESULTS.md`` (other sections are left untouched).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from benchmarks.corpus import iter_jsonl_lines, sample_queries, zipf_passages
from benchmarks.results import load_average, publish

SECTION_HEADING = "## Retrieval server"
HOST = "127.0.0.1"


RETRIEVER_NAMES = {"bm25": "BM25", "dense": "Dense (MiniLM, flat faiss, 1 torch thread)"}

# Server stacks: uvicorn's HTTP parser and event loop ("auto" = C ones when installed).
STACKS = {"auto": ("auto", "auto"), "python": ("h11", "asyncio"), "c": ("httptools", "uvloop")}


@dataclass
class LoadResult:
    stack: str
    batching: bool
    clients: int
    requests: int
    seconds: float
    latencies_ms: np.ndarray
    errors: int
    mean_batch: float
    server_cpu_seconds: float
    client_cpu_seconds: float

    @property
    def server_cpu_us_per_query(self) -> float:
        return self.server_cpu_seconds / max(1, self.requests - self.errors) * 1e6

    @property
    def qps(self) -> float:
        return (self.requests - self.errors) / self.seconds

    def percentile(self, q: float) -> float:
        return (
            float(np.percentile(self.latencies_ms, q)) if len(self.latencies_ms) else float("nan")
        )


# ------------------------------------------------------------------------ load client
def request_bytes(query: str, topk: int) -> bytes:
    body = json.dumps({"queries": [query], "topk": topk, "return_scores": True}).encode()
    head = (
        f"POST /retrieve HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


_CONTENT_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.I)


async def one_client(
    port: int, requests: Sequence[bytes], latencies: list[float], timeout: float
) -> int:
    """Send ``requests`` one after another on a keep-alive connection; return errors."""
    errors = 0
    reader, writer = await asyncio.open_connection(HOST, port)
    for request in requests:
        start = time.perf_counter()
        try:
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            match = _CONTENT_LENGTH.search(head)
            body = await asyncio.wait_for(reader.readexactly(int(match.group(1))), timeout)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, AttributeError):
            errors += 1
            writer.close()
            reader, writer = await asyncio.open_connection(HOST, port)
            continue
        latencies.append(time.perf_counter() - start)
        if head[9:12] != b"200" or not body.startswith(b'{"result":[['):
            errors += 1
    writer.close()
    return errors


async def run_load(
    port: int, queries: Sequence[str], clients: int, total: int, topk: int, timeout: float
) -> tuple[float, np.ndarray, int]:
    per_client = -(-total // clients)
    payloads = [request_bytes(q, topk) for q in queries]
    plans = [
        [payloads[(c * per_client + i) % len(payloads)] for i in range(per_client)]
        for c in range(clients)
    ]
    latencies: list[float] = []
    start = time.perf_counter()
    errors = await asyncio.gather(*(one_client(port, p, latencies, timeout) for p in plans))
    seconds = time.perf_counter() - start
    return seconds, np.array(latencies) * 1000.0, sum(errors)


# ------------------------------------------------------------------------------ server
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def get_json(port: int, path: str) -> dict:
    import httpx

    return httpx.get(f"http://{HOST}:{port}{path}", timeout=5).json()


def start_server(
    corpus: Path, index_dir: Path, batching: bool, max_batch: int, stack: str, retriever: str
) -> tuple:
    port = free_port()
    http, loop = STACKS[stack]
    command = [
        sys.executable, "-m", "research_env.commands.serve",
        "--retriever", retriever, "--corpus", str(corpus), "--index-dir", str(index_dir),
        "--host", HOST, "--port", str(port), "--max-batch", str(max_batch),
        "--http", http, "--loop", loop,
    ]  # fmt: skip
    if not batching:
        command.append("--no-batching")
    if retriever == "dense":
        command += ["--torch-threads", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stderr.read().decode()[-2000:]}")
        try:
            get_json(port, "/health")
            return process, port
        except Exception:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not start within 300 s")


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU time of ``process`` and its threads so far."""
    times = process.cpu_times()
    return times.user + times.system


def stack_description(stack: str) -> str:
    """The HTTP parser and event loop uvicorn uses for ``stack`` here."""
    http, loop = STACKS[stack]
    if http == "auto":
        try:
            import httptools  # noqa: F401

            http = "httptools"
        except ImportError:
            http = "h11"
    if loop == "auto":
        try:
            import uvloop  # noqa: F401

            loop = "uvloop"
        except ImportError:
            loop = "asyncio"
    return f"{http} + {loop}"


def c_stack_note() -> str:
    """Versions of the optional C parser/loop, when installed (``uvicorn[standard]``)."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("httptools", "uvloop"):
        with contextlib.suppress(PackageNotFoundError):
            found.append(f"{name} {version(name)}")
    if not found:
        return ""
    return f" C stack: {', '.join(found)} (from `pip install uvicorn[standard]`)."


def run_async(coroutine):
    """``asyncio.run``, on uvloop when installed (a cheaper load generator)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# ------------------------------------------------------------------------------- main
def in_process_rates(
    name: str, corpus: Path, index_dir: Path, queries: list[str], batch: int, k: int
):
    """Search rate in batches and one by one, on the index the server will load."""
    if name == "dense":
        from research_env.retrievers.dense import dense_factory

        retriever = dense_factory(corpus, cache_dir=index_dir, num_threads=1)
        queries = queries[: 4 * batch]  # the encoder is slow: a few batches suffice
    else:
        from research_env.retrievers.bm25 import bm25_for_corpus

        retriever = bm25_for_corpus(corpus, cache_dir=index_dir)
    retriever.search(queries[:batch], k)  # warm
    start = time.perf_counter()
    for i in range(0, len(queries), batch):
        retriever.search(queries[i : i + batch], k)
    batched = len(queries) / (time.perf_counter() - start)
    singles = queries[: min(len(queries), 2000 if name == "bm25" else 200)]
    start = time.perf_counter()
    for q in singles:
        retriever.search([q], k)
    single = len(singles) / (time.perf_counter() - start)
    return batched, single


def one_row(args, stack, batching, clients, process, port, queries) -> LoadResult:
    """One load run of ``--requests`` requests from ``clients`` connections."""
    server_process, client_process = psutil.Process(process.pid), psutil.Process()
    before = get_json(port, "/health")["stats"]
    server_cpu, client_cpu = cpu_seconds(server_process), cpu_seconds(client_process)
    seconds, latencies, errors = run_async(
        run_load(port, queries, clients, args.requests, args.topk, args.timeout)
    )
    server_cpu = cpu_seconds(server_process) - server_cpu
    client_cpu = cpu_seconds(client_process) - client_cpu
    after = get_json(port, "/health")["stats"]
    batches = after["batches"] - before["batches"]
    mean_batch = (after["queries"] - before["queries"]) / batches if batches else 0.0
    return LoadResult(
        stack_description(stack),
        batching,
        clients,
        len(latencies) + errors,
        seconds,
        latencies,
        errors,
        mean_batch,
        server_cpu,
        client_cpu,
    )


def merge(rounds: list[LoadResult]) -> LoadResult:
    """Pool the rounds of one row: total requests over total time, all latencies."""
    first = rounds[0]
    batches = sum(r.requests / r.mean_batch for r in rounds if r.mean_batch)
    return LoadResult(
        first.stack,
        first.batching,
        first.clients,
        sum(r.requests for r in rounds),
        sum(r.seconds for r in rounds),
        np.concatenate([r.latencies_ms for r in rounds]),
        sum(r.errors for r in rounds),
        sum(r.requests for r in rounds) / batches if batches else 0.0,
        sum(r.server_cpu_seconds for r in rounds),
        sum(r.client_cpu_seconds for r in rounds),
    )


def measure(args: argparse.Namespace) -> tuple[list[LoadResult], float, float, float]:
    work = Path(tempfile.mkdtemp(prefix="server_load."))
    corpus = work / "corpus.jsonl"
    print(f"generating {args.passages} passages ...", flush=True)
    documents = zipf_passages(args.passages, seed=0)
    with open(corpus, "w", encoding="utf-8") as handle:
        for line in iter_jsonl_lines(documents):
            handle.write(line + "\n")
    queries = [q.text for q in sample_queries(documents, args.queries, seed=1)]
    del documents
    index_dir = work / "index"
    start = time.perf_counter()
    batched_rate, single_rate = in_process_rates(
        args.retriever, corpus, index_dir, queries, args.max_batch, args.topk
    )
    build_seconds = time.perf_counter() - start
    print(f"in-process: {batched_rate:,.0f} q/s batched, {single_rate:,.0f} q/s one by one")

    results = []
    for stack in args.stacks:
        # Both servers run side by side (an idle one costs nothing) and the rows alternate
        # between them round by round, so a burst of load from other processes on the
        # machine hits batching on and off alike.
        servers = {
            batching: start_server(
                corpus, index_dir, batching, args.max_batch, stack, args.retriever
            )
            for batching in (True, False)
        }
        try:
            for _, port in servers.values():
                run_async(run_load(port, queries, 4, 200, args.topk, args.timeout))  # warm up
            for clients in args.clients:
                rounds: dict[bool, list[LoadResult]] = {True: [], False: []}
                for _ in range(args.rounds):
                    for batching, (process, port) in servers.items():
                        rounds[batching].append(
                            one_row(args, stack, batching, clients, process, port, queries)
                        )
                for batching in (True, False):
                    result = merge(rounds[batching])
                    results.append(result)
                    print(
                        f"{result.stack}: batching={'on ' if batching else 'off'} "
                        f"clients={clients:3d}: "
                        f"{result.qps:8,.0f} q/s  p50 {result.percentile(50):6.1f} ms  "
                        f"p99 {result.percentile(99):6.1f} ms  errors {result.errors}  "
                        f"mean batch {result.mean_batch:.1f}  server CPU "
                        f"{result.server_cpu_us_per_query:.0f} us/q",
                        flush=True,
                    )
        finally:
            for process, _ in servers.values():
                stop_server(process)
    return results, batched_rate, single_rate, build_seconds


def markdown(args, results, batched_rate, single_rate) -> str:
    by_key = {(r.stack, r.batching, r.clients): r for r in results}
    stacks = list(dict.fromkeys(r.stack for r in results))
    lines = [
        f"### {RETRIEVER_NAMES[args.retriever].split(' (')[0]}",
        "",
        f"Command: `python -m benchmarks.server_load --retriever {args.retriever} "
        f"--passages {args.passages} --clients "
        f"{' '.join(map(str, args.clients))} --requests {args.requests} --rounds "
        f"{args.rounds} --stacks "
        f"{' '.join(args.stacks)}` ({dt.date.today().isoformat()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs shared with other agents' jobs, Python "
        f"{platform.python_version()}).",
        "",
        f"{RETRIEVER_NAMES[args.retriever]} over {args.passages:,} synthetic Zipfian "
        "passages, one query per request "
        f"(Search-R1 `/retrieve`, topk {args.topk}, scores on), {args.rounds} x "
        f"{args.requests:,} requests per row over loopback, the rounds alternating between "
        "the batching and non-batching servers (both running) and pooled. The load generator (asyncio, raw keep-alive sockets) runs on the "
        "same CPUs as the server. Stack = uvicorn's HTTP parser + event loop. Speed-up = "
        "batching on / off at the same stack and client count, measured in the same run. "
        f"Load average at start: {args.load_at_start}.{c_stack_note()}",
        "",
        "| stack | clients | batching | q/s | p50 ms | p99 ms | errors | mean batch "
        "| server CPU µs/query | speed-up |",
        "|:---|---:|:---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for stack in stacks:
        for clients in args.clients:
            for batching in (True, False):
                r = by_key.get((stack, batching, clients))
                if r is None:
                    continue
                off = by_key.get((stack, False, clients))
                ratio = f"{r.qps / off.qps:.1f}x" if batching and off else ""
                lines.append(
                    f"| {stack} | {clients} | {'on' if batching else 'off'} | {r.qps:,.0f} | "
                    f"{r.percentile(50):.1f} | {r.percentile(99):.1f} | {r.errors} | "
                    f"{r.mean_batch:.1f} | {r.server_cpu_us_per_query:.0f} | {ratio} |"
                )
    most = max(args.clients)
    for stack in stacks:
        on, off = by_key.get((stack, True, most)), by_key.get((stack, False, most))
        if on and off:
            lines += [
                "",
                f"At {most} clients ({stack}) batching spent {on.server_cpu_us_per_query:.0f} "
                f"µs of server CPU per query against {off.server_cpu_us_per_query:.0f} "
                f"without ({off.server_cpu_us_per_query / on.server_cpu_us_per_query:.1f}x "
                "less): the load-independent measure of what it saves; throughput also "
                "depends on how much CPU the other processes leave.",
            ]
    lines += [
        "",
        f"In-process `search` of the same retriever: {batched_rate:,.0f} q/s in "
        f"batches of {args.max_batch}, {single_rate:,.0f} q/s one query per call: the ceiling "
        "a server on one retriever thread can approach; HTTP parsing and JSON encoding are "
        "the rest of its cost.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.server_load",
        description="Loopback load test of the retrieval server, micro-batching on vs off.",
    )
    parser.add_argument("--retriever", choices=sorted(RETRIEVER_NAMES), default="bm25")
    parser.add_argument("--passages", type=int, default=100_000, help="corpus size")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--requests", type=int, default=4000, help="requests per row")
    parser.add_argument("--queries", type=int, default=20_000, help="distinct queries drawn")
    parser.add_argument("--topk", type=int, default=3)
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per row (pooled)")
    parser.add_argument(
        "--stacks",
        nargs="+",
        choices=sorted(STACKS),
        default=["auto"],
        help="uvicorn stacks to compare: auto (what is installed), python (h11 + asyncio), "
        "c (httptools + uvloop, needs uvicorn[standard])",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (s)")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    args.load_at_start = load_average()
    results, batched_rate, single_rate, _ = measure(args)
    section = markdown(args, results, batched_rate, single_rate)
    publish(section, within=SECTION_HEADING, write=not args.no_write)


if __name__ == "__main__":
    main()
