"""FlashRAG jsonl I/O: round trips, lenient-but-typed parsing, located errors, skip mode,
atomic writes, and loading splits by path."""

from __future__ import annotations

import json
import warnings

import pytest

from research_env.data import (
    DataFormatError,
    Document,
    QASample,
    corpus_path,
    load_corpus,
    load_split,
    read_corpus_jsonl,
    read_qa_jsonl,
    write_corpus_jsonl,
    write_qa_jsonl,
)

SAMPLES = [
    QASample("a", "Who wrote Ölmerk?", ("Tessa Vorn", "Vorn"), {"hops": 1, "nested": {"k": [1]}}),
    QASample("b", "Is it?", ("yes",), {}),
]
DOCS = [
    Document("d1", '"Ölmerk"\nÖlmerk is a novel.\nSecond line.'),
    Document("d2", '"Vorn"\nA "quoted" word.'),
]


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def qa_line(**fields):
    record = {"id": "x", "question": "Q?", "golden_answers": ["A"]}
    record.update(fields)
    return json.dumps(record)


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("name", ["qa.jsonl", "qa.jsonl.gz"])
def test_qa_round_trip_keeps_every_field(tmp_path, name):
    path = tmp_path / name
    assert write_qa_jsonl(SAMPLES, path) == 2
    loaded = read_qa_jsonl(path)
    assert list(loaded) == SAMPLES
    assert loaded.skipped == 0 and loaded.errors == []


@pytest.mark.parametrize("name", ["corpus.jsonl", "corpus.jsonl.gz"])
def test_corpus_round_trip(tmp_path, name):
    path = tmp_path / name
    assert write_corpus_jsonl(DOCS, path) == 2
    assert list(read_corpus_jsonl(path)) == DOCS


def test_written_lines_are_flashrag_shaped(tmp_path):
    write_corpus_jsonl(DOCS[:1], tmp_path / "c.jsonl")
    line = (tmp_path / "c.jsonl").read_text(encoding="utf-8").splitlines()[0]
    assert json.loads(line) == {"id": "d1", "contents": DOCS[0].contents}
    assert "Ölmerk" in line  # written as UTF-8, not \u escapes


# ------------------------------------------------------------------ lenient parsing


def test_single_string_answer_and_integer_id_are_accepted(tmp_path):
    path = write_lines(tmp_path / "qa.jsonl", [qa_line(id=7, golden_answers="Velmia")])
    (sample,) = read_qa_jsonl(path)
    assert sample.id == "7" and sample.golden_answers == ("Velmia",)
    assert sample.metadata == {}


def test_numeric_answers_become_text_and_extra_keys_go_to_metadata(tmp_path):
    path = write_lines(tmp_path / "qa.jsonl", [qa_line(golden_answers=[1843], source="hotpot")])
    (sample,) = read_qa_jsonl(path)
    assert sample.golden_answers == ("1843",)
    assert sample.metadata == {"source": "hotpot"}


def test_title_and_text_build_contents(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [json.dumps({"id": "p1", "title": "T", "text": "b"})])
    (doc,) = read_corpus_jsonl(path)
    assert doc.contents == '"T"\nb'
    assert (doc.title, doc.text) == ("T", "b")


def test_text_without_a_title_is_an_untitled_passage(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [json.dumps({"id": "p1", "text": "Just text."})])
    assert list(read_corpus_jsonl(path)) == [Document("p1", "Just text.")]


def test_blank_lines_are_ignored_but_still_counted(tmp_path):
    path = write_lines(tmp_path / "qa.jsonl", [qa_line(id="a"), "", "   ", "{oops"])
    with pytest.raises(DataFormatError) as info:
        read_qa_jsonl(path)
    assert info.value.line == 4


# ------------------------------------------------------------------ located errors

BAD_QA_LINES = [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({"question": "Q?", "golden_answers": ["A"]}), "missing field 'id'"),
    (json.dumps({"id": "x", "golden_answers": ["A"]}), "missing field 'question'"),
    (qa_line(question=3), "'question' must be a string"),
    (qa_line(question="  "), "'question' is empty"),
    (json.dumps({"id": "x", "question": "Q?"}), "missing field 'golden_answers'"),
    (qa_line(golden_answers={"a": 1}), "'golden_answers' must be a list"),
    (qa_line(golden_answers=["A", None]), "'golden_answers' items must be strings"),
    (qa_line(golden_answers=[]), "'golden_answers' is empty"),
    (qa_line(golden_answers=[float("nan")]), "'golden_answers' holds nan (NaN or Infinity"),
    (qa_line(golden_answers=float("inf")), "'golden_answers' holds inf (NaN or Infinity"),
    (qa_line(metadata=[1]), "'metadata' must be an object"),
    (qa_line(id=True), "field 'id' must be a non-empty string"),
]


@pytest.mark.parametrize(("bad", "reason"), BAD_QA_LINES)
def test_bad_qa_line_error_names_file_line_and_reason(tmp_path, bad, reason):
    path = write_lines(tmp_path / "broken.jsonl", [qa_line(id="ok1"), qa_line(id="ok2"), bad])
    with pytest.raises(DataFormatError) as info:
        read_qa_jsonl(path)
    message = str(info.value)
    assert "broken.jsonl" in message and "line 3" in message and reason in message
    assert info.value.line == 3 and reason in info.value.reason
    assert isinstance(info.value, ValueError)


def test_duplicate_id_is_an_error_at_the_second_occurrence(tmp_path):
    path = write_lines(tmp_path / "qa.jsonl", [qa_line(id="a"), qa_line(id="b"), qa_line(id="a")])
    with pytest.raises(DataFormatError, match=r"line 3: duplicate id 'a'"):
        read_qa_jsonl(path)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"id": "d"}, "missing field 'contents'"),
        ({"id": "d", "contents": 5}, "'contents' must be a string"),
        ({"id": "d", "title": "T"}, "'title' and 'text' must both be strings"),
        ({"contents": "x"}, "missing field 'id'"),
    ],
)
def test_bad_corpus_line_error(tmp_path, record, reason):
    path = write_lines(tmp_path / "corpus.jsonl", [json.dumps(record)])
    with pytest.raises(DataFormatError, match=rf"corpus\.jsonl, line 1: {reason}"):
        read_corpus_jsonl(path)


# ------------------------------------------------------------------ skip mode


def test_skip_mode_keeps_good_lines_and_counts_the_bad(tmp_path):
    lines = [qa_line(id="a"), "{bad", qa_line(id="b"), qa_line(id="a"), qa_line(id="c")]
    path = write_lines(tmp_path / "qa.jsonl", lines)
    with pytest.warns(UserWarning, match="skipped 2 malformed line"):
        loaded = read_qa_jsonl(path, on_error="skip")
    assert [s.id for s in loaded] == ["a", "b", "c"]
    assert loaded.skipped == 2
    assert [e.line for e in loaded.errors] == [2, 4]


def test_skip_mode_on_a_clean_file_is_silent(tmp_path):
    path = write_lines(tmp_path / "qa.jsonl", [qa_line(id="a")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = read_qa_jsonl(path, on_error="skip")
    assert loaded.skipped == 0


def test_unknown_on_error_value_is_rejected(tmp_path):
    path = write_lines(tmp_path / "qa.jsonl", [qa_line()])
    with pytest.raises(ValueError, match="on_error"):
        read_qa_jsonl(path, on_error="ignore")  # type: ignore[arg-type]


# ------------------------------------------------------------------ atomic writes


def test_failed_write_leaves_old_file_and_no_temp_files(tmp_path):
    path = tmp_path / "qa.jsonl"
    write_qa_jsonl(SAMPLES, path)
    before = path.read_bytes()

    def broken():
        yield SAMPLES[0]
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_qa_jsonl(broken(), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qa.jsonl"]


def test_writer_creates_parent_directories(tmp_path):
    path = tmp_path / "a" / "b" / "corpus.jsonl"
    write_corpus_jsonl(DOCS, path)
    assert len(read_corpus_jsonl(path)) == 2


# ------------------------------------------------------------------ loading by path


def test_load_split_from_file_and_from_directory(tmp_path):
    write_qa_jsonl(SAMPLES, tmp_path / "dev.jsonl")
    write_corpus_jsonl(DOCS, tmp_path / "corpus.jsonl")
    assert load_split(tmp_path / "dev.jsonl") == SAMPLES
    assert load_split(str(tmp_path), "dev") == SAMPLES
    with pytest.raises(ValueError, match=r"no test\.jsonl; splits there: \['dev'\]"):
        load_split(tmp_path, "test")


def test_corpus_travels_with_a_dataset_directory(tmp_path):
    write_qa_jsonl(SAMPLES, tmp_path / "dev.jsonl")
    assert corpus_path(tmp_path / "dev.jsonl") is None
    write_corpus_jsonl(DOCS, tmp_path / "corpus.jsonl")
    assert corpus_path(tmp_path / "dev.jsonl") == tmp_path / "corpus.jsonl"
    assert corpus_path(tmp_path) == tmp_path / "corpus.jsonl"
    assert load_corpus(tmp_path) == DOCS
    assert load_corpus(tmp_path / "corpus.jsonl") == DOCS


def test_unknown_dataset_names_the_valid_choices(tmp_path):
    with pytest.raises(ValueError, match="synthetic"):
        load_split("hotpotqa-nonexistent", "dev")
    with pytest.raises(ValueError, match="no such file"):
        load_split(tmp_path / "missing.jsonl")
