"""Web search retrievers (serper, brave, searxng) against loopback fakes of their APIs:
the documented answer shapes, the key kept secret, the budget, the cache, 429 with
Retry-After, slow and malformed answers, and selection by name from Python and YAML."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from research_env import MultiHopSearchEnv
from research_env.retrievers.query_cache import PersistentCachedRetriever
from research_env.retrievers.web import (
    BudgetExhausted,
    WebSearchError,
    retry_after_seconds,
)
from research_env.retrievers.web_brave import BraveRetriever
from research_env.retrievers.web_searxng import SearxngRetriever
from research_env.retrievers.web_serper import SerperRetriever
from research_env.sources import resolve_retriever

SECRET = "sk-test-0123456789-very-secret"

# One answer per provider, in the shape its documentation shows.
SERPER_ANSWER = {
    "searchParameters": {"q": "capital of france", "type": "search", "engine": "google"},
    "answerBox": {"title": "France", "answer": "Paris", "link": "https://en.wikipedia.org/France"},
    "organic": [
        {
            "title": "Paris - Wikipedia",
            "link": "https://en.wikipedia.org/wiki/Paris",
            "snippet": "Paris is the capital and largest city of France.",
            "position": 1,
        },
        {
            "title": "France",
            "link": "https://example.org/france",
            "snippet": "A country in Western Europe.",
            "position": 2,
        },
    ],
}
BRAVE_ANSWER = {
    "type": "search",
    "query": {"original": "capital of france"},
    "web": {
        "type": "search",
        "results": [
            {
                "title": "Paris &amp; France",
                "url": "https://en.wikipedia.org/wiki/Paris",
                "description": "<strong>Paris</strong> is the capital of France.",
                "extra_snippets": ["It has 2.1 million residents."],
            },
            {"title": "Lyon", "url": "https://example.org/lyon", "description": "A city."},
        ],
    },
}
SEARXNG_ANSWER = {
    "query": "capital of france",
    "number_of_results": 2,
    "results": [
        {
            "url": "https://en.wikipedia.org/wiki/Paris",
            "title": "Paris",
            "content": "Paris is the capital of France.",
            "engine": "wikipedia",
            "score": 3.0,
        },
        {"url": "https://example.org/x", "title": "X", "content": None, "engine": "ddg"},
    ],
}


class Fake:
    """A loopback HTTP server; ``respond(handler) -> (status, headers, body bytes)``."""

    def __init__(self, respond: Callable[[Any], tuple[int, dict[str, str], bytes]]) -> None:
        self.respond = respond
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                self.json_body = json.loads(body) if body else None
                fake.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": self.json_body,
                    }
                )
                status, headers, content = fake.respond(self)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that timed out and hung up is what some tests do

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[Callable[..., Fake]]:
    made: list[Fake] = []

    def make(respond: Any) -> Fake:
        server = Fake(respond if callable(respond) else lambda _h: (200, {}, respond))
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERPER_API_KEY", SECRET)
    monkeypatch.setenv("BRAVE_API_KEY", SECRET)


def ok(payload: Any) -> bytes:
    return json.dumps(payload).encode()


class Sleeps(list):
    """Records the waits instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


# -- the documented shapes ----------------------------------------------------------------


def test_serper_posts_the_query_with_the_key_header_and_reads_organic_results(fake):
    server = fake(ok(SERPER_ANSWER))
    hits = SerperRetriever(base_url=server.url).search(["capital of france"], 2)[0]
    (request,) = server.requests
    assert request["method"] == "POST" and request["path"] == "/search"
    assert request["headers"]["X-API-KEY"] == SECRET
    assert request["body"] == {"q": "capital of france", "num": 2}
    assert [h.document.id for h in hits] == [
        "https://en.wikipedia.org/France",  # the answer box comes first
        "https://en.wikipedia.org/wiki/Paris",
    ]
    assert hits[0].document.contents == '"France"\nParis'
    assert hits[1].document.contents == (
        '"Paris - Wikipedia"\nParis is the capital and largest city of France.'
    )
    assert [h.score for h in hits] == [1.0, 0.5]


def test_brave_gets_with_the_subscription_token_and_cleans_the_markup(fake):
    server = fake(ok(BRAVE_ANSWER))
    hits = BraveRetriever(base_url=server.url).search(["capital of france"], 5)[0]
    (request,) = server.requests
    assert request["method"] == "GET"
    url = urlsplit(request["path"])
    assert url.path == "/res/v1/web/search"
    assert parse_qs(url.query) == {"q": ["capital of france"], "count": ["5"]}
    assert request["headers"]["X-Subscription-Token"] == SECRET
    assert hits[0].document.contents == (
        '"Paris & France"\nParis is the capital of France. It has 2.1 million residents.'
    )
    assert [h.document.id for h in hits] == [
        "https://en.wikipedia.org/wiki/Paris",
        "https://example.org/lyon",
    ]


def test_brave_answer_without_web_results_is_no_hits(fake):
    server = fake(ok({"type": "search", "query": {"original": "zzz"}}))
    assert BraveRetriever(base_url=server.url).search(["zzz"], 3) == [[]]


def test_searxng_needs_no_key_and_asks_for_json(fake, monkeypatch):
    monkeypatch.delenv("SERPER_API_KEY")
    server = fake(ok(SEARXNG_ANSWER))
    hits = SearxngRetriever(base_url=server.url).search(["capital of france"], 1)[0]
    url = urlsplit(server.requests[0]["path"])
    assert url.path == "/search"
    assert parse_qs(url.query) == {"q": ["capital of france"], "format": ["json"]}
    assert [h.document.contents for h in hits] == ['"Paris"\nParis is the capital of France.']


def test_passages_are_capped_in_words_and_characters(fake):
    long = {"organic": [{"title": "T", "link": "u", "snippet": " ".join(["word"] * 50)}]}
    server = fake(ok(long))
    (hit,) = SerperRetriever(base_url=server.url, max_words=3).search(["q"], 1)[0]
    assert hit.document.contents == '"T"\nword word word ...'
    (hit,) = SerperRetriever(base_url=server.url, max_chars=13).search(["q"], 1)[0]
    assert hit.document.contents == '"T"\nword word ...'


# -- the key ------------------------------------------------------------------------------


def test_a_missing_key_names_the_environment_variable(monkeypatch):
    monkeypatch.delenv("SERPER_API_KEY")
    with pytest.raises(WebSearchError, match="SERPER_API_KEY"):
        SerperRetriever(base_url="http://127.0.0.1:9")
    monkeypatch.setenv("MY_KEY", SECRET)
    assert SerperRetriever(base_url="http://127.0.0.1:9", api_key_env="MY_KEY")._key == SECRET


@pytest.mark.parametrize("status", [401, 403])
def test_a_rejected_key_is_a_clear_error_naming_the_variable_not_the_key(fake, status):
    server = fake(lambda _h: (status, {}, ok({"message": f"Unauthorized key {SECRET}"})))
    retriever = BraveRetriever(base_url=server.url, retries=3)
    with pytest.raises(WebSearchError) as caught:
        retriever.search(["q"], 3)
    assert "BRAVE_API_KEY" in str(caught.value) and f"HTTP {status}" in str(caught.value)
    assert len(server.requests) == 1  # not retried: the same key would fail again
    for text in (str(caught.value), repr(retriever), json.dumps(retriever.fingerprint())):
        assert SECRET not in text


def test_an_echoed_key_in_an_error_body_is_redacted(fake):
    server = fake(lambda _h: (400, {}, f"bad request for key {SECRET}".encode()))
    with pytest.raises(WebSearchError) as caught:
        SerperRetriever(base_url=server.url).search(["q"], 1)
    assert "HTTP 400" in str(caught.value) and "***" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_the_key_is_not_in_the_query_cache_file(fake, tmp_path):
    server = fake(ok(SERPER_ANSWER))
    path = tmp_path / "q.sqlite"
    retriever = resolve_retriever(
        "serper", None, tmp_path, {"base_url": server.url, "cache": str(path)}
    )
    retriever.search(["capital of france"], 2)
    retriever.close()
    assert SECRET.encode() not in path.read_bytes()


# -- retries, Retry-After, slow and malformed answers --------------------------------------


def test_429_waits_at_least_what_retry_after_asks_then_succeeds(fake):
    answers = iter([(429, {"Retry-After": "7"}, b"slow down"), (200, {}, ok(SERPER_ANSWER))])
    server = fake(lambda _h: next(answers))
    sleeps = Sleeps()
    retriever = SerperRetriever(base_url=server.url, backoff=0.01, sleep=sleeps)
    hits = retriever.search(["capital of france"], 1)[0]
    assert hits[0].document.contents == '"France"\nParis'
    assert sleeps == [7.0] and len(server.requests) == 2
    assert retriever.stats()["requests"] == 2  # both requests counted


def test_a_retry_after_beyond_the_limit_fails_at_once_saying_so(fake):
    server = fake(lambda _h: (429, {"Retry-After": "3600"}, b""))
    retriever = SerperRetriever(base_url=server.url, max_retry_after=60, sleep=Sleeps())
    with pytest.raises(WebSearchError, match=r"3600s .Retry-After.*max_retry_after=60"):
        retriever.search(["q"], 1)
    assert len(server.requests) == 1


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after_seconds("12") == 12.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412500.0) == 10.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_backoff_doubles_between_retries_of_server_errors(fake):
    server = fake(lambda _h: (503, {}, b"busy"))
    sleeps = Sleeps()
    retriever = SerperRetriever(base_url=server.url, retries=3, backoff=1.0, sleep=sleeps)
    with pytest.raises(WebSearchError, match="gave up after 4 attempts; last error: HTTP 503"):
        retriever.search(["q"], 1)
    assert len(server.requests) == 4
    # Equal jitter: retry i waits between half and all of backoff * 2**(i-1).
    assert [0.5 <= sleeps[0] <= 1.0, 1.0 <= sleeps[1] <= 2.0, 2.0 <= sleeps[2] <= 4.0] == [True] * 3


def test_a_slow_answer_times_out_and_is_retried(fake):
    release = threading.Event()

    def respond(_h):
        if len(server.requests) == 1:
            release.wait(5)  # the first answer comes too late
        return 200, {}, ok(SEARXNG_ANSWER)

    server = fake(respond)
    retriever = SearxngRetriever(base_url=server.url, timeout=0.3, retries=1, sleep=Sleeps())
    hits = retriever.search(["capital of france"], 1)[0]
    release.set()
    assert hits[0].document.id == "https://en.wikipedia.org/wiki/Paris"
    assert len(server.requests) == 2


def test_an_always_slow_api_fails_naming_the_timeout(fake):
    release = threading.Event()
    server = fake(lambda _h: (release.wait(5), (200, {}, b"{}"))[1])
    retriever = SearxngRetriever(base_url=server.url, timeout=0.2, retries=1, sleep=Sleeps())
    try:
        with pytest.raises(WebSearchError, match=r"timed out: no whole answer within 0.2s"):
            retriever.search(["q"], 1)
    finally:
        release.set()


def test_malformed_json_is_retried_then_reported(fake):
    server = fake(lambda _h: (200, {}, b"<html>gateway error</html>"))
    retriever = SerperRetriever(base_url=server.url, retries=2, sleep=Sleeps())
    with pytest.raises(WebSearchError, match="answer is not JSON"):
        retriever.search(["q"], 1)
    assert len(server.requests) == 3


def test_json_in_the_wrong_shape_is_an_error_at_once(fake):
    server = fake(ok({"organic": "not a list"}))
    with pytest.raises(WebSearchError, match="serper's documented shape: 'organic' must be"):
        SerperRetriever(base_url=server.url).search(["q"], 1)
    assert len(server.requests) == 1


def test_requests_per_second_spaces_the_requests(fake):
    server = fake(ok(SEARXNG_ANSWER))
    sleeps = Sleeps()
    retriever = SearxngRetriever(base_url=server.url, requests_per_second=2, sleep=sleeps)
    retriever.search(["a", "b", "c"], 1)
    # Three starts at least 0.5 s apart: the 2nd and 3rd wait (about 0.5 and 1.0 s after
    # the 1st, less the time the requests themselves took).
    assert len(sleeps) == 2 and 0 < sleeps[0] <= 0.5 and 0.5 < sleeps[1] <= 1.0


# -- the budget ---------------------------------------------------------------------------


def test_a_batch_beyond_the_request_budget_sends_nothing_and_says_so(fake):
    server = fake(ok(SERPER_ANSWER))
    retriever = SerperRetriever(base_url=server.url, max_requests=3)
    retriever.search(["a", "b"], 1)
    with pytest.raises(BudgetExhausted, match=r"would pass max_requests=3 \(2 sent\)"):
        retriever.search(["c", "d"], 1)
    assert len(server.requests) == 2
    retriever.search(["c"], 1)  # what fits still runs
    assert retriever.stats()["requests"] == 3


def test_the_money_budget_uses_the_price_table_or_the_given_price(fake):
    server = fake(ok(SERPER_ANSWER))
    default = SerperRetriever(base_url=server.url, max_cost=0.0025)
    default.search(["a", "b"], 1)  # 2 x $0.001
    with pytest.raises(BudgetExhausted, match=r"max_cost=\$0.0025"):
        default.search(["c"], 1)
    priced = SerperRetriever(base_url=server.url, max_cost=1.0, price=0.5)
    priced.search(["a", "b"], 1)
    assert priced.stats()["cost_usd"] == 1.0
    with pytest.raises(BudgetExhausted):
        priced.search(["c"], 1)


def test_a_spent_budget_leaves_the_episode_unchanged_and_the_paid_answers_cached(fake, tmp_path):
    server = fake(ok(SERPER_ANSWER))
    env = MultiHopSearchEnv(
        retriever="serper",
        cache_dir=tmp_path,
        retriever_kwargs={"base_url": server.url, "max_requests": 1},
    )
    env.reset(seed=0)
    obs, *_ = env.step("<think>x</think><search>capital of france</search>")
    assert "Paris" in obs
    before = env.episode.record.response
    with pytest.raises(BudgetExhausted, match="search budget is spent"):
        env.step("<think>y</think><search>another query</search>")
    assert env.episode.record.response == before  # the step can be retried
    # A re-run with the same budget answers the paid query from the cache, asking nothing.
    again = MultiHopSearchEnv(
        retriever="serper",
        cache_dir=tmp_path,
        retriever_kwargs={"base_url": server.url, "max_requests": 1},
    )
    again.reset(seed=0)
    obs2, *_ = again.step("<think>x</think><search>capital of france</search>")
    assert obs2 == obs and len(server.requests) == 1
    assert again.retriever.inner.stats()["requests"] == 0


# -- by name ------------------------------------------------------------------------------


def test_each_provider_is_a_retriever_name_behind_the_query_cache(fake, tmp_path):
    server = fake(ok(SERPER_ANSWER))
    retriever = resolve_retriever("serper", None, tmp_path, {"base_url": server.url})
    assert isinstance(retriever, PersistentCachedRetriever)
    assert retriever.path == tmp_path / "web-search" / "serper.sqlite"
    assert retriever.fingerprint() == {
        "name": "serper",
        "url": server.url,
        "max_chars": 1000,
        "max_words": None,
    }
    bare = resolve_retriever("searxng", None, tmp_path, {"base_url": server.url, "cache": False})
    assert isinstance(bare, SearxngRetriever)


def test_a_yaml_config_selects_a_web_retriever_with_its_budget(tmp_path):
    from algorithms.config import TrainConfig

    path = tmp_path / "c.yaml"
    path.write_text(
        "env:\n  retriever: brave\n  retriever_kwargs:\n    max_requests: 200\n    max_cost: 0.5\n"
    )
    config = TrainConfig.from_yaml(path).validate(check_device=False)
    kwargs = config.env.to_env_kwargs()
    assert kwargs["retriever"] == "brave"
    assert kwargs["retriever_kwargs"] == {"max_requests": 200, "max_cost": 0.5}
    env = MultiHopSearchEnv(**{**kwargs, "cache_dir": tmp_path})
    assert env.retriever.inner.budget.max_requests == 200


def test_the_eval_command_runs_against_a_web_retriever_with_its_arguments(fake, tmp_path, capsys):
    from research_app import cli

    server = fake(ok(SERPER_ANSWER))
    code = cli.main(
        [
            "eval",
            "--policy",
            "oracle",
            "--limit",
            "2",
            "--retriever",
            "serper",
            "--retriever-arg",
            f"base_url={server.url}",
            "--retriever-arg",
            f"cache={json.dumps(str(tmp_path / 'q.sqlite'))}",
            "--retriever-arg",
            "max_requests=100",
        ]
    )
    assert code == 0
    assert server.requests and "oracle" in capsys.readouterr().out
    assert all(r["headers"]["X-API-KEY"] == SECRET for r in server.requests)


def fake_searxng() -> str:
    """A loopback SearXNG answering every search (the README's example runs against it)."""
    return Fake(lambda _h: (200, {}, ok(SEARXNG_ANSWER))).url
