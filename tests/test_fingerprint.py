"""Run fingerprints: equal setups hash equal, a change shows up as exactly that field, and
``research-env compare`` refuses runs whose fingerprints differ unless forced."""

from __future__ import annotations

import json

import pytest
from world import DOCS, SAMPLES, KeywordRetriever

from research_app import compare
from research_env.data import write_corpus_jsonl, write_qa_jsonl
from research_env.env import MultiHopSearchEnv
from research_env.fingerprint import (
    differing_fields,
    fingerprint,
    read_fingerprint,
    write_fingerprint,
)
from research_env.retrievers.controls import EmptyRetriever, RandomRetriever


@pytest.fixture
def files(tmp_path):
    write_qa_jsonl(SAMPLES, tmp_path / "dev.jsonl")
    write_corpus_jsonl(DOCS, tmp_path / "corpus.jsonl")
    return tmp_path


def env_for(files, **kwargs):
    base = {
        "dataset": str(files),
        "split": "dev",
        "corpus": str(files / "corpus.jsonl"),
        "retriever": "empty",
        "top_k": 2,
        "max_turns": 3,
        "cache_dir": str(files / "cache"),
    }
    return MultiHopSearchEnv(**{**base, **kwargs})


def test_equal_setups_have_equal_fingerprints(files):
    a = fingerprint(env_for(files), model="m")
    b = fingerprint(env_for(files), model="m")
    assert a == b and len(a["hash"]) == 64
    assert a["corpus"]["sha256"] and a["dataset"]["n"] == len(SAMPLES)
    assert a["retriever"] == {"name": "empty"} and a["reward"] == "research"
    json.dumps(a)  # plain JSON


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"top_k": 3}, "rules.top_k"),
        ({"max_turns": 5}, "rules.max_turns"),
        ({"template": "search-r1"}, "template"),
        ({"reward": "em"}, "reward"),
        ({"max_doc_words": 16}, "rules.max_doc_words"),
        ({"shaping": {"redundant_query": 0.1}}, "rules.shaping"),
    ],
)
def test_a_change_differs_in_exactly_that_field(files, change, field):
    a = fingerprint(env_for(files), model="m")
    b = fingerprint(env_for(files, **change), model="m")
    assert a["hash"] != b["hash"]
    changed = differing_fields(a, b)
    assert changed and all(f == field or f.startswith(field + ".") for f in changed), changed


def test_rules_that_are_off_leave_the_fingerprint_as_before_they_existed(files):
    # Recorded before max_doc_words and shaping existed: neither may appear while off.
    rules = fingerprint(env_for(files, shaping={"retrieval_gain": 0.0}), model="m")["rules"]
    assert "max_doc_words" not in rules and "shaping" not in rules
    assert rules["top_k"] == 2 and rules["max_turns"] == 3


def test_model_dataset_corpus_and_retriever_changes_are_named(files):
    a = fingerprint(env_for(files), model="m")
    assert differing_fields(a, fingerprint(env_for(files), model="other")) == ["model"]
    assert differing_fields(a, fingerprint(env_for(files, dataset=SAMPLES[:1]), model="m")) == [
        "dataset.n",
        "dataset.sha256",
    ]
    write_corpus_jsonl(DOCS[:3], files / "small.jsonl")
    smaller = fingerprint(env_for(files, corpus=str(files / "small.jsonl")), model="m")
    assert differing_fields(a, smaller) == ["corpus.sha256"]
    random = fingerprint(env_for(files, retriever="random"), model="m")
    assert set(differing_fields(a, random)) == {
        "retriever.name",
        "retriever.documents",
        "retriever.seed",
    }
    assert differing_fields(a, random, ignore=["retriever"]) == []


def test_a_copied_corpus_compares_equal(files, tmp_path_factory):
    copy = tmp_path_factory.mktemp("copy") / "corpus.jsonl"
    copy.write_bytes((files / "corpus.jsonl").read_bytes())
    assert fingerprint(env_for(files)) == fingerprint(env_for(files, corpus=str(copy)))


def test_retrievers_describe_themselves():
    assert RandomRetriever(DOCS, seed=3).fingerprint() == {
        "name": "random",
        "documents": 4,
        "seed": 3,
    }
    assert EmptyRetriever().fingerprint() == {"name": "empty"}
    # No fingerprint(): the class and its plain public attributes.
    env = MultiHopSearchEnv(dataset=SAMPLES, retriever=KeywordRetriever())
    described = fingerprint(env)["retriever"]
    assert described["name"].endswith("KeywordRetriever") and fingerprint(env)["corpus"] is None


def test_bm25_fingerprint_names_its_settings(files):
    described = fingerprint(env_for(files, retriever="bm25"))["retriever"]
    assert described["name"] == "bm25" and described["documents"] == len(DOCS)


def test_vector_env_and_cached_retriever_fingerprint_as_the_env(files):
    from research_env.retrievers.cache import CachedRetriever
    from research_env.vector import SearchVectorEnv

    single = fingerprint(env_for(files, retriever="bm25"))
    vector = fingerprint(SearchVectorEnv(2, **{**env_kw(files), "retriever": "bm25"}))
    assert vector == single
    env = env_for(files, retriever="bm25")
    env.retriever = CachedRetriever(env.retriever)
    assert fingerprint(env) == single


def env_kw(files):
    return {
        "dataset": str(files),
        "split": "dev",
        "corpus": str(files / "corpus.jsonl"),
        "top_k": 2,
        "max_turns": 3,
        "cache_dir": str(files / "cache"),
    }


def test_write_and_read(tmp_path):
    assert read_fingerprint(tmp_path) is None
    write_fingerprint(tmp_path, {"model": "m", "hash": "x"})
    assert read_fingerprint(tmp_path) == {"model": "m", "hash": "x"}


# -- research-env compare ------------------------------------------------------------------


def eval_run(directory, fp, em):
    directory.mkdir(parents=True)
    write_fingerprint(directory, fp)
    rows = [
        {"name": "direct", "overall": {"n": 2, "em": em / 2, "f1": 0.5, "format_valid": 1.0}},
        {"name": "agent", "overall": {"n": 2, "em": em, "f1": 0.7, "searches": 1.5}},
    ]
    (directory / "results.json").write_text(json.dumps(rows))
    return directory


def run_compare(capsys, *argv):
    parser = compare.make_parser()
    args = parser.parse_args(["compare", *map(str, argv)])
    code = args.handler(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_compare_prints_both_tables_side_by_side(files, tmp_path, capsys):
    fp = fingerprint(env_for(files), model="m")
    a = eval_run(tmp_path / "a", fp, 0.5)
    b = eval_run(tmp_path / "b", fp, 1.0)
    code, out, _ = run_compare(capsys, a, b)
    assert code == 0
    # EM ± half its Wilson interval on n = 2: z/(1 + z^2/2) = 0.671049 times
    # sqrt(p(1-p)/2 + z^2/16) = 0.604228 at p = 0.5 and 0.489991 at p = 1.
    assert "| agent | 0.500 ± 0.405 | 1.000 ± 0.329 | +0.500 |" in out
    assert "direct" in out and "searches" in out


def test_compare_refuses_different_fingerprints_unless_forced(files, tmp_path, capsys):
    a = eval_run(tmp_path / "a", fingerprint(env_for(files), model="m"), 0.5)
    b = eval_run(tmp_path / "b", fingerprint(env_for(files, top_k=5), model="m"), 1.0)
    code, out, err = run_compare(capsys, a, b)
    assert code == 1 and "rules.top_k" in err and "| agent |" not in out
    code, out, err = run_compare(capsys, a, b, "--force")
    assert code == 0 and "| agent |" in out and "rules.top_k" in err
    code, out, _ = run_compare(capsys, a, b, "--ignore", "rules.top_k")
    assert code == 0 and "| agent |" in out


def test_compare_refuses_a_run_without_fingerprint(files, tmp_path, capsys):
    a = eval_run(tmp_path / "a", fingerprint(env_for(files), model="m"), 0.5)
    b = tmp_path / "b"
    b.mkdir()
    (b / "results.json").write_text((a / "results.json").read_text())
    code, _, err = run_compare(capsys, a, b)
    assert code == 1 and "fingerprint.json" in err


def test_compare_reads_training_metrics(files, tmp_path, capsys):
    fp = fingerprint(env_for(files), model="m")
    runs = []
    for name, em in (("a", 0.25), ("b", 0.75)):
        d = tmp_path / name
        d.mkdir()
        write_fingerprint(d, fp)
        records = [
            {"step": 1, "episode/em": 0.0, "episode/f1": 0.1},
            {"step": 2, "episode/em": em, "episode/f1": 0.2, "eval/em": em, "eval/searches": 2},
        ]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        runs.append(d)
    code, out, _ = run_compare(capsys, *runs)
    assert code == 0 and "| eval (step 2) | 0.250 | 0.750 | +0.500 |" in out


def test_training_writes_its_fingerprint_and_warns_when_resumed_differently(
    files, tmp_path, capsys
):
    from algorithms.config import TrainConfig
    from research_app.train import write_run_fingerprint

    write_qa_jsonl(SAMPLES[:1], files / "train.jsonl")
    config = TrainConfig()
    config.output_dir = str(tmp_path / "run")
    config.env.dataset = str(files)
    config.env.corpus = str(files / "corpus.jsonl")
    config.env.retriever = "empty"
    config.eval.split = "dev"
    write_run_fingerprint(config)
    saved = read_fingerprint(tmp_path / "run")
    assert saved["model"] == config.model.name and saved["dataset"]["n"] == 1
    assert saved["eval_dataset"]["n"] == len(SAMPLES)
    config.env.max_turns = 7
    write_run_fingerprint(config)
    assert "fingerprint changed (rules.max_turns)" in capsys.readouterr().err
    assert read_fingerprint(tmp_path / "run")["rules"]["max_turns"] == 7
    # How the rollouts decode is part of it too: dtype and token limits.
    assert saved["decoding"] == {"decoding": "sampled T=1.0", "decode_dtype": "float32",
                                 "max_turn_tokens": 256, "max_total_tokens": 2048}  # fmt: skip
    config.rollout.max_total_tokens = 1024
    write_run_fingerprint(config)
    assert "fingerprint changed (decoding.max_total_tokens)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("results.json", b"[1, 2, 3]", r"results\.json: row 0 must be an object with a 'name'"),
        ("results.json", b'{"name": "agent"}', r"results\.json: expected a list of rows .* got dict"),
        ("results.json", b'[{"name": "agent", "overall": [1]}]', r"results\.json: row 0 must be"),
        ("results.json", b"[1, 2", r"results\.json \(research-env eval's rows\): invalid JSON"),
        ("results.json", b'[{"name": "caf\xe9"}]', r"results\.json \(research-env eval's rows\): not UTF-8"),
        ("results.json", b"[" * 100_000 + b"]" * 100_000, r"results\.json .*nested too deeply"),
        ("fingerprint.json", b"[1, 2, 3]", r"fingerprint\.json: a run fingerprint must be a JSON object, got list"),
        ("fingerprint.json", b'{"a": ' * 200 + b"1" + b"}" * 200, r"fingerprint\.json: .*nests deeper than 32"),
        ("fingerprint.json", b"[" * 100_000 + b"]" * 100_000, r"fingerprint\.json \(a run fingerprint\): .*deeply"),
        ("fingerprint.json", b'{"model": "\xff"}', r"fingerprint\.json \(a run fingerprint\): not UTF-8"),
        ("fingerprint.json", b'{"model": ', r"fingerprint\.json \(a run fingerprint\): invalid JSON"),
    ],
)  # fmt: skip
def test_compare_names_a_malformed_results_or_fingerprint_file(
    files, tmp_path, capsys, name, content, message
):
    fp = fingerprint(env_for(files), model="m")
    a = eval_run(tmp_path / "a", fp, 0.5)
    b = eval_run(tmp_path / "b", fp, 1.0)
    (b / name).write_bytes(content)
    with pytest.raises(ValueError, match=message):
        run_compare(capsys, a, b)
