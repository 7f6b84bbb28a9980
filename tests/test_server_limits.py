"""What a slow, idle or hostile client can hold on the retrieval server: body size,
connection time, connection count. Spoken over raw sockets, because the point is what
the server does with requests that well-behaved HTTP clients never send.

No assertion here is about how fast something happens: every read waits at most
``WAIT`` seconds, and a server without the limit under test leaves the read waiting
until then, which fails the test.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time

import pytest
from test_server import SlowRetriever
from world import KeywordRetriever

from research_env.retrievers.server import BackgroundServer, ServerLimits

WAIT = 20.0  # seconds any read may wait; far beyond every limit the tests set


def connect(server) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=WAIT)
    sock.settimeout(WAIT)
    return sock


def head(path="/retrieve", **headers) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: test", "content-type: application/json"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def request(body: dict) -> bytes:
    data = json.dumps(body).encode()
    return head(content_length=len(data)) + data


def read_response(sock) -> tuple[int, dict, dict]:
    """(status, headers, JSON body or {}) of one response; raises if none comes in WAIT s."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a whole response head: {data!r}")
        data += chunk
    raw_head, _, body = data.partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    is_json = headers.get("content-type") == "application/json"
    return int(lines[0].split()[1]), headers, json.loads(body) if is_json else {}


def closed_by_server(sock) -> bool:
    """Whether the server closed the connection (reads to EOF; a reset also counts)."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


QUERY = {"queries": ["Brisa Telk"], "topk": 1}


# ----------------------------------------------------------------------- body size
def test_oversized_content_length_is_refused_before_the_body_is_read():
    with BackgroundServer(KeywordRetriever()) as server, connect(server) as sock:
        # Announce 400 MB and send none of it: the answer must not wait for the body.
        sock.sendall(head(content_length=400_000_000))
        status, headers, body = read_response(sock)
        assert status == 413
        assert "16777216 bytes" in body["detail"] and "400000000" in body["detail"]
        assert headers["connection"] == "close"
        assert closed_by_server(sock)


def test_chunked_body_is_refused_once_it_grows_past_the_limit():
    limits = ServerLimits(max_body_bytes=1_000)
    with BackgroundServer(KeywordRetriever(), limits=limits) as server, connect(server) as sock:
        sock.sendall(head(transfer_encoding="chunked"))
        for _ in range(3):  # 1,800 bytes, and the body never ends
            sock.sendall(b"258\r\n" + b" " * 600 + b"\r\n")
        status, headers, body = read_response(sock)
        assert status == 413 and "1000 bytes" in body["detail"]
        assert closed_by_server(sock)


def test_bodies_within_the_limit_are_served_chunked_or_not():
    limits = ServerLimits(max_body_bytes=1_000)
    with BackgroundServer(KeywordRetriever(), limits=limits) as server, connect(server) as sock:
        sock.sendall(request(QUERY))
        assert read_response(sock)[0] == 200
        data = json.dumps(QUERY).encode()
        chunk = f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n"
        sock.sendall(head(transfer_encoding="chunked") + chunk)
        status, _, body = read_response(sock)
        assert status == 200 and body["result"][0][0]["id"] == "d1"


# ----------------------------------------------------------------- connection time
FAST = ServerLimits(request_timeout=0.5, keep_alive_timeout=0.5)


def test_a_silent_connection_gets_408_and_is_closed():
    with BackgroundServer(KeywordRetriever(), limits=FAST) as server, connect(server) as sock:
        status, _, body = read_response(sock)
        assert status == 408 and "request_timeout" in body["detail"]
        assert closed_by_server(sock)


def test_a_half_sent_request_head_gets_408_and_is_closed():
    with BackgroundServer(KeywordRetriever(), limits=FAST) as server, connect(server) as sock:
        sock.sendall(b"POST /retrieve HTTP/1.1\r\nhost: test\r\n")
        assert read_response(sock)[0] == 408
        assert closed_by_server(sock)


def test_a_trickled_body_is_cut_off_by_the_whole_request_deadline():
    # One byte every 0.1 s: each read is quick, the request never completes in time.
    with BackgroundServer(KeywordRetriever(), limits=FAST) as server, connect(server) as sock:
        data = json.dumps(QUERY).encode()
        sock.sendall(head(content_length=len(data)))
        sent = 0
        try:
            for byte in data:
                sock.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert sent < len(data), "the server waited for the whole trickled body"
        status, _, _ = read_response(sock)
        assert status == 408


def test_the_deadline_covers_reading_a_request_not_answering_it():
    # The retriever takes longer than the request timeout: the answer must still come,
    # and the kept-alive connection must serve a second request sent in two parts.
    limits = ServerLimits(request_timeout=0.5, keep_alive_timeout=5)
    with BackgroundServer(SlowRetriever(delay=1.0), limits=limits) as server:
        with connect(server) as sock:
            sock.sendall(request(QUERY))
            assert read_response(sock)[0] == 200
            second = request(QUERY)
            sock.sendall(second[:10])
            time.sleep(0.2)
            sock.sendall(second[10:])
            assert read_response(sock)[0] == 200


def test_an_idle_kept_alive_connection_is_closed():
    with BackgroundServer(KeywordRetriever(), limits=FAST) as server, connect(server) as sock:
        sock.sendall(request(QUERY))
        status, headers, _ = read_response(sock)
        assert status == 200 and headers.get("connection") != "close"
        assert closed_by_server(sock)


# --------------------------------------------------------------- connection count
def test_connections_beyond_the_cap_get_503():
    limits = ServerLimits(max_connections=2)
    with BackgroundServer(KeywordRetriever(), limits=limits) as server:
        with connect(server) as first, connect(server) as second:
            first.sendall(request(QUERY))
            assert read_response(first)[0] == 200  # both connections are now open
            with connect(server) as third:
                third.sendall(request(QUERY))
                assert read_response(third)[0] == 503
            second.sendall(request(QUERY))
            assert read_response(second)[0] == 200


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_body_bytes", 0),
        ("request_timeout", 0),
        ("keep_alive_timeout", -1),
        ("max_connections", 0),
        ("max_hits_per_request", 0),
        ("send_timeout", float("inf")),
    ],
)
def test_limits_are_checked(field, value):
    with pytest.raises(ValueError, match=field):
        ServerLimits(**{field: value})


def test_serve_help_documents_the_connection_limits(capsys):
    from research_env.commands.serve import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--max-body-mb", "--request-timeout", "--keep-alive-timeout", "--max-connections"):
        assert flag in text


# ------------------------------------------------------------ answers never read
class BulkyRetriever(KeywordRetriever):
    """Every hit carries 1 KiB of text, so a request can ask for a large answer."""

    def search(self, queries, k):
        from research_env.data.types import Document
        from research_env.retrievers.base import SearchHit

        text = "x" * 1024
        return [[SearchHit(Document(f"d{i}", text), 1.0) for i in range(k)] for _ in queries]


def non_reading_client(server, body: dict) -> socket.socket:
    """A connection with a tiny receive buffer that sends ``body`` and never reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(WAIT)
    sock.connect((server.host, server.port))
    sock.sendall(request(body))
    return sock


def peek_status(sock) -> int | None:
    """The status of the answer waiting on ``sock``, read without consuming it (the client
    stays a non-reader), or None when the server aborted the connection."""
    data, deadline = b"", time.monotonic() + WAIT
    while b"\r\n" not in data and time.monotonic() < deadline:
        try:
            data = sock.recv(64, socket.MSG_PEEK)
        except ConnectionResetError:
            return None
        if not data:
            return None
    return int(data.split(b" ", 2)[1])


def bytes_until_closed(sock) -> int:
    """Read ``sock`` to its end (an orderly close or a reset); how many bytes came."""
    received = 0
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
    return received


def test_clients_that_never_read_their_answer_cannot_lock_the_server():
    # 32 clients in turn each ask for an 8 MB answer (more than the kernel's socket
    # buffers hold) and never read it; 8 connections are served at once. Without a send
    # deadline the first 8 hold their connections and answers forever and every later
    # client, the fresh one included, gets 503; with it, each is aborted after 0.5 s.
    limits = ServerLimits(max_connections=8, send_timeout=0.5)
    big = {"queries": [f"q{i}" for i in range(80)], "topk": 100}
    with BackgroundServer(BulkyRetriever(), limits=limits) as server:
        held, statuses = [], []
        try:
            for _ in range(32):
                held.append(non_reading_client(server, big))
                statuses.append(peek_status(held[-1]))
            served, deadline = None, time.monotonic() + WAIT
            while served is None and time.monotonic() < deadline:  # bounded retries
                with connect(server) as fresh:
                    fresh.sendall(request(QUERY))
                    status, _, body = read_response(fresh)
                if status == 200:
                    served = body
                else:
                    assert status == 503
                    time.sleep(0.05)
            assert served is not None, "no fresh client was served while 32 others held on"
            assert served["result"][0][0]["id"] == "d0"
            answered = [sock for sock, status in zip(held, statuses, strict=True) if status == 200]
            assert len(answered) >= 8  # the first 8 at least were answered, not refused
            # The last ones answered may still be inside their 0.5 s: reading them now would
            # let the server finish. Wait (bounded) until it has dropped every connection.
            deadline = time.monotonic() + WAIT
            while server.open_connections and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.open_connections == 0, "held connections were never dropped"
            # Each answered connection was aborted: what reading it now gets is what the
            # kernel's buffers held (a few MB at most), never the whole 8 MB answer.
            assert all(bytes_until_closed(sock) < 8_000_000 for sock in answered)
        finally:
            for sock in held:
                sock.close()


def test_a_request_for_too_many_hits_gets_413_before_it_is_searched():
    limits = ServerLimits(max_hits_per_request=100)
    retriever = BulkyRetriever()
    with BackgroundServer(retriever, limits=limits) as server, connect(server) as sock:
        sock.sendall(request({"queries": ["a", "b", "c"], "topk": 34}))
        status, _, body = read_response(sock)
        assert status == 413
        assert "102 hits" in body["detail"] and "max-hits-per-request" in body["detail"]
        sock.sendall(request({"queries": ["a", "b"], "topk": 50}))
        assert read_response(sock)[0] == 200  # 100 hits: at the limit


def test_serve_help_names_the_answer_limits(capsys):
    from research_env.commands.serve import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--max-hits-per-request", "--send-timeout"):
        assert text.count(flag) >= 2  # in the promise at the top and as an option
