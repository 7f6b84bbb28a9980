"""``research-env play``: scripted turns through the command line, with the retriever and
corpus chosen by the same flags as ``eval`` and ``train``."""

import io
import json

import pytest

from research_app.cli import main

QUESTION = {"id": "q1", "question": "Where was Brisa Telk born?", "golden_answers": ["Ostravel"]}
DATASET_DOC = {"id": "d1", "contents": '"Brisa Telk"\nBrisa Telk was born in Ostravel.'}
OTHER_DOC = {"id": "o1", "contents": '"Brisa Telk"\nBrisa Telk was born on the moon.'}
SEARCH = "plan</think><search>Brisa Telk</search>"
ANSWER = "<think>ok</think><answer>\\boxed{Ostravel}</answer>"


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    """A one-question dataset directory with its own corpus, and a second corpus."""
    monkeypatch.setenv("RESEARCH_GYM_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    root.mkdir()
    (root / "dev.jsonl").write_text(json.dumps(QUESTION) + "\n")
    (root / "corpus.jsonl").write_text(json.dumps(DATASET_DOC) + "\n")
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps(OTHER_DOC) + "\n")
    return root, other


def play(monkeypatch, capsys, turns, *args):
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(t + "\n" for t in turns)))
    code = main(["play", "--index", "0", *args])
    return code, capsys.readouterr()


def test_default_retriever_searches_the_datasets_corpus(dataset, monkeypatch, capsys):
    root, _ = dataset
    code, out = play(monkeypatch, capsys, [SEARCH, ANSWER], "--dataset", str(root))
    assert code == 0
    assert "born in Ostravel" in out.out and "reward=1.000" in out.out


def test_retriever_flag_chooses_the_retriever(dataset, monkeypatch, capsys):
    root, _ = dataset
    code, out = play(
        monkeypatch, capsys, [SEARCH, ANSWER], "--dataset", str(root), "--retriever", "empty"
    )
    assert code == 0
    assert "No documents found." in out.out and "born in Ostravel" not in out.out


def test_corpus_flag_chooses_the_corpus(dataset, monkeypatch, capsys):
    root, other = dataset
    args = ("--dataset", str(root), "--retriever", "bm25", "--corpus", str(other))
    code, out = play(monkeypatch, capsys, [SEARCH, ANSWER], *args)
    assert code == 0
    assert "born on the moon" in out.out and "born in Ostravel" not in out.out


def test_unknown_retriever_is_a_one_line_error(dataset, monkeypatch, capsys):
    root, _ = dataset
    code, out = play(monkeypatch, capsys, [], "--dataset", str(root), "--retriever", "nope")
    assert code == 2
    assert "research-env play: error: unknown retriever 'nope'" in out.err


def test_an_invalid_response_says_why(dataset, monkeypatch, capsys):
    root, _ = dataset
    # The prompt already ends with the prefilled <think>: opening it again breaks pairing.
    turns = ["<think>plan</think><search>Brisa Telk</search>", ANSWER]
    code, out = play(monkeypatch, capsys, turns, "--dataset", str(root))
    assert code == 0
    assert "format_valid=False" in out.out
    assert "invalid (repeated_prefill): the first turn repeats the prefilled" in out.out
