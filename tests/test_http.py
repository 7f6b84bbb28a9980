"""HttpRetriever against our own server (both protocols) and imitations of others."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
from fastapi import FastAPI, Request
from world import DOCS, SAMPLES, KeywordRetriever

from research_env.retrievers.http import HttpRetriever, RetrievalError
from research_env.retrievers.http_wire import document_from_wire
from research_env.retrievers.server import BackgroundServer

QUERIES = ["Brisa Telk", "Glass Tide", "Ostravel port", "nothing at all"]


@pytest.fixture(scope="module")
def server():
    with BackgroundServer(KeywordRetriever()) as running:
        yield running


def as_pairs(results):
    return [[(h.document.id, h.document.contents, h.score) for h in hits] for hits in results]


@pytest.mark.parametrize("protocol", ["search-r1", "flashrag", "auto"])
def test_both_protocols_return_what_the_retriever_returns(server, protocol):
    expected = as_pairs(KeywordRetriever().search(QUERIES, 2))
    with HttpRetriever(server.url, protocol) as client:
        assert as_pairs(client.search(QUERIES, 2)) == expected
        # One query goes through FlashRAG's single-query /search endpoint.
        assert as_pairs(client.search(QUERIES[:1], 2)) == expected[:1]


def test_auto_detects_search_r1_on_our_server_and_remembers(server):
    client = HttpRetriever(server.url)
    assert client.protocol == "search-r1"
    assert client.protocol == "search-r1"


def test_an_endpoint_in_the_url_fixes_the_protocol(server):
    assert HttpRetriever(server.url + "/retrieve").protocol == "search-r1"
    client = HttpRetriever(server.url + "/batch_search")
    assert (client.protocol, client.url) == ("flashrag", server.url)


def test_large_batches_are_split_into_several_requests(server):
    client = HttpRetriever(server.url, batch_size=3)
    queries = QUERIES * 2
    assert as_pairs(client.search(queries, 1)) == as_pairs(KeywordRetriever().search(queries, 1))


def test_empty_inputs_make_no_request():
    client = HttpRetriever("http://127.0.0.1:9", retries=0, timeout=0.2)  # nobody listens
    assert client.search([], 3) == []
    assert client.search(["a"], 0) == [[]]


# ------------------------------------------------------------ other servers' shapes
def flashrag_only_app(with_scores_ignored: bool) -> FastAPI:
    """A FlashRAG-style server: no /retrieve; may ignore return_score and send docs only."""
    app = FastAPI()
    docs = [{"id": d.id, "contents": d.contents} for d in DOCS]

    @app.post("/batch_search")
    async def batch_search(request: Request):
        body = await request.json()
        lists = [docs[: body["top_n"]] for _ in body["query"]]
        if body.get("return_score") and not with_scores_ignored:
            return [lists, [[0.5] * len(x) for x in lists]]
        return lists

    @app.post("/search")
    async def search(request: Request):
        body = await request.json()
        found = docs[: body["top_n"]]
        if body.get("return_score") and not with_scores_ignored:
            return [found, [0.5] * len(found)]
        return found

    return app


@pytest.mark.parametrize("scores_ignored", [False, True])
def test_auto_falls_back_to_flashrag_and_parses_both_answer_shapes(scores_ignored):
    with BackgroundServer(app=flashrag_only_app(scores_ignored)) as running:
        client = HttpRetriever(running.url)
        assert client.protocol == "flashrag"
        expected_score = 0.0 if scores_ignored else 0.5
        # Two queries: the ambiguous case ([docs, scores] vs two docs lists).
        for queries in (["a", "b"], ["a"], ["a", "b", "c"]):
            results = client.search(queries, 2)
            assert [[h.document.id for h in hits] for hits in results] == [["d1", "d2"]] * len(
                queries
            )
            assert all(h.score == expected_score for hits in results for h in hits)


def test_documents_in_other_shapes_are_understood():
    assert document_from_wire({"id": 7, "title": "Ostravel", "text": "A port."}).contents == (
        '"Ostravel"\nA port.'
    )
    plain = document_from_wire("just some text")
    assert plain.contents == "just some text"
    assert plain.id.startswith("sha1:")
    assert document_from_wire("just some text").id == plain.id
    with pytest.raises(ValueError):
        document_from_wire(3)


# ------------------------------------------------------------------------- failures
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_dead_server_raises_naming_the_url_within_the_retry_budget():
    url = f"http://127.0.0.1:{closed_port()}"
    client = HttpRetriever(url, "search-r1", timeout=0.5, retries=2, backoff=0.01)
    start = time.monotonic()
    with pytest.raises(RetrievalError) as error:
        client.search(["anything"], 3)
    assert time.monotonic() - start < client.max_wait_seconds + 1.0
    assert error.value.url == f"{url}/retrieve"
    assert url in str(error.value)
    assert "gave up after 3 attempts" in str(error.value)


def test_a_dead_server_during_protocol_detection_also_raises():
    url = f"http://127.0.0.1:{closed_port()}"
    client = HttpRetriever(url, timeout=0.5, retries=1, backoff=0.01)
    with pytest.raises(RetrievalError, match="unreachable while detecting the protocol"):
        client.search(["anything"], 3)


def hanging_app(seconds: float) -> FastAPI:
    app = FastAPI()

    @app.post("/retrieve")
    async def retrieve():
        await asyncio.sleep(seconds)
        return {"result": [[]]}

    return app


def test_a_hanging_server_times_out_instead_of_blocking():
    with BackgroundServer(app=hanging_app(1.0)) as running:
        client = HttpRetriever(running.url, "search-r1", timeout=0.2, retries=1, backoff=0.01)
        start = time.monotonic()
        with pytest.raises(RetrievalError, match="timed out"):
            client.search(["q"], 1)
        assert time.monotonic() - start < 1.0


def flaky_app(failures: int) -> FastAPI:
    app = FastAPI()
    state = {"calls": 0}

    @app.post("/retrieve")
    async def retrieve():
        from fastapi.responses import JSONResponse

        state["calls"] += 1
        if state["calls"] <= failures:
            return JSONResponse({"detail": "warming up"}, status_code=503)
        return {"result": [[{"document": {"id": "x", "contents": "X"}, "score": 1.5}]]}

    app.state.calls = state
    return app


def test_transient_server_errors_are_retried():
    app = flaky_app(failures=2)
    with BackgroundServer(app=app) as running:
        client = HttpRetriever(running.url, "search-r1", retries=2, backoff=0.01)
        assert as_pairs(client.search(["q"], 1)) == [[("x", "X", 1.5)]]
        assert app.state.calls["calls"] == 3


def test_503_beyond_the_budget_reports_the_last_error():
    with BackgroundServer(app=flaky_app(failures=10)) as running:
        client = HttpRetriever(running.url, "search-r1", retries=1, backoff=0.01)
        with pytest.raises(RetrievalError, match="HTTP 503: warming up"):
            client.search(["q"], 1)


def test_client_errors_are_not_retried_and_carry_the_server_message(server):
    client = HttpRetriever(server.url, "search-r1", retries=3, backoff=5.0)
    start = time.monotonic()
    with pytest.raises(RetrievalError, match="'topk' must be between 1 and 100"):
        client.search(["q"], 500)
    assert time.monotonic() - start < 5.0  # no backoff sleep happened


def test_malformed_answers_raise_retrieval_error():
    app = FastAPI()

    @app.post("/retrieve")
    async def retrieve():
        return {"unexpected": True}

    with BackgroundServer(app=app) as running:
        with pytest.raises(RetrievalError, match="unexpected Search-R1 answer"):
            HttpRetriever(running.url, "search-r1", retries=0).search(["q"], 1)


def test_constructor_validates_arguments():
    with pytest.raises(ValueError, match="protocol"):
        HttpRetriever("http://127.0.0.1:1", protocol="grpc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="http://"):
        HttpRetriever("localhost:8000")


# ------------------------------------------------------------------------- episodes
def test_an_episode_searches_through_the_http_client(server):
    from research_env import MultiHopSearchEnv

    client = HttpRetriever(server.url)
    env = MultiHopSearchEnv(dataset=SAMPLES, retriever=client, top_k=2, max_turns=4)
    env.reset(options={"index": 0})
    observation, reward, terminated, _, _ = env.step("who</think><search>Brisa Telk</search>")
    assert "Quimby Forge" in observation and not terminated
    observation, *_ = env.step("<think>where</think><search>Quimby Forge headquartered</search>")
    assert "Ostravel" in observation
    _, reward, terminated, _, info = env.step(
        "<think>done</think><answer>\\boxed{Ostravel}</answer>"
    )
    assert terminated and reward == 1.0
    assert info["retrieved_doc_ids"][:1] == ["d1"]


def test_serve_command_pieces_serve_a_bm25_corpus_end_to_end(tmp_path):
    import argparse

    from research_env import MultiHopSearchEnv
    from research_env.commands.serve import add_arguments, build_retriever

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"id": d.id, "contents": d.contents}) + "\n" for d in DOCS)
    )
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--corpus", str(corpus), "--index-dir", str(tmp_path / "index")])
    with BackgroundServer(build_retriever(args)) as running:
        env = MultiHopSearchEnv(dataset=SAMPLES, retriever=HttpRetriever(running.url), top_k=2)
        env.reset(options={"index": 1})
        observation, *_ = env.step("who</think><search>The Glass Tide author</search>")
    assert "Tamsy Orr" in observation


# ---------------------------------------------------------- slow and broken answers
class TricklingServer:
    """Answers each request with a valid Search-R1 response sent one byte at a time.

    ``head_at_once``: send the status line and headers promptly and trickle the body
    only. The server stops by itself after ``connections`` connections or when a
    client hangs up.
    """

    ANSWER = json.dumps(
        {"result": [[{"document": {"id": "x", "contents": "X" * 40}, "score": 1.0}]]}
    ).encode()

    def __init__(self, head_at_once: bool, interval: float = 0.1, connections: int = 2):
        import threading

        self.head_at_once = head_at_once
        self.interval = interval
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, args=(connections,), daemon=True)
        self.thread.start()

    def _serve(self, connections):
        with self.listener:
            for _ in range(connections):
                try:
                    conn, _ = self.listener.accept()
                except OSError:
                    return
                with conn:
                    self._answer(conn)

    def _answer(self, conn):
        conn.settimeout(10)
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(65536)
        head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(self.ANSWER)
        )
        slow = self.ANSWER
        try:
            if self.head_at_once:
                conn.sendall(head)
            else:
                slow = head + slow
            for i in range(len(slow)):
                conn.sendall(slow[i : i + 1])
                time.sleep(self.interval)
        except OSError:
            return  # the client gave up: what the tests want


@pytest.mark.parametrize("head_at_once", [False, True], ids=["whole-answer", "body-only"])
def test_a_trickling_server_cannot_stretch_a_request_past_its_timeout(head_at_once):
    # The answer takes ~10 s (100+ bytes at 0.1 s each) and every read is quick, so only
    # a deadline on the whole request stops it; without one the search would succeed.
    server = TricklingServer(head_at_once)
    client = HttpRetriever(server.url, "search-r1", timeout=0.5, retries=1, backoff=0.01)
    with pytest.raises(RetrievalError, match=r"timed out: no whole answer within 0\.5s"):
        client.search(["q"], 1)
    client.close()


def raw_answer_app(body: bytes, status: int = 200) -> FastAPI:
    from fastapi.responses import Response

    app = FastAPI()

    async def answer():
        return Response(body, status_code=status, media_type="application/json")

    for path in ("/retrieve", "/search", "/batch_search"):
        app.add_api_route(path, answer, methods=["POST"])
    return app


def test_deeply_nested_json_is_a_retrieval_error():
    nested = b"[" * 100_000 + b"]" * 100_000
    with BackgroundServer(app=raw_answer_app(nested)) as running:
        client = HttpRetriever(running.url, "search-r1", retries=0)
        with pytest.raises(RetrievalError, match="nests too deeply"):
            client.search(["q"], 1)


def doc(**fields):
    return {"document": fields, "score": 1.0}


@pytest.mark.parametrize(
    ("answer", "queries", "message"),
    [
        (b"", 1, "empty body"),
        (b"null", 1, "expected an object with 'result', got null"),
        (b"[]", 1, "expected an object with 'result', got a list"),
        (b"{}", 1, "expected an object with 'result'"),
        (b'{"result": "none"}', 1, "one list per query (1), got a string"),
        (b'{"result": [[]]}', 2, "one list per query (2), got 1 lists"),
        (b'{"result": [[], {"a": 1}]}', 2, "result[1]: expected a list of hits, got an object"),
        (json.dumps({"result": [[doc(id="x")]]}).encode(), 1, "needs 'contents'"),
        (json.dumps({"result": [[doc(id="x", contents=5)]]}).encode(), 1, "must be a string"),
        (json.dumps({"result": [[doc(id=[1], contents="c")]]}).encode(), 1, "document id"),
        (
            json.dumps({"result": [[{"document": {"contents": "c"}, "score": "high"}]]}).encode(),
            1,
            "a score must be a number, got a string",
        ),
        (json.dumps({"result": [[7]]}).encode(), 1, "must be an object or a string"),
    ],
)
def test_malformed_search_r1_answers_say_what_was_wrong(answer, queries, message):
    with BackgroundServer(app=raw_answer_app(answer)) as running:
        client = HttpRetriever(running.url, "search-r1", retries=0)
        with pytest.raises(RetrievalError) as error:
            client.search(["q"] * queries, 1)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("answer", "queries", "message"),
    [
        (b"{}", 1, "expected a list of documents, got an object"),
        (b"[]", 3, "expected 3 result lists, got 0"),
        (b"[[], []]", 3, "expected 3 result lists, got 2"),
        (b'[[{"id": "x", "contents": "c"}], [{"id": "y"}], []]', 3, "answer[1]: a document"),
        (b'{"docs": []}', 2, "expected a list of result lists, got an object"),
    ],
)
def test_malformed_flashrag_answers_say_what_was_wrong(answer, queries, message):
    with BackgroundServer(app=raw_answer_app(answer)) as running:
        client = HttpRetriever(running.url, "flashrag", retries=0)
        with pytest.raises(RetrievalError) as error:
            client.search([f"q{i}" for i in range(queries)], 1)
    assert message in str(error.value)


def test_custom_headers_reach_the_server():
    app = FastAPI()
    seen = {}

    @app.post("/retrieve")
    async def retrieve(request: Request):
        seen["token"] = request.headers.get("authorization")
        return {"result": [[]]}

    with BackgroundServer(app=app) as running:
        client = HttpRetriever(running.url, "search-r1", headers={"Authorization": "Bearer t"})
        assert client.search(["q"], 1) == [[]]
    assert seen["token"] == "Bearer t"


# ------------------------------------------------------------ several servers
def counting_app(name: str, calls: list[str], status: int = 200) -> FastAPI:
    """A Search-R1 server that answers one hit named after itself (or ``status``) and
    records which server was asked."""
    app = FastAPI()

    @app.post("/retrieve")
    async def retrieve(request: Request):
        from fastapi.responses import JSONResponse

        body = await request.json()
        calls.append(name)
        if status != 200:
            return JSONResponse({"detail": f"{name} says {status}"}, status_code=status)
        hit = {"document": {"id": name, "contents": f"from {name}"}, "score": 1.0}
        return {"result": [[hit] for _ in body["queries"]]}

    return app


def test_round_robin_spreads_requests_over_replicas():
    calls: list[str] = []
    with (
        BackgroundServer(app=counting_app("a", calls)) as a,
        BackgroundServer(app=counting_app("b", calls)) as b,
    ):
        client = HttpRetriever([a.url, b.url], "search-r1")
        answered = [client.search(["q"], 1)[0][0].document.id for _ in range(4)]
        assert answered == ["a", "b", "a", "b"] and calls == answered
        # The one-string form (what a YAML env.retriever holds) means the same.
        same = HttpRetriever(f"{a.url},{b.url}/retrieve")
        assert (same.urls, same.policy, same.protocol) == (
            [a.url, b.url],
            "round_robin",
            "search-r1",
        )


def test_a_failed_request_is_retried_on_the_next_replica():
    calls: list[str] = []
    dead = f"http://127.0.0.1:{closed_port()}"
    with (
        BackgroundServer(app=counting_app("sick", calls, status=500)) as sick,
        BackgroundServer(app=counting_app("ok", calls)) as ok,
    ):
        client = HttpRetriever([dead, sick.url, ok.url], "search-r1", retries=2, backoff=0.01)
        for _ in range(3):  # whichever server a request starts on, it ends on "ok"
            assert client.search(["q"], 1)[0][0].document.id == "ok"
        # All replicas failing: the error names them and the last failure.
        client = HttpRetriever([dead, sick.url], "search-r1", retries=1, backoff=0.01)
        with pytest.raises(RetrievalError, match="gave up after 2 attempts") as error:
            client.search(["q"], 1)
        assert dead in error.value.url and sick.url in error.value.url


def test_every_5xx_is_retried_but_a_4xx_is_not():
    for status, retried in ((500, True), (507, True), (429, True), (404, False), (422, False)):
        calls: list[str] = []
        with BackgroundServer(app=counting_app("s", calls, status=status)) as s:
            client = HttpRetriever(s.url, "search-r1", retries=2, backoff=0.01)
            with pytest.raises(RetrievalError, match=f"HTTP {status}: s says {status}"):
                client.search(["q"], 1)
        assert len(calls) == (3 if retried else 1), status


def test_backoff_is_exponential_capped_and_jittered():
    import random

    from research_env.retrievers.http_endpoints import backoff_delay

    rng = random.Random(0)
    for attempt, full in ((1, 0.5), (2, 1.0), (3, 2.0), (6, 8.0), (9, 8.0)):
        delays = [backoff_delay(attempt, 0.5, 8.0, rng) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1  # jittered: workers do not retry in lockstep


def test_shards_are_all_asked_and_merged_by_score():
    queries = ["Brisa Telk Quimby Forge", "Ostravel port city Quesland", "Glass Tide", "zzz"]
    whole = KeywordRetriever().search(queries, 3)
    with (
        BackgroundServer(KeywordRetriever(DOCS[:2])) as a,
        BackgroundServer(KeywordRetriever(DOCS[2:])) as b,
    ):
        for client in (
            HttpRetriever([a.url, b.url], policy="shard"),
            HttpRetriever(f"{a.url},{b.url}#shard", "flashrag"),
        ):
            with client:
                assert client.policy == "shard"
                # Two disjoint halves of the corpus answer as the whole corpus does.
                assert as_pairs(client.search(queries, 3)) == as_pairs(whole)
                # One query: FlashRAG's single-query /search on each shard.
                assert as_pairs(client.search(queries[:1], 1)) == [as_pairs(whole)[0][:1]]


def test_merge_shards_orders_by_score_breaks_ties_by_shard_and_dedups():
    from research_env.data.types import Document
    from research_env.retrievers.base import SearchHit
    from research_env.retrievers.http_endpoints import merge_shards

    def hit(doc_id, score):
        return SearchHit(Document(doc_id, doc_id), score)

    first = [hit("a", 0.9), hit("b", 0.5), hit("dup", 0.4)]
    second = [hit("c", 0.7), hit("d", 0.5), hit("dup", 0.4)]
    merged = merge_shards([first, second], 5)
    assert [h.document.id for h in merged] == ["a", "c", "b", "d", "dup"]
    assert [h.document.id for h in merge_shards([first, second], 2)] == ["a", "c"]
    assert merge_shards([[], []], 3) == []


def test_a_failing_shard_fails_the_search():
    calls: list[str] = []
    with (
        BackgroundServer(app=counting_app("up", calls)) as up,
        BackgroundServer(app=counting_app("down", calls, status=503)) as down,
    ):
        client = HttpRetriever([up.url, down.url], "search-r1", policy="shard", retries=1)
        client.backoff = 0.01
        with pytest.raises(RetrievalError, match="down says 503") as error:
            client.search(["q"], 2)
        assert error.value.url == f"{down.url}/retrieve"
        assert calls.count("down") == 2 and calls.count("up") == 1  # retried on its own shard


def test_server_lists_are_checked():
    with pytest.raises(ValueError, match="unknown policy #mirror"):
        HttpRetriever("http://127.0.0.1:1,http://127.0.0.1:2#mirror")
    with pytest.raises(ValueError, match="listed twice"):
        HttpRetriever(["http://127.0.0.1:1", "http://127.0.0.1:1/"])
    with pytest.raises(ValueError, match="different protocols"):
        HttpRetriever("http://127.0.0.1:1/retrieve,http://127.0.0.1:2/batch_search")
    with pytest.raises(ValueError, match="http://"):
        HttpRetriever("http://127.0.0.1:1,127.0.0.1:2")
    with pytest.raises(ValueError, match="says #shard"):
        HttpRetriever("http://127.0.0.1:1#shard", policy="round_robin")
    with pytest.raises(ValueError, match="policy"):
        HttpRetriever("http://127.0.0.1:1", policy="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_concurrency"):
        HttpRetriever("http://127.0.0.1:1", max_concurrency=0)
    assert "policy='shard'" in repr(HttpRetriever("http://127.0.0.1:1,http://127.0.0.1:2#shard"))


def in_flight_app(state: dict[str, int], seconds: float) -> FastAPI:
    """A server that holds each request ``seconds`` and records the most it held at once."""
    app = FastAPI()

    @app.post("/retrieve")
    async def retrieve(request: Request):
        body = await request.json()
        state["now"] += 1
        state["most"] = max(state["most"], state["now"])
        await asyncio.sleep(seconds)
        state["now"] -= 1
        hit = {"document": {"id": "x", "contents": "X"}, "score": 1.0}
        return {"result": [[hit] for _ in body["queries"]]}

    return app


@pytest.mark.parametrize("cap", [2, None])
def test_max_concurrency_caps_requests_in_flight_across_threads(cap):
    from concurrent.futures import ThreadPoolExecutor

    state = {"now": 0, "most": 0}
    with BackgroundServer(app=in_flight_app(state, 0.3)) as running:
        client = HttpRetriever(running.url, "search-r1", max_concurrency=cap, timeout=10)
        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda q: client.search([q], 1), [f"q{i}" for i in range(6)]))
    assert all(r[0][0].document.id == "x" for r in results)
    if cap is None:
        assert state["most"] > 2  # without a cap the threads do overlap
    else:
        assert 1 <= state["most"] <= cap


def test_empty_passages_are_errors_not_empty_documents():
    app = FastAPI()

    @app.post("/retrieve")
    async def retrieve():
        return {"result": [[{"document": {"id": "d9", "contents": "  "}, "score": 1.0}]]}

    with BackgroundServer(app=app) as running:
        client = HttpRetriever(running.url, "search-r1", retries=0)
        with pytest.raises(RetrievalError, match=r"empty passage.*'d9'"):
            client.search(["q"], 1)
    with pytest.raises(ValueError, match="empty passage"):
        document_from_wire("")
    with pytest.raises(ValueError, match="empty passage"):
        document_from_wire({"id": 1, "text": "", "title": ""})


# ------------------------------------------------------------------ hostile answers
def streamed_answer_app(body: bytes, *, chunked: bool = False):
    """A bare ASGI server answering every request with ``body`` (declared, or streamed in
    1 MiB chunks without a Content-Length)."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        headers = [(b"content-type", b"application/json")]
        if not chunked:
            headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        step = 1 << 20
        for start in range(0, len(body), step):
            last = start + step >= len(body)
            await send({"type": "http.response.body", "body": body[start : start + step],
                        "more_body": not last})  # fmt: skip

    return app


@pytest.mark.parametrize("chunked", [False, True])
def test_an_answer_over_the_size_cap_is_refused_naming_the_cap(chunked):
    hit = {"document": {"id": "d", "contents": "x" * 1000}, "score": 1.0}
    body = json.dumps({"result": [[hit] * 4000]}).encode()  # about 4 MB
    with BackgroundServer(app=streamed_answer_app(body, chunked=chunked)) as server:
        client = HttpRetriever(server.url, "search-r1", max_answer_bytes=1_000_000, retries=0)
        with pytest.raises(RetrievalError, match=r"limit is 1000000 bytes.*max_answer_bytes"):
            client.search(["q"], 3)
        roomy = HttpRetriever(server.url, "search-r1", max_answer_bytes=8_000_000, retries=0)
        assert len(roomy.search(["q"], 3)[0]) == 3
    with pytest.raises(ValueError, match="max_answer_bytes"):
        HttpRetriever("http://127.0.0.1:1", max_answer_bytes=0)


def nan_app() -> FastAPI:
    app = FastAPI()

    @app.post("/retrieve")
    async def retrieve(request: Request):
        from fastapi.responses import Response

        body = await request.json()
        hit = '{"document": {"id": "bad", "contents": "NaN-scored"}, "score": NaN}'
        result = ",".join(f"[{hit}]" for _ in body["queries"])
        return Response('{"result": [' + result + "]}", media_type="application/json")

    return app


def test_a_shard_answering_a_non_finite_score_fails_the_merge_naming_it():
    calls: list[str] = []
    with (
        BackgroundServer(app=counting_app("good", calls)) as good,
        BackgroundServer(app=nan_app()) as bad,
    ):
        client = HttpRetriever([good.url, bad.url], "search-r1", policy="shard", retries=0)
        with pytest.raises(RetrievalError, match=r"'bad' for query 0 has score nan") as error:
            client.search(["q"], 2)
        assert error.value.url == bad.url
