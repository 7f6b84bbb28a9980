"""Hostile inputs: time what a policy's or a client's worst text costs, to show it is bounded.

Two parts, each a table of wall-clock figures (run on an idle machine for clean numbers):

**Turns** (default). A policy can emit anything, including text built to make a parser
backtrack. Each case repeats a unit (an unclosed tag, a box, a brace pair, ...) up to a
size in characters and times the protocol's work on it (``parse_turn`` and
``is_valid_format``) and one whole ``env.step`` (which also scores the extracted
answer). Linear parsing shows as a time that doubles, not quadruples, when the size
doubles (the ``xN`` after each figure). The retriever is a stub.

**Network** (``--network``). The retrieval server and client against hostile peers, all
on 127.0.0.1, each case finite: a 400 MB POST (time to the 413, body bytes the server
let in, the server's peak RSS), 500 connections that send nothing or half a request
(time until the server has closed them all), and a server that trickles its answer one
byte every 0.4 s (time until the client gives up, against its ``max_wait_seconds``).

    python -m benchmarks.hostile_inputs [--sizes 128000,256000,512000,1000000] [--repeats 3]
    python -m benchmarks.hostile_inputs --network [--request-timeout 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import select
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from research_env.data.types import Document, QASample
from research_env.env import MultiHopSearchEnv
from research_env.protocol import is_valid_format, parse_turn
from research_env.retrievers.base import SearchHit


def _repeat(prefix: str, unit: str, size: int, suffix: str = "") -> str:
    return prefix + unit * max(1, (size - len(prefix) - len(suffix)) // len(unit)) + suffix


def _numbered(template: str, size: int) -> str:
    """Distinct blocks (``template`` formatted with a counter) up to ``size`` characters."""
    parts, total, i = [], 0, 0
    while total < size:
        part = template.format(i=i)
        parts.append(part)
        total += len(part)
        i += 1
    return "".join(parts)


# name -> builder of a turn of about ``size`` characters.
CASES: dict[str, Callable[[int], str]] = {
    # Unclosed opening tags: each one started a lazy regex scan to the end of the text.
    "unclosed <answer>": lambda n: _repeat("", "<answer>", n),
    "unclosed <search>": lambda n: _repeat("", "<search>", n),
    # Unclosed boxes: each one scanned to the end of the answer for its brace.
    "unclosed \\boxed{": lambda n: _repeat("<answer>", "\\boxed{", n),
    # Brace-dense answers: one closing brace every other character.
    "\\boxed{ + {}...": lambda n: _repeat("<answer>\\boxed{", "{}", n, "}</answer>"),
    "\\boxed{ + {{..}}": lambda n: (
        "<answer>\\boxed{" + "{" * (n // 2) + "}" * (n // 2) + "}</answer>"
    ),
    # Many complete blocks: distinct answers that all extract to the same box.
    "many answers": lambda n: _numbered("<answer>{i}\\boxed{{a}}</answer>", n),
    "many searches": lambda n: _repeat("", "<search>q</search>", n),
    # Tag soup mixing everything above.
    "tag soup": lambda n: _repeat(
        "", "<search><answer>\\boxed{x{</search></answer>}<think>\\boxed{", n
    ),
}


_HITS = [SearchHit(Document("d0", '"Title"\nsome words'), 1.0)]


class _StubRetriever:
    def search(self, queries, k):
        return [_HITS[:k] for _ in queries]


def _best_seconds(run: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def time_protocol(turn: str, repeats: int) -> float:
    """Best-of-``repeats`` seconds for what the env asks of the protocol on one turn."""
    return _best_seconds(lambda: (parse_turn(turn), is_valid_format(turn)), repeats)


def time_step(env: MultiHopSearchEnv, turn: str, repeats: int) -> float:
    """Best-of-``repeats`` seconds for one ``env.step`` on ``turn`` from a fresh episode."""

    def step() -> None:
        env.reset(options={"index": 0})
        env.step(turn)

    return _best_seconds(step, repeats)


def _table(title: str, sizes: list[int], time_turn: Callable[[str], float]) -> None:
    print(f"\n{title}")
    print(f"{'case':<20}" + "".join(f"{f'{s // 1000} KB':>17}" for s in sizes))
    for name, build in CASES.items():
        row, previous = [], None
        for size in sizes:
            seconds = time_turn(build(size))
            growth = f" x{seconds / previous:.1f}" if previous else ""
            row.append(f"{seconds * 1e3:.1f} ms{growth}")
            previous = seconds
        print(f"{name:<20}" + "".join(f"{cell:>17}" for cell in row))


# --------------------------------------------------------------------------- network
HOST = "127.0.0.1"


def _serve(port: int, request_timeout: float) -> None:
    """The child process: ``research-env serve``'s server over the stub retriever."""
    from research_env.retrievers.server import ServerLimits, serve

    serve(
        _StubRetriever(), host=HOST, port=port, limits=ServerLimits(request_timeout=request_timeout)
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _start_server(request_timeout: float, serve: Callable[..., None] = _serve) -> tuple[Any, int]:
    """``serve(port, request_timeout)`` in a child process; (the child, the port) once it
    accepts connections."""
    port = _free_port()
    child = multiprocessing.get_context("spawn").Process(
        target=serve, args=(port, request_timeout), daemon=True
    )
    child.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return child, port
        time.sleep(0.1)
    child.kill()
    raise RuntimeError("the server did not start within 60 s")


def _peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (Linux ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def oversized_post(port: int, size: int = 400_000_000) -> str:
    """POST ``size`` bytes as fast as the server takes them; what happened."""
    sock = socket.create_connection((HOST, port), timeout=30)
    head = f"POST /retrieve HTTP/1.1\r\nhost: x\r\ncontent-length: {size}\r\n\r\n"
    start = time.perf_counter()
    sock.sendall(head.encode())
    sock.setblocking(False)
    chunk, sent, answer = b"x" * (1 << 20), 0, b""
    deadline = time.monotonic() + 120
    while not answer and time.monotonic() < deadline:
        readable, writable, _ = select.select([sock], [sock] if sent < size else [], [], 1.0)
        try:
            if readable:
                answer = sock.recv(65536)
                if not answer:
                    break
            elif writable:
                sent += sock.send(chunk[: size - sent])
        except (BrokenPipeError, ConnectionResetError, BlockingIOError):
            continue
    seconds = time.perf_counter() - start
    sock.close()
    status = answer.split(b" ", 2)[1].decode() if answer else "no answer"
    return f"HTTP {status} after {seconds * 1e3:.0f} ms, {sent / 1e6:.1f} MB of the body sent"


def idle_connections(port: int, count: int = 500, limit_s: float = 120.0) -> str:
    """Open ``count`` connections, half silent and half with half a request head; how
    long until the server has closed every one."""
    socks = []
    for i in range(count):
        sock = socket.create_connection((HOST, port), timeout=10)
        if i % 2:
            sock.sendall(b"POST /retrieve HTTP/1.1\r\nhost: x\r\n")
        sock.setblocking(False)
        socks.append(sock)
    start = time.perf_counter()
    open_socks, last = set(socks), start
    while open_socks and time.perf_counter() - start < limit_s:
        readable, _, _ = select.select(list(open_socks), [], [], 1.0)
        for sock in readable:
            try:
                while sock.recv(65536):
                    pass
            except BlockingIOError:
                continue  # the 408 arrived; the close has not yet
            except ConnectionResetError:
                pass
            open_socks.discard(sock)
            sock.close()
            last = time.perf_counter()
    for sock in open_socks:
        sock.close()
    closed = count - len(open_socks)
    return f"{closed}/{count} closed by the server, the last {last - start:.1f} s after opening"


def _trickle(listener: socket.socket, connections: int, interval: float) -> None:
    """Answer ``connections`` requests in turn, each with a valid Search-R1 answer sent
    one byte every ``interval`` seconds (until the client hangs up)."""
    body = json.dumps({"result": [[{"document": {"id": "x", "contents": "X" * 200}}]]})
    answer = (
        f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n{body}"
    ).encode()
    with listener:
        listener.settimeout(30)
        for _ in range(connections):
            conn, _ = listener.accept()
            with conn, contextlib.suppress(OSError):  # OSError: the client hung up
                conn.recv(65536)
                for i in range(len(answer)):
                    conn.sendall(answer[i : i + 1])
                    time.sleep(interval)


def trickling_server(interval: float = 0.4) -> str:
    """How long a search waits on a server that trickles a byte every ``interval`` s."""
    from research_env.retrievers.http import HttpRetriever, RetrievalError

    listener = socket.create_server((HOST, 0))
    url = f"http://{HOST}:{listener.getsockname()[1]}"
    client = HttpRetriever(url, "search-r1", timeout=1.0, retries=2, backoff=0.1)
    args = (listener, client.retries + 1, interval)
    threading.Thread(target=_trickle, args=args, daemon=True).start()
    start = time.perf_counter()
    try:
        client.search(["q"], 1)
        outcome = "answered"
    except RetrievalError as error:
        outcome = f"RetrievalError ({error.reason.split('; ')[-1]})"
    seconds = time.perf_counter() - start
    return f"{outcome} after {seconds:.1f} s; budget max_wait_seconds {client.max_wait_seconds:g} s"


def network_table(request_timeout: float) -> None:
    child, port = _start_server(request_timeout)
    try:
        rss_before = _peak_rss_mb(child.pid)
        post = oversized_post(port)
        rss_after = _peak_rss_mb(child.pid)
        idle = idle_connections(port)
    finally:
        child.kill()
    trickle = trickling_server()
    print(f"\nserver: request_timeout {request_timeout:g} s, max body 16 MiB\n")
    print("| case | what happened |\n| --- | --- |")
    print(f"| 400 MB POST | {post}; server peak RSS {rss_before:.0f} -> {rss_after:.0f} MB |")
    print(f"| 500 silent / half-sent connections | {idle} |")
    print(f"| server trickling 1 byte / 0.4 s | {trickle} |")


def turn_tables(sizes: list[int], repeats: int) -> None:
    sample = QASample("q0", "Who?", ("a",), {})
    env = MultiHopSearchEnv(dataset=[sample], retriever=_StubRetriever(), max_turns=2)
    _table(
        "parse_turn + is_valid_format (the protocol's share)",
        sizes,
        lambda turn: time_protocol(turn, repeats),
    )
    _table(
        "env.step (adds the reward on the extracted answer)",
        sizes,
        lambda turn: time_step(env, turn, repeats),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="128000,256000,512000,1000000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--network", action="store_true", help="the server and client part")
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=2.0,
        help="--network: the server's request timeout in seconds (default 2)",
    )
    args = parser.parse_args(argv)
    if args.network:
        network_table(args.request_timeout)
    else:
        turn_tables([int(s) for s in args.sizes.split(",")], args.repeats)


if __name__ == "__main__":
    main()
