"""Hostile readers: clients that never read their answer, and answers too large to read.

Two figures, all on 127.0.0.1, each case finite:

**Server.** ``research-env serve``'s server (its own process, a retriever answering ``k``
hits of 400 characters, ``--max-connections 8``, ``--send-timeout S``) against: the one
request of 1,024 queries x topk 100 (time to its answer); then ``--clients`` clients that
each ask for 256 queries x topk 100 (25,600 hits, the default cap) with a 4 KiB receive
buffer and never read (time until a fresh client is served, time until the server has
closed every held connection, the server's peak RSS).

**Client.** ``HttpRetriever`` (default ``max_answer_bytes``, 64 MiB) against a server that
streams an endless chunked answer: time to the error, and this process's peak RSS.

    python -m benchmarks.hostile_readers [--clients 32] [--send-timeout 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import threading
import time

from benchmarks.hostile_inputs import HOST, _peak_rss_mb, _start_server
from research_env.data.types import Document
from research_env.retrievers.base import SearchHit


class _BulkRetriever:
    """``k`` hits of 400 characters for every query (a 256 x 100 answer is about 11 MB)."""

    def search(self, queries: list[str], k: int) -> list[list[SearchHit]]:
        return [[SearchHit(Document(f"d{i}", "x" * 400), 1.0) for i in range(k)] for _ in queries]


def _serve(port: int, send_timeout: float) -> None:
    from research_env.retrievers.server import ServerLimits, serve

    limits = ServerLimits(max_connections=8, send_timeout=send_timeout)
    serve(_BulkRetriever(), host=HOST, port=port, limits=limits)


def _request(queries: int, topk: int) -> bytes:
    body = json.dumps({"queries": [f"q{i}" for i in range(queries)], "topk": topk}).encode()
    head = f"POST /retrieve HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


def _status(sock: socket.socket) -> int:
    """The status of the response arriving on ``sock`` (reads only its first line)."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return 0
        data += chunk
    return int(data.split(b" ", 2)[1])


def _peek_status(sock: socket.socket) -> int:
    """The status of the answer waiting on ``sock``, without reading it (the client stays
    a non-reader); 0 when the connection ended first."""
    data, deadline = b"", time.monotonic() + 60
    while b"\r\n" not in data and time.monotonic() < deadline:
        try:
            data = sock.recv(64, socket.MSG_PEEK)
        except ConnectionResetError:
            return 0
        if not data:
            return 0
    return int(data.split(b" ", 2)[1]) if b"\r\n" in data else 0


def _read_to_end(sock: socket.socket) -> int:
    received = 0
    with contextlib.suppress(OSError):
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
    return received


def server_case(clients: int, send_timeout: float) -> list[str]:
    child, port = _start_server(send_timeout, _serve)
    rows = []
    try:
        rss_before = _peak_rss_mb(child.pid)
        with socket.create_connection((HOST, port), timeout=30) as sock:
            start = time.perf_counter()
            sock.sendall(_request(1024, 100))
            status = _status(sock)
            rows.append(
                f"| 1 request of 1,024 queries x topk 100 | HTTP {status} after "
                f"{(time.perf_counter() - start) * 1e3:.0f} ms |"
            )
        held, statuses = [], []
        start = time.perf_counter()
        for _ in range(clients):  # in turn: each waits for its answer to start
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((HOST, port))
            sock.sendall(_request(256, 100))
            held.append(sock)
            statuses.append(_peek_status(sock))
        sent = time.perf_counter()
        served = None
        while served is None and time.perf_counter() - sent < 120:
            with socket.create_connection((HOST, port), timeout=30) as fresh:
                fresh.sendall(_request(1, 3))
                if _status(fresh) == 200:
                    served = time.perf_counter() - sent
            time.sleep(0.02)
        answered = [s for s, status in zip(held, statuses, strict=True) if status == 200]
        time.sleep(send_timeout + 1.0)  # past every answer's send deadline
        got = [_read_to_end(sock) for sock in answered]  # now read: what was left of each
        whole = 256 * 100 * 400  # an answer's document text alone
        for sock in held:
            sock.close()
        rss_peak = _peak_rss_mb(child.pid)
        shown = "never" if served is None else f"{served:.1f} s after the last request"
        rows.append(
            f"| {clients} clients in turn asking 256 x 100 hits (11 MB each), never reading | "
            f"{len(answered)} answered (the others 503: 8 connections served), "
            f"{sum(g < whole for g in got)} of them cut off, at most "
            f"{max(got, default=0) / 1e6:.1f} MB of an answer delivered; "
            f"{sent - start:.1f} s for all {clients}; a fresh client served {shown}; server "
            f"peak RSS {rss_before:.0f} -> {rss_peak:.0f} MB |"
        )
    finally:
        child.kill()
    return rows


def _endless_answer(listener: socket.socket) -> None:
    """Answer one request with a chunked body that never ends (until the client leaves)."""
    chunk = b"x" * (1 << 20)
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    with listener, contextlib.suppress(OSError):
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            while True:
                conn.sendall(framed)


def client_case() -> str:
    from research_env.retrievers.http import HttpRetriever, RetrievalError

    listener = socket.create_server((HOST, 0))
    url = f"http://{HOST}:{listener.getsockname()[1]}"
    threading.Thread(target=_endless_answer, args=(listener,), daemon=True).start()
    client = HttpRetriever(url, "search-r1", retries=0)
    before = _peak_rss_mb(os.getpid())
    start = time.perf_counter()
    try:
        client.search(["q"], 1)
        outcome = "answered"
    except RetrievalError as error:
        outcome = f"RetrievalError ({error.reason.split(';')[0]})"
    seconds = time.perf_counter() - start
    return (
        f"| endless chunked answer, default max_answer_bytes | {outcome} after {seconds:.2f} s; "
        f"client peak RSS {before:.0f} -> {_peak_rss_mb(os.getpid()):.0f} MB |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32, help="non-reading clients (32)")
    parser.add_argument(
        "--send-timeout", type=float, default=2.0, help="the server's send timeout (2 s)"
    )
    args = parser.parse_args(argv)
    rows = server_case(args.clients, args.send_timeout)
    rows.append(client_case())
    print(f"\nserver: --max-connections 8, --send-timeout {args.send_timeout:g} s\n")
    print("| case | what happened |\n| --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
