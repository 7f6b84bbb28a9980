"""The retrieval server: every protocol's wire format, validation, micro-batching."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import msgpack
import pytest
from world import KeywordRetriever

from research_env.retrievers.server import BackgroundServer, ServerLimits


@pytest.fixture(scope="module")
def server():
    with BackgroundServer(KeywordRetriever()) as running:
        yield running


def post(server, path, **kwargs):
    return httpx.post(server.url + path, timeout=10, **kwargs)


BRISA = {
    "id": "d1",
    "contents": '"Brisa Telk"\nBrisa Telk is an engineer who founded Quimby Forge.',
}


# --------------------------------------------------------------------- wire formats
def test_search_r1_with_and_without_scores(server):
    body = {"queries": ["Brisa Telk", "Glass Tide"], "topk": 1, "return_scores": True}
    answer = post(server, "/retrieve", json=body).json()
    assert answer == {
        "result": [
            [{"document": BRISA, "score": 2.0}],
            [
                {
                    "document": {
                        "id": "d4",
                        "contents": '"Tamsy Orr"\nTamsy Orr wrote The Glass Tide.',
                    },
                    "score": 2.0,
                }
            ],
        ]
    }
    body["return_scores"] = False
    answer = post(server, "/retrieve", json=body).json()
    assert answer["result"][0] == [BRISA]


def test_skyrl_single_query_gets_the_nested_shape(server):
    answer = post(
        server, "/retrieve", json={"query": "Brisa Telk", "topk": 1, "return_scores": True}
    )
    assert answer.json() == {"result": [[{"document": BRISA, "score": 2.0}]]}


def test_gem_msgpack_single_query_gets_a_flat_result(server):
    # GEM posts raw msgpack bytes without a content type; the server must sniff it.
    body = msgpack.packb({"query": "Brisa Telk", "topk": 1, "return_scores": True})
    response = post(server, "/retrieve", content=body)
    assert response.headers["content-type"] == "application/msgpack"
    assert msgpack.unpackb(response.content) == {"result": [{"document": BRISA, "score": 2.0}]}

    response = post(
        server, "/retrieve", content=body, headers={"content-type": "application/x-msgpack"}
    )
    assert msgpack.unpackb(response.content)["result"][0]["document"] == BRISA


def test_msgpack_with_a_query_list_gets_the_nested_shape(server):
    body = msgpack.packb({"queries": ["Brisa Telk"], "topk": 1, "return_scores": True})
    answer = msgpack.unpackb(post(server, "/retrieve", content=body).content)
    assert answer == {"result": [[{"document": BRISA, "score": 2.0}]]}


def test_flashrag_search_and_batch_search(server):
    one = post(server, "/search", json={"query": "Brisa Telk", "top_n": 1, "return_score": True})
    assert one.json() == [[BRISA], [2.0]]
    one = post(server, "/search", json={"query": "Brisa Telk", "top_n": 1})
    assert one.json() == [BRISA]

    body = {"query": ["Brisa Telk", "nothing matches"], "top_n": 1, "return_score": True}
    assert post(server, "/batch_search", json=body).json() == [[[BRISA], []], [[2.0], []]]
    body["return_score"] = False
    assert post(server, "/batch_search", json=body).json() == [[BRISA], []]


def test_default_topk_applies_when_none_is_given():
    with BackgroundServer(KeywordRetriever(), limits=ServerLimits(default_topk=2)) as running:
        answer = post(running, "/retrieve", json={"queries": ["Quimby Forge Ostravel"]}).json()
    assert len(answer["result"][0]) == 2


def test_health_reports_the_retriever(server):
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "healthy"
    assert health["retriever"] == "KeywordRetriever"
    assert health["batching"] is True
    assert health["limits"]["max_topk"] == 100
    assert "mean_batch_queries" in health["stats"]


# ----------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/retrieve", {"queries": ["a"], "topk": 0}, 422, "'topk' must be between 1 and 100"),
        ("/retrieve", {"queries": ["a"], "topk": 101}, 422, "between 1 and 100, got 101"),
        ("/retrieve", {"queries": ["a"], "topk": "3"}, 422, "'topk' must be an integer"),
        ("/retrieve", {"queries": ["a"], "topk": True}, 422, "'topk' must be an integer"),
        ("/retrieve", {"queries": "a"}, 422, "'queries' must be a list of strings"),
        ("/retrieve", {"queries": []}, 422, "'queries' is empty"),
        ("/retrieve", {"queries": ["a", 7]}, 422, "'queries[1]' must be a string"),
        ("/retrieve", {"queries": ["a"] * 1025}, 413, "1025 queries in one request"),
        ("/retrieve", {"queries": ["x" * 4097]}, 422, "the limit is 4096"),
        ("/retrieve", {"topk": 3}, 422, "needs 'queries'"),
        ("/retrieve", {"queries": ["a"], "return_scores": "yes"}, 422, "'return_scores' must be"),
        ("/search", {"query": ["a"]}, 422, "'query' must be a string"),
        ("/search", {"top_n": 3}, 422, "needs 'query'"),
        ("/batch_search", {"query": ["a"], "top_n": 500}, 422, "'top_n' must be between"),
    ],
)
def test_bad_requests_get_a_4xx_saying_what_is_wrong(server, path, body, status, message):
    response = post(server, path, json=body)
    assert response.status_code == status
    assert message in response.json()["detail"]


def test_unparseable_bodies_are_400(server):
    response = post(
        server, "/retrieve", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]
    response = post(server, "/retrieve", json=["a", "list"])
    assert response.status_code == 422
    assert "must be an object" in response.json()["detail"]


@pytest.mark.parametrize("body", [b"\xc1", b"\x81\xa5query", b"\x81\xa1q\xa1x\x00"])
def test_undecodable_msgpack_gets_400_with_a_reason(server, body):
    # 0xc1 is reserved in msgpack: its FormatError has an empty message of its own.
    headers = {"content-type": "application/msgpack"}
    response = post(server, "/retrieve", content=body, headers=headers)
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail.startswith("the body is not valid msgpack: ")
    assert detail.removeprefix("the body is not valid msgpack: ").strip()


# ------------------------------------------------------------------------- batching
class SlowRetriever(KeywordRetriever):
    """Takes ``delay`` seconds per call, so concurrent requests pile up behind it."""

    def __init__(self, delay):
        super().__init__()
        self.delay = delay
        self.lock = threading.Lock()

    def search(self, queries, k):
        time.sleep(self.delay)
        with self.lock:
            return super().search(queries, k)


QUERIES = [
    "Brisa Telk",
    "Quimby Forge",
    "Ostravel",
    "Tamsy Orr",
    "Glass Tide",
    "engineer",
    "port city",
    "wrote",
]


def concurrent_answers(url, queries):
    def one(query):
        body = {"queries": [query], "topk": 1, "return_scores": True}
        return httpx.post(url + "/retrieve", json=body, timeout=30).json()["result"][0]

    with ThreadPoolExecutor(len(queries)) as pool:
        return list(pool.map(one, queries))


def test_concurrent_requests_share_retriever_calls():
    slow = SlowRetriever(delay=0.3)
    expected = [KeywordRetriever().search([q], 1)[0] for q in QUERIES]
    with BackgroundServer(slow) as running:
        answers = concurrent_answers(running.url, QUERIES)
        stats = httpx.get(running.url + "/health").json()["stats"]
    # Every client gets its own query's answer...
    assert [[hit["document"]["id"] for hit in a] for a in answers] == [
        [h.document.id for h in hits] for hits in expected
    ]
    # ...but requests that arrived while a call ran were answered by one shared call.
    assert len(slow.calls) < len(QUERIES)
    assert sorted(q for call in slow.calls for q in call) == sorted(QUERIES)
    assert stats["requests"] == len(QUERIES)
    assert stats["batches"] == len(slow.calls)


def test_no_batching_answers_each_request_alone():
    slow = SlowRetriever(delay=0.05)
    with BackgroundServer(slow, batching=False) as running:
        concurrent_answers(running.url, QUERIES)
    assert sorted(len(call) for call in slow.calls) == [1] * len(QUERIES)


def test_identical_queries_in_a_batch_are_searched_once():
    slow = SlowRetriever(delay=0.3)
    with BackgroundServer(slow) as running:
        answers = concurrent_answers(running.url, ["Brisa Telk"] * 6)
        stats = httpx.get(running.url + "/health").json()["stats"]
    assert all(a[0]["document"]["id"] == "d1" for a in answers)
    assert stats["queries"] == 6
    assert stats["searched_queries"] == sum(len(set(call)) for call in slow.calls)
    assert stats["searched_queries"] < 6


def test_overload_is_refused_with_a_retryable_503():
    slow = SlowRetriever(delay=1.0)
    limits = ServerLimits(max_pending_queries=1)
    with BackgroundServer(slow, limits=limits) as running:

        def ask():
            return httpx.post(running.url + "/retrieve", json={"queries": ["Ostravel"]}, timeout=30)

        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(ask)
            time.sleep(0.3)  # the first request is now being searched
            second = pool.submit(ask)
            time.sleep(0.3)  # the second waits in the queue: the queue is full
            third = pool.submit(ask)
            statuses = [f.result().status_code for f in (first, second, third)]
    assert statuses[:2] == [200, 200]
    assert statuses[2] == 503


class FailingRetriever:
    def search(self, queries, k):
        if "boom" in queries:
            raise RuntimeError("index file vanished")
        return [[] for _ in queries]


@pytest.mark.parametrize("batching", [True, False])
def test_retriever_errors_become_500_and_the_server_keeps_serving(batching):
    with BackgroundServer(FailingRetriever(), batching=batching) as running:
        bad = post(running, "/retrieve", json={"queries": ["boom"]})
        good = post(running, "/retrieve", json={"queries": ["fine"]})
    assert bad.status_code == 500
    assert "index file vanished" in bad.json()["detail"]
    assert good.json() == {"result": [[]]}


# ------------------------------------------------------------------------ the command
def test_serve_help_lists_endpoints_and_options(capsys):
    from research_env.commands.serve import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for needle in ("/retrieve", "/batch_search", "--no-batching", "--max-batch", "127.0.0.1"):
        assert needle in text


def test_serve_rejects_a_missing_corpus(tmp_path, capsys):
    from research_env.commands.serve import main

    assert main(["--corpus", str(tmp_path / "missing.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_serve_registers_as_a_subcommand():
    import argparse

    from research_env.commands.serve import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--corpus", "c.jsonl", "--no-batching", "--port", "9001"])
    assert (args.no_batching, args.port, args.host, args.retriever) == (
        True,
        9001,
        "127.0.0.1",
        "bm25",
    )
    assert callable(args.handler)


# ------------------------------------------------------------------ the framework path
def test_fastapi_routes_answer_like_the_fast_path_and_are_documented(server):
    from fastapi.testclient import TestClient

    from research_env.retrievers.server import create_app

    app = create_app(KeywordRetriever())
    app.user_middleware.clear()  # no fast path: requests go through FastAPI's routing
    body = {"queries": ["Brisa Telk"], "topk": 1, "return_scores": True}
    with TestClient(app) as client:
        slow = client.post("/retrieve", json=body)
        bad = client.post("/search", json={"query": "x", "top_n": 0})
        paths = client.get("/openapi.json").json()["paths"]
    fast = post(server, "/retrieve", json=body)
    assert slow.json() == fast.json()
    assert bad.status_code == 422 and "'top_n' must be between" in bad.json()["detail"]
    assert {"/retrieve", "/search", "/batch_search", "/health"} <= set(paths)


def test_serve_accepts_a_dataset_name_as_corpus(tmp_path):
    # Every other command takes the name 'synthetic'; serve serves that world's corpus.
    import argparse

    from research_env import data
    from research_env.commands.serve import add_arguments, build_retriever

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--corpus", "synthetic", "--index-dir", str(tmp_path)])
    retriever = build_retriever(args)
    corpus = data.load_corpus("synthetic", cache_dir=tmp_path)
    assert len(retriever) == len(corpus)
    top = retriever.search([corpus[0].contents], 1)[0][0]
    assert top.document.id == corpus[0].id


def test_serve_names_the_choices_for_an_unknown_corpus(tmp_path, capsys):
    from research_env.commands.serve import main

    assert main(["--corpus", "no-such-dataset", "--index-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "does not exist" in error and "synthetic" in error
