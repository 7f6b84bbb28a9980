"""The synthetic multi-hop world: determinism, split hygiene, answerable decompositions,
and the cached default world."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from research_env.data import default_world_dir, load_corpus, load_split, read_qa_jsonl
from research_env.data.synthetic import SyntheticConfig, generate, write_world

SMALL = SyntheticConfig(
    seed=3, n_countries=5, n_cities=40, n_people=300, n_orgs=100, n_works=150, n_questions=400
)
PLACEHOLDER = re.compile(r"#(\d+)")


@pytest.fixture(scope="module")
def world():
    return generate(SMALL)


@pytest.fixture(scope="module")
def default_world():
    return generate()


def all_samples(world):
    return [s for samples in world.splits.values() for s in samples]


def file_digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# ------------------------------------------------------------------ determinism


def test_same_seed_writes_byte_identical_files(tmp_path, world):
    write_world(world, tmp_path / "a")
    write_world(generate(SMALL), tmp_path / "b")
    digests = file_digests(tmp_path / "a")
    assert sorted(digests) == [
        "corpus.jsonl",
        "dev.jsonl",
        "test.jsonl",
        "train.jsonl",
        "world.json",
    ]
    assert digests == file_digests(tmp_path / "b")


def test_same_seed_is_identical_across_processes_with_other_hash_seeds(tmp_path, world):
    """Set iteration order changes with PYTHONHASHSEED; the world must not."""
    write_world(world, tmp_path / "here")
    code = (
        "import json, sys; from research_env.data.synthetic import *; "
        "write_world(generate(SyntheticConfig.from_json(json.loads(sys.argv[1]))), sys.argv[2])"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    subprocess.run(
        [sys.executable, "-c", code, json.dumps(SMALL.to_json()), str(tmp_path / "there")],
        check=True,
        env=env,
    )
    assert file_digests(tmp_path / "here") == file_digests(tmp_path / "there")


def test_different_seed_gives_a_different_world(world):
    other = generate(replace(SMALL, seed=4))
    assert {d.title for d in other.corpus} != {d.title for d in world.corpus}
    assert other.splits["train"][0].question != world.splits["train"][0].question


def test_world_json_records_the_config(tmp_path, world):
    write_world(world, tmp_path)
    summary = json.loads((tmp_path / "world.json").read_text())
    assert SyntheticConfig.from_json(summary["config"]) == SMALL
    assert summary["documents"] == len(world.corpus)
    assert summary["questions"] == {"train": 320, "dev": 40, "test": 40}


# ------------------------------------------------------------------ splits and names


def test_splits_have_configured_sizes_and_no_shared_questions(world):
    sizes = {split: len(samples) for split, samples in world.splits.items()}
    assert sizes == {"train": 320, "dev": 40, "test": 40}
    texts = [s.question.lower() for s in all_samples(world)]
    ids = [s.id for s in all_samples(world)]
    assert len(set(texts)) == len(texts) == 400
    assert len(set(ids)) == len(ids)


def test_entity_names_and_doc_ids_are_unique(default_world):
    titles = [d.title for d in default_world.corpus]
    ids = [d.id for d in default_world.corpus]
    assert len(set(titles)) == len(titles)
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"doc-\d{6}", i) for i in ids)


def test_default_world_size(default_world):
    assert 2000 <= len(default_world.corpus) <= 5000
    assert sum(len(s) for s in default_world.splits.values()) == 3000


# ------------------------------------------------------------------ answerable questions


def test_metadata_hops_and_supporting_docs_match_the_decomposition(world):
    doc_ids = {d.id for d in world.corpus}
    for sample in all_samples(world):
        meta = sample.metadata
        steps = meta["decomposition"]
        assert meta["hops"] == len(steps) and 1 <= len(steps) <= 4
        assert meta["supporting_doc_ids"] == list(dict.fromkeys(s["doc_id"] for s in steps))
        assert set(meta["supporting_doc_ids"]) <= doc_ids
        assert meta["type"] in ("compositional", "comparison", "yesno")


def test_every_hop_answer_is_written_in_its_document(world):
    docs = {d.id: d.contents for d in world.corpus}
    for sample in all_samples(world):
        for step in sample.metadata["decomposition"]:
            assert step["answer"] in docs[step["doc_id"]], (sample.question, step)


def test_golden_answer_is_in_the_supporting_documents(world):
    docs = {d.id: d.contents for d in world.corpus}
    for sample in all_samples(world):
        meta = sample.metadata
        if meta["type"] == "yesno":
            assert sample.golden_answers in (("yes",), ("no",))
            continue
        last_doc = docs[meta["decomposition"][-1]["doc_id"]]
        if meta["type"] == "compositional":
            assert all(a in last_doc for a in sample.golden_answers)
            assert sample.golden_answers[0] == meta["decomposition"][-1]["answer"]
        else:  # comparison: the winner is one of the two things compared
            assert any(sample.golden_answers[0] in docs[d] for d in meta["supporting_doc_ids"])


def test_placeholders_only_point_back(world):
    for sample in all_samples(world):
        for number, step in enumerate(sample.metadata["decomposition"], start=1):
            refs = [int(k) for k in PLACEHOLDER.findall(step["question"])]
            assert all(1 <= k < number for k in refs), step["question"]
            assert "#" not in sample.question


def test_question_never_contains_a_compositional_answer(world):
    for sample in all_samples(world):
        if sample.metadata["type"] == "compositional":
            assert sample.golden_answers[0] not in sample.question


def test_hop_and_type_mix(default_world):
    samples = all_samples(default_world)
    hops = Counter(s.metadata["hops"] for s in samples)
    assert set(hops) == {1, 2, 3, 4}
    assert hops[1] + hops[2] > hops[3] + hops[4]
    kinds = Counter(s.metadata["type"] for s in samples)
    assert set(kinds) == {"compositional", "comparison", "yesno"}
    yes = sum(s.golden_answers == ("yes",) for s in samples)
    assert 0.35 < yes / kinds["yesno"] < 0.65
    assert all(s.metadata["hops"] >= 2 for s in samples if s.metadata["type"] == "comparison")


def test_hop_weights_select_the_hop_counts():
    config = replace(SMALL, hop_weights={3: 1.0}, n_questions=100)
    assert {s.metadata["hops"] for s in all_samples(generate(config))} == {3}


def test_oracle_subquestions_retrieve_their_documents_with_bm25(default_world):
    """The decomposition is a script a searcher can follow: each sub-question, with earlier
    answers filled in, finds its document in the top 3 of plain BM25."""
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    ids = [d.id for d in default_world.corpus]

    def tokens(texts):
        return bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False)

    index = bm25s.BM25()
    index.index(tokens([d.contents for d in default_world.corpus]), show_progress=False)
    queries, wanted = [], []
    for sample in default_world.splits["test"] + default_world.splits["dev"]:
        steps = sample.metadata["decomposition"]
        answers = [s["answer"] for s in steps]
        for step in steps:
            queries.append(
                PLACEHOLDER.sub(lambda m: answers[int(m.group(1)) - 1], step["question"])
            )
            wanted.append(step["doc_id"])
    results, _ = index.retrieve(tokens(queries), k=3, show_progress=False)
    found = sum(doc in {ids[j] for j in row} for doc, row in zip(wanted, results))
    assert found / len(wanted) >= 0.99


# ------------------------------------------------------------------ config checks


@pytest.mark.parametrize(
    "changes",
    [
        {"hop_weights": {5: 1.0}},
        {"hop_weights": {1: 0.0}},
        {"split_fractions": (0.5, 0.1, 0.1)},
        {"n_cities": 2, "n_countries": 3},
        {"type_weights": {"trivia": 1.0}},
        {"n_questions": 0},
    ],
)
def test_bad_config_is_rejected(changes):
    with pytest.raises(ValueError):
        SyntheticConfig(**changes)


def test_impossible_question_mix_fails_loudly():
    with pytest.raises(ValueError, match="distinct questions"):
        generate(
            replace(SMALL, hop_weights={1: 1.0}, type_weights={"comparison": 1.0}, n_questions=5)
        )


# ------------------------------------------------------------------ the cached default world


def test_default_world_is_generated_once_and_loadable_by_name(tmp_path):
    folder = default_world_dir(tmp_path)
    assert folder.parent == tmp_path / "synthetic"
    stamp = (folder / "corpus.jsonl").stat().st_mtime_ns
    assert default_world_dir(tmp_path) == folder
    assert (folder / "corpus.jsonl").stat().st_mtime_ns == stamp  # not regenerated
    dev = load_split("synthetic", "dev", cache_dir=tmp_path)
    assert dev == read_qa_jsonl(folder / "dev.jsonl") and len(dev) == 300
    assert len(load_corpus("synthetic", cache_dir=tmp_path)) == len(generate().corpus)
    assert [p.name for p in (tmp_path / "synthetic").iterdir()] == [folder.name]


def test_cache_dir_defaults_to_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("RESEARCH_GYM_CACHE", str(tmp_path))
    assert default_world_dir().parent == tmp_path / "synthetic"


def test_racing_processes_share_one_complete_world(tmp_path):
    code = "import sys; from research_env.data import default_world_dir; print(default_world_dir(sys.argv[1]))"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outputs = {p.communicate()[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(outputs) == 1
    folder = Path(outputs.pop())
    assert [p.name for p in (tmp_path / "synthetic").iterdir()] == [
        folder.name
    ]  # no temp dirs left
    assert len(read_qa_jsonl(folder / "train.jsonl")) == 2400


def test_synthetic_split_names_are_checked(tmp_path):
    with pytest.raises(ValueError, match="validation"):
        load_split("synthetic", "validation", cache_dir=tmp_path)


# ------------------------------------------------------------------ the `data` command


def test_data_synth_command_writes_the_same_world_as_the_api(tmp_path, capsys):
    from research_app.cli import main

    argv = ["data", "synth", "--out", str(tmp_path / "cli"), "--seed", "3", "--n-questions", "400"]
    argv += ["--n-people", "300", "--n-cities", "40", "--n-countries", "5", "--n-orgs", "100"]
    argv += ["--n-works", "150"]
    assert main(argv) == 0
    assert "train 320, dev 40, test 40" in capsys.readouterr().out
    write_world(generate(SMALL), tmp_path / "api")
    assert file_digests(tmp_path / "cli") == file_digests(tmp_path / "api")


def test_data_show_prints_questions_and_documents(tmp_path, capsys, world):
    from research_app.cli import main

    write_world(world, tmp_path)
    assert main(["data", "show", str(tmp_path / "dev.jsonl"), "--n", "2"]) == 0
    out = capsys.readouterr().out
    first = world.splits["dev"][0]
    assert first.question in out and first.metadata["decomposition"][0]["question"] in out
    assert main(["data", "show", str(tmp_path / "corpus.jsonl"), "--n", "1"]) == 0
    assert world.corpus[0].title in capsys.readouterr().out
    assert main(["data", "show", str(tmp_path / "nope.jsonl")]) == 2
