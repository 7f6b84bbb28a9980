"""LLM-as-judge, the part that needs no torch: one implementation for evaluation and reward.

A judge decides whether a predicted answer means the same as a golden answer, where
exact match would reject "J. K. Rowling" for "Joanne Rowling". Evaluation
(:mod:`research_app.judge`, ``research-env eval --judge``) and the training reward
(``env.reward: judge`` in :mod:`research_env.rewards`) both use what is here:

* :data:`JUDGE_PROMPT` / :func:`judge_prompt`: the question, the references and the
  prediction, asking for one word;
* :func:`parse_verdict`: ``yes`` -> 1.0, ``no`` -> 0.0, anything else -> None (a reply
  that is neither is *malformed*, not a "no");
* :class:`EndpointJudge`: an OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM,
  SGLang, llama.cpp's server, a hosted API) with a cache of verdicts, a total deadline per
  request, bounded retries, and :meth:`EndpointJudge.verdicts`, which judges a batch (one
  env step's answers) with up to ``max_concurrency`` requests in flight and never raises:
  a verdict it could not get is None with the reason, counted in :meth:`~EndpointJudge.stats`.
* :func:`judge_episodes`: evaluation's per-episode ``judge`` score.

The local Hugging Face model judge (``LocalJudge``) needs torch and lives in
:mod:`research_app.judge`; it is a plain :data:`JudgeFn`, which the reward also accepts.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpcore

from research_env.retrievers.http_deadline import (
    AnswerTooLarge,
    DeadlineBackend,
    deadline_request,
)

__all__ = [
    "JUDGE_PROMPT",
    "EndpointJudge",
    "JudgeError",
    "JudgeFn",
    "judge_episodes",
    "judge_prompt",
    "parse_verdict",
]

# question, golden answers, prediction -> 1.0 if the judge accepts the prediction.
JudgeFn = Callable[[str, Sequence[str], str], float]
# One thing to judge: (question, golden answers, prediction).
Item = tuple[str, Sequence[str], str]

JUDGE_PROMPT = (
    "You grade answers to questions. Reply with one word: yes or no.\n"
    "Question: {question}\n"
    "Reference answer(s): {golden}\n"
    "Predicted answer: {prediction}\n"
    "Does the predicted answer mean the same as a reference answer?"
)


def judge_prompt(question: str, golden: Sequence[str], prediction: str) -> str:
    return JUDGE_PROMPT.format(question=question, golden=" | ".join(golden), prediction=prediction)


def parse_verdict(reply: str) -> float | None:
    """1.0 for a reply whose first word is "yes", 0.0 for "no" (any case, punctuation
    around it ignored), None for anything else."""
    words = reply.strip().split(maxsplit=1)
    first = words[0].strip(".,!:;\"'*`()[]").lower() if words else ""
    return {"yes": 1.0, "no": 0.0}.get(first)


class JudgeError(RuntimeError):
    """The judge could not give a verdict; the message says why."""


class EndpointJudge:
    """An OpenAI-compatible chat-completions endpoint as judge.

    Arguments:
        url: the API root (``http://localhost:8000/v1``) or the full
            ``.../chat/completions`` URL.
        model: the model name sent in each request.
        api_key: a key sent as ``Authorization: Bearer``; without it, the variable
            ``api_key_env`` (default ``OPENAI_API_KEY``) is read when set. Never shown in
            ``repr``, :attr:`name` or an error.
        timeout: seconds for one request, in all (a slow endpoint cannot stall a step).
        retries: further attempts after a timeout, a connection error, 429 or 5xx.
        max_concurrency: requests in flight at once in :meth:`verdicts`.
        cache_size: verdicts remembered (least recently used dropped); 0 = none.
        max_tokens: the reply's token budget (one word is enough).

    Counters (:meth:`stats`): ``requests`` sent, ``cache_hits``, and ``failures`` by
    reason (``timeout``, ``http``, ``malformed``, ``connection``).
    """

    def __init__(
        self,
        url: str,
        model: str = "default",
        *,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 30.0,
        retries: int = 1,
        max_concurrency: int = 8,
        cache_size: int = 100_000,
        max_tokens: int = 4,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"judge url must start with http:// or https://, got {url!r}")
        if timeout <= 0 or retries < 0 or max_concurrency < 1 or cache_size < 0:
            raise ValueError(
                "need timeout > 0, retries >= 0, max_concurrency >= 1 and cache_size >= 0"
            )
        base = url.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.model = model
        self.name = f"{model} @ {url}"
        self.timeout, self.retries = timeout, retries
        self.max_concurrency, self.cache_size, self.max_tokens = (
            max_concurrency,
            cache_size,
            max_tokens,
        )
        key = api_key or os.environ.get(api_key_env) or None
        self._headers = {"content-type": "application/json"}
        if key:
            self._headers["authorization"] = f"Bearer {key}"
        self._cache: OrderedDict[tuple[str, tuple[str, ...], str], float] = OrderedDict()
        self._lock = threading.Lock()
        self.requests = 0
        self.cache_hits = 0
        self.failures: Counter[str] = Counter()
        self._pool = httpcore.ConnectionPool(
            network_backend=DeadlineBackend(), max_connections=max_concurrency
        )
        self._threads: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------------ judging
    def __call__(self, question: str, golden: Sequence[str], prediction: str) -> float:
        """1.0 or 0.0; :class:`JudgeError` when no verdict could be had."""
        ((verdict, reason),) = self.verdicts([(question, golden, prediction)])
        if verdict is None:
            raise JudgeError(f"judge {self.url}: no verdict ({reason})")
        return verdict

    def verdicts(self, items: Sequence[Item]) -> list[tuple[float | None, str | None]]:
        """``(verdict, None)`` or ``(None, reason)`` per item, in order. Cached verdicts and
        repeats in the batch cost nothing; the rest go out concurrently. Never raises for
        an endpoint's failure (the reason says what happened)."""
        keys = [(q, tuple(g), p) for q, g, p in items]
        out: dict[tuple[str, tuple[str, ...], str], tuple[float | None, str | None]] = {}
        todo = []
        with self._lock:
            for key in keys:
                if key in out:
                    continue
                if key in self._cache:
                    self._cache.move_to_end(key)
                    out[key] = (self._cache[key], None)
                    self.cache_hits += 1
                else:
                    out[key] = (None, "pending")
                    todo.append(key)
            self.cache_hits += len(keys) - len(out)  # repeats within the batch
        if len(todo) == 1:
            out[todo[0]] = self._judge_one(todo[0])
        elif todo:
            if self._threads is None:
                self._threads = ThreadPoolExecutor(self.max_concurrency, "judge")
            out.update(zip(todo, self._threads.map(self._judge_one, todo), strict=True))
        return [out[key] for key in keys]

    def _judge_one(self, key: tuple[str, tuple[str, ...], str]) -> tuple[float | None, str | None]:
        body = json.dumps(
            {
                "model": self.model,
                "messages": [{"role": "user", "content": judge_prompt(*key)}],
                "max_tokens": self.max_tokens,
                "temperature": 0.0,
            }
        ).encode("utf-8")
        reason = "no attempt made"
        for _attempt in range(self.retries + 1):
            with self._lock:
                self.requests += 1
            kind, reason, verdict = self._ask(body)
            if verdict is not None:
                with self._lock:
                    if self.cache_size:
                        self._cache[key] = verdict
                        while len(self._cache) > self.cache_size:
                            self._cache.popitem(last=False)
                return verdict, None
            if kind not in ("timeout", "connection", "busy"):
                break  # the same request would be refused or misread again
        with self._lock:
            self.failures["http" if kind == "busy" else kind] += 1
        return None, reason

    def _ask(self, body: bytes) -> tuple[str, str, float | None]:
        """``(failure kind, reason, verdict)``: one request and its reading."""
        try:
            status, _headers, content = deadline_request(
                self._pool, "POST", self.url, self._headers, body, self.timeout, 1 << 20
            )
        except httpcore.TimeoutException:
            return "timeout", f"no answer within {self.timeout}s", None
        except (httpcore.NetworkError, httpcore.ProtocolError) as error:
            return "connection", f"{type(error).__name__}: {error}", None
        except AnswerTooLarge as error:
            return "malformed", str(error), None
        if status == 429 or status >= 500:
            return "busy", f"HTTP {status}", None
        if status >= 400:
            text = content[:200].decode("utf-8", "replace")
            return "http", f"HTTP {status}: {text}", None
        try:
            reply = json.loads(content)["choices"][0]["message"]["content"] or ""
            if not isinstance(reply, str):
                raise TypeError(type(reply).__name__)
        except (ValueError, KeyError, IndexError, TypeError, RecursionError):
            return "malformed", f"not a chat completion: {content[:120]!r}", None
        verdict = parse_verdict(reply)
        if verdict is None:
            return "malformed", f"the reply is neither yes nor no: {reply[:80]!r}", None
        return "", "", verdict

    # ----------------------------------------------------------------------- lifetime
    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "cache_hits": self.cache_hits,
                "failures": dict(self.failures),
            }

    def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=True)
            self._threads = None
        self._pool.close()

    def __repr__(self) -> str:
        return f"EndpointJudge({self.url!r}, model={self.model!r})"


def judge_episodes(judge: JudgeFn, episodes: Sequence[dict[str, Any]]) -> None:
    """Set ``episode["judge"]``: 1.0/0.0 from ``judge``; 0.0 without calling it when there
    is no prediction. Identical (question, prediction) pairs are judged once; a judge with
    ``verdicts`` (an :class:`EndpointJudge`) gets them all in one batch, and a verdict it
    could not give is a :class:`JudgeError` naming the question."""
    pairs: dict[tuple[str, str], Item] = {}
    for e in episodes:
        if e.get("prediction"):
            pairs.setdefault(
                (e["question"], e["prediction"]),
                (e["question"], e["golden_answers"], e["prediction"]),
            )
    batch = getattr(judge, "verdicts", None)
    found: dict[tuple[str, str], float] = {}
    if batch is not None:
        for pair, (verdict, reason) in zip(pairs, batch(list(pairs.values())), strict=True):
            if verdict is None:
                raise JudgeError(f"no verdict for question {pair[0]!r:.80}: {reason}")
            found[pair] = verdict
    else:
        found = {pair: float(judge(*item)) for pair, item in pairs.items()}
    for e in episodes:
        prediction = e.get("prediction")
        e["judge"] = found[(e["question"], prediction)] if prediction else 0.0
