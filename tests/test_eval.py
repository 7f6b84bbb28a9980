"""The evaluation harness: three baselines with a tiny random model on the tiny world,
pass@k against hand-computed values, the report, the judge plumbing and the CLI."""

import argparse
import json

import pytest
from world import DOCS, SAMPLES, KeywordRetriever

from algorithms.policy import load_policy
from algorithms.rollout import Sampling
from research_app import evaluate
from research_app.baselines import NoRetriever, RetrieveOnceEnv, baseline_vector_env
from research_app.harness import evaluate_baselines, evaluate_model, evaluate_scripted
from research_app.judge import LocalJudge, judge_episodes
from research_app.report import report, save_results
from research_env.env import MultiHopSearchEnv
from research_env.metrics import pass_at_k, pass_at_k_values, reported_ks, summarize

FAST = Sampling(greedy=True, max_turn_tokens=6, max_total_tokens=200)


@pytest.fixture(scope="module")
def policy():
    return load_policy("tiny-random")


def world(retriever, **extra):
    return {"dataset": SAMPLES, "retriever": retriever, "top_k": 2, "max_turns": 3, **extra}


# -- the three baselines ----------------------------------------------------------------------


def test_three_baselines_give_well_formed_results(policy):
    results = evaluate_baselines(
        policy, world(KeywordRetriever()), sampling=FAST, show_progress=False
    )
    assert [r.name for r in results] == ["direct", "rag", "agent"]
    for r in results:
        s = r.settings
        assert s["model"] == "tiny-random" and s["baseline"] == r.name
        assert s["dataset"] == "2 in-memory samples" and s["split"] == "train"
        assert s["top_k"] == 2 and s["samples"] == 1 and s["decoding"] == "greedy"
        for key in ("corpus", "retriever", "max_turns", "template", "max_turn_tokens"):
            assert key in s
        assert r.overall["n"] == 2 and len(r.episodes) == 2
        for key in ("em", "f1", "format_valid", "searches", "supporting_recall", "reward"):
            assert 0.0 <= r.overall[key] <= 3.0
        assert r.overall["response_tokens"] > 0
        assert set(r.by_hops) == {1, 2} and set(r.by_type) == {"compositional"}
        assert r.seconds > 0
        for e in r.episodes:
            assert e["question"] in {s.question for s in SAMPLES}
            assert len(e["turn_texts"]) == e["turns"] and 1 <= e["turns"] <= s["max_turns"]
            assert e["response_tokens"] <= FAST.max_total_tokens
    direct, rag, agent = results
    assert (direct.settings["template"], direct.settings["max_turns"]) == ("direct", 1)
    assert (rag.settings["template"], rag.settings["max_turns"]) == ("rag", 1)
    assert (agent.settings["template"], agent.settings["max_turns"]) == ("research", 3)
    assert direct.settings["retriever"] == "none"
    assert direct.overall["retrievals"] == 0 and rag.overall["retrievals"] == 1


def test_rag_prompt_holds_the_documents_retrieved_with_the_question(policy):
    retriever = KeywordRetriever()
    result = evaluate_model(
        policy, world(retriever), baseline="rag", sampling=FAST, show_progress=False
    )
    # One retrieval per question, with the question itself as the query.
    assert retriever.calls == [[SAMPLES[0].question], [SAMPLES[1].question]]
    by_id = {e["question_id"]: e for e in result.episodes}
    prompt = by_id["q2"]["prompt"]
    assert "Documents:\nDoc 1 (Title: Tamsy Orr) Tamsy Orr wrote The Glass Tide." in prompt
    assert prompt.rstrip().endswith("Question: Who wrote The Glass Tide?\n<think>".rstrip())
    assert by_id["q2"]["supporting_recall"] == 1.0  # d4 was in the prompt
    assert by_id["q2"]["retrieved_doc_ids"][0] == "d4"


def test_rag_env_searches_of_the_model_find_nothing():
    retriever = KeywordRetriever()
    env = RetrieveOnceEnv(question_retriever=retriever, dataset=SAMPLES, template="rag")
    prompt, info = env.reset(options={"index": 0})
    assert "Brisa Telk is an engineer who founded Quimby Forge." in prompt
    assert info["documents"][0] == "d1"
    obs, *_ = env.step("<search>Quimby Forge headquarters</search>")
    assert "No documents found." in obs
    assert len(retriever.calls) == 1  # only the question's retrieval


def test_direct_makes_no_retrieval_calls(policy):
    retriever = KeywordRetriever()
    evaluate_model(policy, world(retriever), baseline="direct", sampling=FAST, show_progress=False)
    assert retriever.calls == []
    # A direct-answer model that tries to search anyway gets nothing and no second turn.
    base = MultiHopSearchEnv(**world(retriever))
    (env,) = baseline_vector_env("direct", world(retriever), base, 1).envs
    env.reset(options={"index": 0})
    _, reward, terminated, truncated, info = env.step("<search>Brisa Telk</search>")
    assert retriever.calls == [] and isinstance(env.retriever, NoRetriever)
    assert truncated and not terminated and info["termination"] == "turn_budget"
    assert info["retrieved_doc_ids"] == []


def test_agent_prompt_is_the_envs_prompt(policy):
    retriever = KeywordRetriever()
    result = evaluate_model(
        policy, world(retriever), baseline="agent", limit=1, sampling=FAST, show_progress=False
    )
    env = MultiHopSearchEnv(**world(KeywordRetriever()))
    prompt, _ = env.reset(options={"index": 0})
    (episode,) = result.episodes
    assert episode["prompt"] == prompt
    text = prompt + "".join(t["model"] + t["observation"] for t in episode["turn_texts"])
    assert text.startswith(prompt) and len(episode["turn_texts"]) == episode["turns"]


def test_pass_at_k_needs_sampled_decoding(policy):
    with pytest.raises(ValueError, match="greedy decoding repeats one episode"):
        evaluate_model(policy, world(KeywordRetriever()), sampling=FAST, samples=2)


def test_samples_per_question_gives_pass_at_k(policy):
    sampling = Sampling(temperature=1.0, max_turn_tokens=4, max_total_tokens=100, seed=0)
    result = evaluate_model(
        policy,
        world(KeywordRetriever()),
        sampling=sampling,
        samples=2,
        batch_size=4,
        show_progress=False,
    )
    assert len(result.episodes) == 4 and result.overall["n"] == 2
    assert [e["sample"] for e in result.episodes] == [0, 1, 0, 1]
    assert result.settings["decoding"] == "sampled T=1.0"
    assert result.overall["pass@1"] == pytest.approx(result.overall["em"])
    assert "pass@2" in result.overall and "pass@2" in report([result])


# -- pass@k -----------------------------------------------------------------------------------


def test_pass_at_k_hand_values():
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(5, 2, 3) == pytest.approx(0.9)  # 1 - C(3,3)/C(5,3) = 1 - 1/10
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)  # 1 - C(2,2)/C(4,2)
    assert pass_at_k(3, 0, 3) == 0.0
    assert pass_at_k(3, 3, 1) == 1.0
    assert pass_at_k(4, 3, 2) == 1.0  # fewer than k wrong samples: a pair always has a hit
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_pass_at_k_means_over_questions():
    correct = [[True, False, False, False], [True, True, False, False]]
    values = pass_at_k_values(correct, [1, 2, 4])
    assert values["pass@1"] == pytest.approx((0.25 + 0.5) / 2)
    assert values["pass@2"] == pytest.approx((0.5 + 5 / 6) / 2)
    assert values["pass@4"] == 1.0
    assert (
        reported_ks(1) == [1] and reported_ks(5) == [1, 2, 4, 5] and reported_ks(8) == [1, 2, 4, 8]
    )


def test_summarize_counts_questions_averages_extras_and_adds_pass_at_k():
    def ep(qid, em, tokens, hops):
        return {"question_id": qid, "em": em, "f1": em, "reward": em, "hops": hops,
                "response_tokens": tokens, "retrievals": 1}  # fmt: skip

    episodes = [ep("a", 1.0, 10, 1), ep("a", 0.0, 20, 1), ep("b", 0.0, 30, 2), ep("b", 0.0, 40, 2)]
    out = summarize(episodes, ("em", "response_tokens", "retrievals"))
    assert out["n"] == 2 and out["em"] == pytest.approx(0.25)
    assert out["response_tokens"] == pytest.approx(25.0) and out["retrievals"] == 1.0
    assert out["pass@1"] == pytest.approx(0.25) and out["pass@2"] == pytest.approx(0.5)


# -- judge ------------------------------------------------------------------------------------


def test_judge_plumbing_with_a_fake_judge():
    calls = []

    def judge(question, golden, prediction):
        calls.append((question, tuple(golden), prediction))
        return 1.0 if prediction.lower() == golden[0].lower() else 0.0

    episodes = [
        {"question": "Q1", "golden_answers": ["Ostravel"], "prediction": "ostravel"},
        {"question": "Q1", "golden_answers": ["Ostravel"], "prediction": "ostravel"},
        {"question": "Q1", "golden_answers": ["Ostravel"], "prediction": "Quesland"},
        {"question": "Q2", "golden_answers": ["Tamsy Orr"], "prediction": None},
    ]
    judge_episodes(judge, episodes)
    assert [e["judge"] for e in episodes] == [1.0, 1.0, 0.0, 0.0]
    # Repeated (question, prediction) pairs are judged once; no prediction, no call.
    assert calls == [("Q1", ("Ostravel",), "ostravel"), ("Q1", ("Ostravel",), "Quesland")]
    assert summarize(
        [{**e, "question_id": e["question"], "reward": 0.0} for e in episodes], ["judge"]
    )["judge"] == pytest.approx(0.5)


def test_evaluate_model_adds_the_judge_metric(policy):
    seen = []

    def judge(question, golden, prediction):
        seen.append(prediction)
        return 1.0

    result = evaluate_model(
        policy, world(KeywordRetriever()), sampling=FAST, judge=judge, show_progress=False
    )
    assert "judge" in result.overall and 0.0 <= result.overall["judge"] <= 1.0
    assert len(seen) == sum(1 for e in result.episodes if e["prediction"])
    assert "judge" in report([result])


# The endpoint judge: tests/test_judge_reward.py (against a loopback endpoint).


def test_local_judge_returns_a_verdict(policy):
    judge = LocalJudge(policy)
    assert judge("Who wrote The Glass Tide?", ["Tamsy Orr"], "Tamsy Orr") in (0.0, 1.0)


# -- report, files, CLI -----------------------------------------------------------------------


def test_report_and_saved_files(policy, tmp_path):
    results = evaluate_baselines(
        policy, world(KeywordRetriever()), ["direct", "agent"], sampling=FAST, show_progress=False
    )
    text = report(results)
    for part in ("## Settings", "## Overall", "## By hop count", "## By question type"):
        assert part in text
    for part in ("| direct |", "| agent |", "agent, 2 hops", "response_tokens", "retrievals"):
        assert part in text
    save_results(results, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["name"] for r in saved] == ["direct", "agent"]
    assert saved[1]["settings"]["template"] == "research"
    assert "prompt" not in saved[1]["episodes"][0] and "em" in saved[1]["episodes"][0]
    lines = (tmp_path / "transcripts" / "agent.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert len(lines) == 2 and first["prompt"].startswith("Answer the question")
    assert {"model", "observation"} <= set(first["turn_texts"][0])


def test_scripted_evaluation_still_reports():
    result = evaluate_scripted(
        "oracle", dataset=SAMPLES, retriever=KeywordRetriever(), top_k=2, show_progress=False
    )
    assert result.overall["em"] == 1.0 and set(result.by_type) == {"compositional"}
    assert "| oracle |" in report([result])


def make_parser():
    parser = argparse.ArgumentParser(prog="research-env")
    evaluate.register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_help_lists_the_llm_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        make_parser().parse_args(["eval", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--model", "--baselines", "--samples-per-question", "--judge", "--limit"):
        assert flag in out


def test_cli_runs_a_model_on_a_jsonl_dataset(tmp_path, capsys):
    from research_env.data import write_corpus_jsonl, write_qa_jsonl

    write_qa_jsonl(SAMPLES, tmp_path / "dev.jsonl")
    write_corpus_jsonl(DOCS, tmp_path / "corpus.jsonl")
    out = tmp_path / "out"
    args = make_parser().parse_args(
        [
            "eval",
            "--model",
            "tiny-random",
            "--dataset",
            str(tmp_path),
            "--corpus",
            str(tmp_path / "corpus.jsonl"),
            "--limit",
            "1",
            "--max-turn-tokens",
            "4",
            "--max-total-tokens",
            "60",
            "--out",
            str(out),
        ]
    )
    assert args.handler(args) == 0
    printed = capsys.readouterr().out
    assert "| direct |" in printed and "| rag |" in printed and "| agent |" in printed
    assert (out / "results.md").exists() and (out / "transcripts" / "rag.txt").exists()
    # Token transcripts for `research-env view`: one record per episode of each baseline.
    from algorithms.transcripts import read_transcripts

    records = list(read_transcripts(out / "transcripts" / "eval.tokens.jsonl"))
    assert len(records) == 3


def test_model_eval_decodes_in_auto_precision_and_compare_refuses_another_dtype(tmp_path, capsys):
    """``eval --model`` defaults to ``auto`` precision like train and demo (it was bf16),
    and the fingerprint records dtype and token limits, so ``compare`` will not put two
    runs side by side that decoded differently."""
    from algorithms.precision import resolve_precision
    from research_app.cli import main
    from research_env.fingerprint import read_fingerprint

    cheap = ["eval", "--model", "tiny-random", "--baselines", "direct", "--limit", "1",
             "--max-turn-tokens", "4", "--max-total-tokens", "40"]  # fmt: skip
    assert main([*cheap, "--out", str(tmp_path / "auto")]) == 0
    settings = json.loads((tmp_path / "auto" / "results.json").read_text())[0]["settings"]
    assert settings["rollout_dtype"] == "auto"
    expected = resolve_precision("auto", "cpu") or "float32"
    decoding = read_fingerprint(tmp_path / "auto")["decoding"]
    assert decoding == {"decoding": "greedy", "decode_dtype": expected,
                        "max_turn_tokens": 4, "max_total_tokens": 40}  # fmt: skip
    other = "float32" if expected == "bfloat16" else "bfloat16"
    assert main([*cheap, "--rollout-dtype", other, "--out", str(tmp_path / "other")]) == 0
    assert main([*cheap, "--max-turn-tokens", "5", "--out", str(tmp_path / "longer")]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "auto"), str(tmp_path / "other")]) == 1
    assert f"decoding.decode_dtype: '{expected}' vs '{other}'" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "auto"), str(tmp_path / "longer")]) == 1
    assert "decoding.max_turn_tokens: 4 vs 5" in capsys.readouterr().err
