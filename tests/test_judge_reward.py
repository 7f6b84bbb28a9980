"""The LLM judge, one implementation for evaluation and reward, against a loopback fake
OpenAI-compatible /v1/chat/completions endpoint: verdicts, the cache, batching per env
step, slow and malformed answers falling back to the declared reward (counted, logged)."""

from __future__ import annotations

import logging
import threading

import pytest
from test_web_search import Fake, ok
from world import SAMPLES, KeywordRetriever

from algorithms.config import TrainConfig
from research_env import MultiHopSearchEnv
from research_env.judge import EndpointJudge, JudgeError, judge_episodes, parse_verdict
from research_env.rewards import EpisodeRecord, JudgeReward, get_reward
from research_env.vector import SearchVectorEnv

ANSWER = "<think>x</think>\n<answer>\\boxed{{{}}}</answer>"


def completion(text: str) -> bytes:
    return ok(
        {"id": "c1", "object": "chat.completion", "choices": [{"message": {"content": text}}]}
    )


def grader(handler) -> tuple[int, dict[str, str], bytes]:
    """Says yes when the prediction is part of the reference answers."""
    prompt = handler.json_body["messages"][0]["content"]
    golden = prompt.split("Reference answer(s): ")[1].split("\n")[0]
    predicted = prompt.split("Predicted answer: ")[1].split("\n")[0]
    yes = predicted.lower() in golden.lower()
    return 200, {}, completion("Yes." if yes else "No")


@pytest.fixture
def endpoint():
    servers = []

    def make(respond=grader):
        server = Fake(respond)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def record(prediction, golden=("Ostravel",), question="Where?") -> EpisodeRecord:
    return EpisodeRecord(question=question, golden_answers=tuple(golden), prediction=prediction)


def test_parse_verdict_reads_yes_and_no_and_nothing_else():
    assert [parse_verdict(t) for t in ("Yes.", " no", "YES, it does", "**No**")] == [
        1.0,
        0.0,
        1.0,
        0.0,
    ]
    assert [parse_verdict(t) for t in ("", "maybe", "The answer is yes", "yesterday")] == [None] * 4


def test_endpoint_judge_speaks_openai_chat_completions(endpoint, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-judge-secret")
    server = endpoint()
    judge = EndpointJudge(f"{server.url}/v1", "grader")
    assert judge("Who wrote The Glass Tide?", ["Tamsy Orr"], "Orr") == 1.0
    assert judge("Who wrote The Glass Tide?", ["Tamsy Orr"], "Brisa") == 0.0
    first = server.requests[0]
    assert first["path"] == "/v1/chat/completions"
    assert first["headers"]["authorization"] == "Bearer sk-judge-secret"
    assert first["body"]["model"] == "grader" and first["body"]["temperature"] == 0.0
    assert "Tamsy Orr" in first["body"]["messages"][0]["content"]
    assert "sk-judge-secret" not in repr(judge) + judge.name


def test_verdicts_batch_judges_each_distinct_uncached_item_once(endpoint):
    server = endpoint()
    judge = EndpointJudge(server.url)
    judge("Q", ["Ostravel"], "Ostravel")
    got = judge.verdicts(
        [
            ("Q", ["Ostravel"], "Ostravel"),  # cached
            ("Q", ["Ostravel"], "Quesland"),
            ("Q", ["Ostravel"], "Quesland"),  # a repeat in the batch
            ("Q", ["Tamsy Orr"], "Orr"),
        ]
    )
    assert got == [(1.0, None), (0.0, None), (0.0, None), (1.0, None)]
    assert len(server.requests) == 3  # 1 before, then the 2 distinct new ones
    assert judge.stats() == {"requests": 3, "cache_hits": 2, "failures": {}}


def test_judge_reward_and_the_mix_with_f1(endpoint):
    server = endpoint()
    judge = get_reward("judge", {"url": server.url})
    assert judge(record("ostravel")) == 1.0 and judge(record("Quesland")) == 0.0
    assert judge(record(None)) == 0.0  # no prediction: no call
    assert len(server.requests) == 2
    mix = get_reward("judge+f1", {"url": server.url})
    # "ostravel port" vs "Ostravel": the judge says no (not a word of the reference), F1 =
    # 2 * (1/2 * 1) / (1/2 + 1) = 2/3; half of each: 0.5 * 0 + 0.5 * 2/3.
    assert mix(record("ostravel port")) == pytest.approx(1 / 3)
    weighted = get_reward("judge+f1", {"url": server.url, "weight": 0.8})
    assert weighted(record("Ostravel")) == pytest.approx(0.8 * 1 + 0.2 * 1)


def test_a_slow_judge_falls_back_to_the_declared_reward_and_says_so(endpoint, caplog):
    release = threading.Event()
    server = endpoint(lambda _h: (release.wait(5), (200, {}, completion("yes")))[1])
    reward = get_reward("judge", {"url": server.url, "timeout": 0.2, "retries": 1})
    try:
        with caplog.at_level(logging.WARNING, logger="research_env.rewards"):
            value = reward(record("Ostravel port"))  # F1 2/3, the fallback
    finally:
        release.set()
    assert value == pytest.approx(2 / 3)
    assert reward.stats()["fallbacks"] == 1
    assert reward.stats()["judge"]["failures"] == {"timeout": 1}
    assert len(server.requests) == 2  # a timeout is retried once
    assert "fell back to f1" in caplog.text and "no answer within 0.2s" in caplog.text


@pytest.mark.parametrize(
    "answer,kind",
    [
        ((200, {}, b"<html>oops</html>"), "malformed"),
        ((200, {}, ok({"choices": []})), "malformed"),
        ((200, {}, completion("I think so")), "malformed"),
        ((400, {}, b"bad model"), "http"),
    ],
)
def test_malformed_or_refused_answers_fall_back_and_are_counted(endpoint, answer, kind):
    server = endpoint(lambda _h: answer)
    reward = get_reward("judge", {"url": server.url, "fallback": 0.25})
    assert reward(record("Ostravel")) == 0.25
    assert reward(record("Ostravel")) == 0.25  # a failure is not cached: asked again
    assert reward.stats()["fallbacks"] == 2
    assert reward.stats()["judge"]["failures"] == {kind: 2}
    assert len(server.requests) == 2  # not retried: the same request fails the same way


def test_the_env_rewards_an_answer_with_the_judge(endpoint):
    server = endpoint()
    env = MultiHopSearchEnv(
        dataset=SAMPLES,
        retriever=KeywordRetriever(),
        reward="judge",
        reward_kwargs={"url": server.url},
    )
    env.reset(seed=0)
    sample = env.episode.sample
    _, reward, terminated, _, info = env.step(ANSWER.format(sample.golden_answers[0]))
    assert terminated and reward == 1.0 and info["em"] == 1.0
    assert len(server.requests) == 1


class SpyJudge:
    """Records how the reward asks: batches through ``verdicts``, never one by one."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def verdicts(self, items):
        self.batches.append(len(items))
        return [(1.0 if p == g[0] else 0.0, None) for _q, g, p in items]

    def __call__(self, question, golden, prediction):
        raise AssertionError("judged one by one")


def test_a_vector_env_step_judges_all_its_answers_in_one_batch():
    spy = SpyJudge()
    reward = JudgeReward(spy)
    envs = SearchVectorEnv(4, dataset=SAMPLES, retriever=KeywordRetriever(), reward=reward)
    envs.reset(seed=0)
    golds = [env.episode.sample.golden_answers[0] for env in envs.envs]
    turns = {0: ANSWER.format(golds[0]), 1: ANSWER.format("wrong"), 2: ANSWER.format(golds[2])}
    turns[3] = "<think>x</think>\n<search>Brisa Telk</search>"  # a search: nothing to judge
    outcomes = envs.step_turns(turns)
    assert spy.batches == [3]  # one call for the step's three answers
    assert [outcomes[i].reward for i in range(3)] == [1.0, 0.0, 1.0]
    assert reward.stats() == {"verdicts": 3, "fallbacks": 0, "fallback": "f1"}


def test_a_judge_reward_without_an_endpoint_is_a_clear_config_error(tmp_path):
    with pytest.raises(ValueError, match="reward 'judge' needs the judge's endpoint"):
        get_reward("judge")
    config = TrainConfig.from_dict({"env": {"reward": "judge"}})
    with pytest.raises(
        ValueError, match=r"env.reward: reward 'judge' needs.*env.reward_kwargs.url"
    ):
        config.validate(check_device=False)
    ok_config = TrainConfig.from_dict(
        {"env": {"reward": "judge+f1", "reward_kwargs": {"url": "http://127.0.0.1:9/v1"}}}
    )
    ok_config.validate(check_device=False)
    assert ok_config.env.to_env_kwargs()["reward_kwargs"] == {"url": "http://127.0.0.1:9/v1"}


def test_evaluation_uses_the_same_judge_and_names_a_question_it_could_not_judge(endpoint):
    server = endpoint()
    episodes = [
        {"question": "Q1", "golden_answers": ["Ostravel"], "prediction": "ostravel"},
        {"question": "Q1", "golden_answers": ["Ostravel"], "prediction": "ostravel"},
        {"question": "Q2", "golden_answers": ["Tamsy Orr"], "prediction": "Brisa"},
        {"question": "Q3", "golden_answers": ["x"], "prediction": None},
    ]
    judge_episodes(EndpointJudge(server.url), episodes)
    assert [e["judge"] for e in episodes] == [1.0, 1.0, 0.0, 0.0]
    assert len(server.requests) == 2
    broken = endpoint(lambda _h: (200, {}, completion("perhaps")))
    with pytest.raises(JudgeError, match=r"no verdict for question 'Q1'.*neither yes nor no"):
        judge_episodes(EndpointJudge(broken.url), episodes)


def fake_judge() -> str:
    """A loopback judge endpoint (the README's example runs against it)."""
    return Fake(grader).url + "/v1"
