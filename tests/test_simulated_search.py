"""``retriever="simulated"``: a language model writes the search results.

The engine's bookkeeping (modes, noise rate, curriculum, caching, the question's facts) is
checked with a recording writer; the local-LM writer with the tiny random model."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest

import algorithms  # noqa: F401  (registers the "lm" passage writer)
import research_env  # noqa: F401
from algorithms import simulated_search
from algorithms.simulated_search import LMPassageWriter, NoiseCurriculum
from research_env.data.types import QASample
from research_env.retrievers.simulated import (
    SimulatedSearchEngine,
    noise_curriculum,
    simulated_factory,
)
from research_env.vector import SearchVectorEnv

pytestmark = pytest.mark.usefixtures("one_thread")

SAMPLE = QASample(
    id="q1",
    question="Where was the founder of Krithbe Works born?",
    golden_answers=("Rorkrex",),
    metadata={
        "decomposition": [
            {"question": "Who founded Krithbe Works?", "answer": "Balrona Dyhas"},
            {"question": "In which city was #1 born?", "answer": "Rorkrex"},
        ]
    },
)


class RecordingWriter:
    """Writes ``passage <n>`` for the n-th prompt it ever saw; keeps every batch."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def write(self, prompts):
        start = sum(map(len, self.batches))
        self.batches.append(list(prompts))
        return [f"Title {start + i}\npassage {start + i}" for i in range(len(prompts))]

    def fingerprint(self):
        return {"name": "recording"}


def modes(hits):
    return [hit.document.id.split("-")[1] for hit in hits]


# -- the noise rate and the curriculum ---------------------------------------------------


def test_noise_rate_sets_how_many_of_the_k_passages_are_noisy():
    queries = [f"query {i}" for i in range(200)]
    for rate, expected in ((0.0, 0), (1.0, 4), (0.5, 2), (0.25, 1)):
        engine = SimulatedSearchEngine(RecordingWriter(), noise_rate=rate)
        results = engine.search(queries, 4)
        assert [modes(hits).count("noisy") for hits in results] == [expected] * 200
    # k * rate = 1.5: one or two noisy passages, 1.5 on average (seeded per query).
    engine = SimulatedSearchEngine(RecordingWriter(), noise_rate=0.5)
    counts = [modes(hits).count("noisy") for hits in engine.search(queries, 3)]
    assert set(counts) == {1, 2}
    assert 1.35 < sum(counts) / len(counts) < 1.65
    # Which slots lie is shuffled: not always the same position.
    positions = {modes(hits).index("noisy") for hits in engine.search(queries, 3)}
    assert positions == {0, 1, 2}


def test_curriculum_values_by_hand():
    linear = noise_curriculum(0.0, 0.8, steps=10)
    assert [linear(s) for s in (0, 5, 10, 20)] == pytest.approx([0.0, 0.4, 0.8, 0.8])
    # ZeroSearch's curve with base 4 at half way: (4 ** 0.5 - 1) / (4 - 1) = 1/3 of the way.
    curved = noise_curriculum(0.2, 0.8, steps=10, base=4.0)
    assert curved(5) == pytest.approx(0.2 + 0.6 / 3)


def test_set_step_moves_the_curriculum_and_the_callback_sets_it():
    engine = SimulatedSearchEngine(RecordingWriter(), noise_rate=noise_curriculum(0, 1, 4))
    assert modes(engine.search(["q"], 4)[0]).count("noisy") == 0
    env = SearchVectorEnv(num_envs=2, dataset=[SAMPLE], retriever=engine)
    algo = type("Algo", (), {"step": 2})()
    algo.engine = type("Engine", (), {"vector_env": env})()
    NoiseCurriculum()(algo, {})
    assert engine.current_noise_rate == 0.5
    assert modes(engine.search(["q"], 4)[0]).count("noisy") == 2
    algo.step = 4
    NoiseCurriculum()(algo, {})
    assert modes(engine.search(["q"], 4)[0]) == ["noisy"] * 4


def test_changing_the_rate_reuses_passages_already_written():
    writer = RecordingWriter()
    engine = SimulatedSearchEngine(writer, noise_rate=0.0)
    engine.search(["q"], 2)  # useful 1, useful 2
    engine.noise_rate = 1.0
    engine.search(["q"], 2)  # noisy 1, noisy 2
    engine.noise_rate = 0.5
    engine.search(["q"], 2)  # one of each: both written already
    assert [len(b) for b in writer.batches] == [2, 2]


# -- the question's facts -----------------------------------------------------------------


def test_useful_passages_are_written_from_the_questions_facts_through_the_env():
    writer = RecordingWriter()
    engine = SimulatedSearchEngine(writer, noise_rate=0.5)
    env = gym.make("ReSearch-MultiHop-v0", dataset=[SAMPLE], retriever=engine, top_k=2)
    env.reset(seed=0)
    observation, *_ = env.step("<think>x</think><search>Krithbe Works founder</search>")
    [batch] = writer.batches
    useful = [p for p in batch if "factually correct" in p]
    noisy = [p for p in batch if "irrelevant" in p]
    assert len(useful) == len(noisy) == 1
    assert "Who founded Krithbe Works? Balrona Dyhas" in useful[0]
    assert "In which city was Balrona Dyhas born? Rorkrex" in useful[0]  # "#1" filled in
    assert "Query: Krithbe Works founder" in useful[0]
    assert "Balrona" not in noisy[0] and "Rorkrex" not in noisy[0]
    assert "passage 0" in observation and "passage 1" in observation
    assert "(Title: Title 0)" in observation


def test_the_rag_baseline_writes_its_documents_from_the_questions_facts_too():
    from research_app.baselines import RetrieveOnceEnv

    writer = RecordingWriter()
    engine = SimulatedSearchEngine(writer, noise_rate=0.0)
    env = RetrieveOnceEnv(question_retriever=engine, dataset=[SAMPLE], top_k=1)
    prompt, info = env.reset(seed=0)
    assert "Who founded Krithbe Works? Balrona Dyhas" in writer.batches[0][0]
    assert "passage 0" in prompt and info["documents"][0].startswith("sim-useful-")


def test_supporting_documents_come_from_the_corpus(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        '{"id": "d7", "contents": "\\"Krithbe\\"\\nKrithbe was   founded in 1901."}\n'
    )
    sample = QASample("q2", "When?", ("1901",), {"supporting_doc_ids": ["d7"]})
    writer = RecordingWriter()
    engine = simulated_factory(corpus, writer=writer, mode="useful")
    engine.search_with_context(["Krithbe"], 1, [sample])
    assert "Krithbe was founded in 1901." in writer.batches[0][0]


def test_a_query_cache_file_keeps_the_facts_and_the_passages(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": "d1", "contents": "\\"A\\"\\ntext"}\n')
    writers = [RecordingWriter(), RecordingWriter()]
    for writer in writers:
        env = gym.make(
            "ReSearch-MultiHop-v0", dataset=[SAMPLE], corpus=corpus, retriever="simulated",
            retriever_kwargs={"writer": writer}, retriever_cache=tmp_path / "q.sqlite", top_k=1,
        )  # fmt: skip
        env.reset(seed=0)
        env.step("<think>t</think><search>founder</search>")
    assert "Balrona Dyhas" in writers[0].batches[0][0]  # the question reached the engine
    assert writers[1].batches == []  # the second env replayed the file


# -- the local-LM writer --------------------------------------------------------------------


@pytest.fixture
def generate_calls(monkeypatch):
    calls: list[int] = []
    real = simulated_search.generate

    def counting(model, input_ids, **kwargs):
        calls.append(len(input_ids))
        return real(model, input_ids, **kwargs)

    monkeypatch.setattr(simulated_search, "generate", counting)
    return calls


def test_lm_writer_is_deterministic_under_a_seed(tiny):
    def passages(seed):
        writer = LMPassageWriter(tiny, seed=seed, max_new_tokens=12)
        return [
            [h.document.contents for h in hits]
            for hits in SimulatedSearchEngine(writer, noise_rate=0.5).search(["a", "b c"], 2)
        ]

    first = passages(seed=3)
    assert passages(seed=3) == first
    assert passages(seed=4) != first
    assert len({text for hits in first for text in hits}) == 4  # four distinct passages


def test_one_generation_call_per_vector_env_step_and_none_for_repeats(tiny, generate_calls):
    engine = SimulatedSearchEngine(LMPassageWriter(tiny, max_new_tokens=8), noise_rate=0.5)
    samples = [SAMPLE, QASample("q3", "Who?", ("x",))]
    env = SearchVectorEnv(num_envs=3, dataset=samples, retriever=engine, top_k=2)
    env.reset(options={"indices": [0, 1, 0]})
    turns = [f"<think>t</think><search>{q}</search>" for q in ("alpha", "beta", "gamma")]
    env.step(turns)
    assert generate_calls == [6]  # 3 queries x top_k 2, one batch
    env.step(turns)  # the same queries for the same questions again: all cached
    assert generate_calls == [6]
    assert engine.hit_rate == pytest.approx(0.5)


def test_simulated_by_name_with_the_tiny_model_and_a_persistent_cache(tmp_path, generate_calls):
    kwargs = {"model": "tiny-random", "device": "cpu", "max_new_tokens": 8, "mode": "noisy"}
    cache = tmp_path / "passages.sqlite"

    def observe() -> str:
        env = gym.make(
            "ReSearch-MultiHop-v0", retriever="simulated", retriever_kwargs=kwargs,
            retriever_cache=cache, top_k=2,
        )  # fmt: skip
        env.reset(seed=0)
        return env.step("<think>t</think><search>who founded it</search>")[0]

    first = observe()
    assert generate_calls == [2]
    assert observe() == first  # a new process would replay the file the same way
    assert generate_calls == [2]
    assert first.count("Doc ") == 2


# -- bad configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"writer": "gpt-9"}, "unknown writer 'gpt-9'.*import algorithms.simulated_search"),
        ({"mode": "helpful"}, "mode must be 'useful' or 'noisy', got 'helpful'"),
        ({"mode": "noisy", "noise_rate": 0.5}, "mode or noise_rate, not both"),
        ({"noise_rate": 1.5}, r"noise_rate must be a number in \[0, 1\].*got 1.5"),
        ({"writer": RecordingWriter(), "model": "x"}, r"\['model'\] configure a named writer"),
        ({"writer": object()}, "writer must have write"),
    ],
)
def test_bad_configuration_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        simulated_factory(None, **kwargs)


def test_bad_curriculum_and_writer_answers_are_named():
    engine = SimulatedSearchEngine(RecordingWriter(), noise_rate=lambda step: 2.0)
    engine.set_step(7)
    with pytest.raises(ValueError, match=r"noise_rate\(7\) must be a number in \[0, 1\]"):
        engine.search(["q"], 2)

    class ShortWriter(RecordingWriter):
        def write(self, prompts):
            return ["only one"]

    with pytest.raises(RuntimeError, match=r"ShortWriter\.write returned 1 items for 3 prompts"):
        SimulatedSearchEngine(ShortWriter()).search(["q"], 3)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        LMPassageWriter("tiny-random", max_new_tokens=0)
    with pytest.raises(ValueError, match="no simulated search engine"):
        env = SearchVectorEnv(num_envs=1, dataset=[SAMPLE], retriever=RecordingWriterRetriever())
        algo = type("Algo", (), {"step": 1, "engine": type("E", (), {"vector_env": env})()})()
        NoiseCurriculum()(algo, {})


class RecordingWriterRetriever:
    def search(self, queries, k):
        return [[] for _ in queries]


# -- benchmarks/simulated_search.py ----------------------------------------------------------


def test_benchmark_row_numbers_by_hand():
    from benchmarks.simulated_search import noisy_share, row

    def episode(em, ids=()):
        return {"em": em, "f1": em, "format_valid": True, "searches": 1, "retrieved_doc_ids": ids}

    reference = [episode(1), episode(1), episode(0), episode(0)]
    episodes = [episode(1, ["sim-noisy-a", "sim-useful-b"]), episode(0, ["d1"]), episode(1), episode(1, ["sim-noisy-c"])]  # fmt: skip
    numbers = row("simulated/noisy", episodes, reference)
    assert numbers["em"] == 0.75
    # Wilson, 3 of 4, z = 1.96: centre 0.6275, half-width 0.3269.
    assert numbers["em_interval"] == pytest.approx([0.3006, 0.9544], abs=1e-4)
    assert numbers["em_change"] == 0.25  # (0 - 1 + 1 + 1) / 4
    assert numbers["noisy_share"] == pytest.approx(2 / 3)
    assert noisy_share([episode(1, ["d1"])]) != noisy_share([episode(1, ["d1"])])  # NaN: none


def test_benchmark_runs_on_four_questions_with_tiny_models(tmp_path, capsys):
    from benchmarks.simulated_search import RETRIEVERS, main

    out = tmp_path / "simulated.json"
    argv = ["--model", "tiny-random", "--simulator", "tiny-random", "--questions", "4",
            "--max-turn-tokens", "8", "--max-total-tokens", "64", "--passage-tokens", "4",
            "--device", "cpu", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    written = json.loads(out.read_text())
    rows = written["rows"]
    assert [r["retriever"] for r in rows] == list(RETRIEVERS)
    # Each retriever's episodes, kept so their answers can be judged again.
    assert list(written["episodes"]) == list(RETRIEVERS)
    first = written["episodes"]["bm25"]
    assert len(first) == 4 and first[0]["question"] and first[0]["golden_answers"]
    assert "prediction" in first[0]
    assert all(r["questions"] == 4 for r in rows)
    printed = capsys.readouterr().out
    assert "| retriever | EM [95% CI] |" in printed and printed.count("\n| ") == 5
