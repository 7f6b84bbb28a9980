"""Bad dataset and corpus files end in an error that names the file, the line and what is
wrong, never in a raw traceback; ``on_error="skip"`` can leave a bad line out and read on.

Also: the Bamboogle sheet as published (no header row, seven columns, CRLF) reads as
released, and an empty dataset is an error where the env is made, not at ``reset()``.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import gymnasium as gym
import pytest

import research_env  # noqa: F401  (registers the env)
from research_app.cli import main
from research_env import data
from research_env.data import DataFormatError
from research_env.data.formats import read_records
from research_env.retrievers.bm25 import bm25_for_corpus, clear_bm25_cache

QA = [
    {"id": "q1", "question": "Where is the Seine?", "golden_answers": ["Paris"]},
    {"id": "q2", "question": "Capital of Japan?", "golden_answers": ["Tokyo"]},
    {"id": "q3", "question": "Capital of Norway?", "golden_answers": ["Oslo"]},
]
DOCS = [
    {"id": "paris", "contents": '"Paris"\nThe Seine flows through Paris.'},
    {"id": "tokyo", "contents": '"Tokyo"\nTokyo is the capital of Japan.'},
    {"id": "oslo", "contents": '"Oslo"\nOslo is the capital of Norway.'},
]


def jsonl_bytes(records: list[dict]) -> list[bytes]:
    return [json.dumps(r).encode() + b"\n" for r in records]


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(lines))
    return path


@pytest.fixture(autouse=True)
def _fresh_bm25_cache():
    clear_bm25_cache()
    yield
    clear_bm25_cache()


# --------------------------------------------------------------------------- bytes


def latin1_line(record: dict) -> bytes:
    """A line saved in Latin-1 by an old tool: ``é`` is the single byte 0xe9."""
    return json.dumps(record, ensure_ascii=False).encode("latin-1") + b"\n"


def test_non_utf8_line_is_located_and_skippable(tmp_path):
    lines = jsonl_bytes(QA)
    lines[1] = latin1_line({**QA[1], "question": "Capitale du Japon, sans accent é?"})
    path = write_lines(tmp_path / "dev.jsonl", lines)

    with pytest.raises(DataFormatError) as info:
        data.load_split(path)
    assert str(path) in str(info.value) and info.value.line == 2
    assert "not UTF-8" in info.value.reason and "0xe9" in info.value.reason

    with pytest.warns(UserWarning, match="skipped 1"):
        samples = data.load_split(path, on_error="skip")
    assert [s.id for s in samples] == ["q1", "q3"]
    assert samples.errors[0].line == 2


def test_non_utf8_line_through_the_flashrag_reader_and_the_cli(tmp_path, capsys):
    lines = jsonl_bytes(QA)
    lines[2] = b'{"id": "q3", "question": "\xff\xfe?", "golden_answers": ["x"]}\n'
    path = write_lines(tmp_path / "dev.jsonl", lines)
    with pytest.warns(UserWarning, match="skipped 1"):
        assert [s.id for s in data.read_qa_jsonl(path, on_error="skip")] == ["q1", "q2"]

    out = tmp_path / "out"
    assert main(["data", "convert", str(path), "--out", str(out), "--on-error", "skip"]) == 0
    printed = capsys.readouterr().out
    assert f"{path}, line 3: not UTF-8" in printed
    assert len(data.load_split(out, "dev")) == 2


def test_non_utf8_row_of_a_sheet_is_located(tmp_path):
    path = tmp_path / "bamboogle.csv"
    path.write_bytes(b"Question,Answer\nWho wrote it?,Me\nQui \xe9tait-ce?,Lui\n")
    with pytest.raises(DataFormatError, match=r"bamboogle\.csv, line 3: not UTF-8"):
        read_records(path)
    with pytest.warns(UserWarning, match="skipped 1"):
        assert len(read_records(path, on_error="skip").records) == 1


# --------------------------------------------------------------------------- nesting


def test_deeply_nested_json_line_is_invalid_json_not_a_recursion_error(tmp_path):
    lines = jsonl_bytes(QA)
    lines.insert(1, b"[" * 100_000 + b"]" * 100_000 + b"\n")
    path = write_lines(tmp_path / "dev.jsonl", lines)
    with pytest.raises(DataFormatError) as info:
        data.load_split(path)
    assert info.value.line == 2 and "nested too deeply" in info.value.reason
    with pytest.warns(UserWarning, match="skipped 1"):
        assert len(data.load_split(path, on_error="skip")) == 3
    with pytest.raises(DataFormatError, match=r"line 2: invalid JSON \(nested too deeply"):
        data.read_qa_jsonl(path)


def test_deeply_nested_record_in_a_json_list(tmp_path):
    path = tmp_path / "hotpot_dev.json"
    path.write_text("[" + "[" * 100_000 + "]" * 100_000 + "]")
    with pytest.raises(DataFormatError, match="nested too deeply"):
        read_records(path, format="hotpotqa")


# --------------------------------------------------------------------------- gzip


def gz_bytes(lines: list[bytes]) -> bytes:
    return gzip.compress(b"".join(lines))


@pytest.mark.parametrize("damage", ["truncated", "not gzip"])
def test_corrupt_gzip_is_a_located_error(tmp_path, damage):
    whole = gz_bytes(jsonl_bytes(QA) * 50)
    broken = whole[: len(whole) // 2] if damage == "truncated" else b"PK\x03\x04 a zip file"
    path = tmp_path / "dev.jsonl.gz"
    path.write_bytes(broken)
    for read in (data.load_split, data.read_qa_jsonl, data.read_corpus_jsonl):
        with pytest.raises(DataFormatError) as info:
            read(path)
        assert str(path) in str(info.value) and "corrupt gzip file" in info.value.reason


def test_corrupt_gzip_json_list_and_sheet(tmp_path):
    for name in ("hotpot_dev.json.gz", "bamboogle.csv.gz"):
        path = tmp_path / name
        path.write_bytes(b"not gzip at all")
        with pytest.raises(DataFormatError, match="corrupt gzip file"):
            read_records(path, format="hotpotqa" if "json" in name else "bamboogle")


# --------------------------------------------------------------------------- empty


def test_header_only_sheet_is_an_error_at_gym_make(tmp_path):
    path = tmp_path / "bamboogle.csv"
    path.write_text("Question,Answer\r\n")
    with pytest.raises(ValueError, match=r"bamboogle\.csv: no records"):
        gym.make("ReSearch-MultiHop-v0", dataset=str(path), cache_dir=tmp_path / "cache")


def test_header_only_sheet_does_not_convert_to_an_empty_split(tmp_path, capsys):
    path = tmp_path / "bamboogle.csv"
    path.write_text("Question,Answer\n\n")
    out = tmp_path / "out"
    assert main(["data", "convert", str(path), "--split", "test", "--out", str(out)]) == 2
    assert "no records" in capsys.readouterr().err
    assert not out.exists()


def test_a_file_of_only_bad_records_is_an_error_even_when_skipping(tmp_path):
    path = write_lines(tmp_path / "dev.jsonl", [b"{oops\n", b"[1, 2\n"])
    with pytest.raises(DataFormatError, match="no valid records: all 2 were malformed"):
        read_records(path, format="flashrag", on_error="skip")


def test_named_dataset_without_questions_is_an_error_at_gym_make(monkeypatch):
    empty = data.NamedDataset("nothing", ("train",), load_split=lambda split, cache: [])
    monkeypatch.setitem(data.DATASETS, "empty-test-dataset", empty)
    with pytest.raises(ValueError, match="'empty-test-dataset' split 'train' has no questions"):
        gym.make("ReSearch-MultiHop-v0", dataset="empty-test-dataset")


# --------------------------------------------------------------------------- corpora


def corpus_file(tmp_path: Path, lines: list[bytes]) -> Path:
    return write_lines(tmp_path / "corpus.jsonl", lines)


def test_bm25_corpus_with_a_truncated_line_names_file_and_line(tmp_path):
    lines = jsonl_bytes(DOCS)
    lines[1] = lines[1][:20] + b"\n"  # a download cut short, then resumed
    path = corpus_file(tmp_path, [b"\n", *lines])
    with pytest.raises(DataFormatError) as info:
        bm25_for_corpus(path, tmp_path / "cache")
    assert info.value.path == str(path) and info.value.line == 3
    assert "invalid JSON" in info.value.reason


def test_bm25_corpus_with_a_wrong_field_type_names_the_field(tmp_path):
    path = corpus_file(tmp_path, jsonl_bytes([DOCS[0], {"id": "five", "contents": 5}]))
    with pytest.raises(DataFormatError, match=r"line 2: 'contents' must be a string, got int"):
        bm25_for_corpus(path, tmp_path / "cache")


def test_bm25_corpus_with_a_duplicate_id_is_an_error_not_served_twice(tmp_path):
    path = corpus_file(tmp_path, jsonl_bytes([*DOCS, {**DOCS[0], "contents": "Paris again"}]))
    with pytest.raises(DataFormatError, match=r"line 4: duplicate id 'paris'"):
        bm25_for_corpus(path, tmp_path / "cache")
    assert not any((tmp_path / "cache" / "bm25").iterdir())  # no half-built index left


def test_empty_bm25_corpus_names_the_file(tmp_path):
    path = corpus_file(tmp_path, [b"\n"])
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl: no documents"):
        bm25_for_corpus(path, tmp_path / "cache")


def test_gym_make_reports_a_bad_corpus_file(tmp_path):
    qa = write_lines(tmp_path / "dev.jsonl", jsonl_bytes(QA))
    path = corpus_file(tmp_path, [*jsonl_bytes(DOCS), b'{"id": "x", "title": 3, "text": "t"}\n'])
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl, line 4: 'title' and 'text'"):
        gym.make(
            "ReSearch-MultiHop-v0", dataset=str(qa), corpus=str(path), cache_dir=tmp_path / "c"
        )


# --------------------------------------------------------------------------- Bamboogle


BAMBOOGLE_AS_RELEASED = (
    b"Who was the first president of the country whose capital is Ottawa?,,,,"
    b"John A. Macdonald,,\r\n"
    b'"What is the largest city in the state where Yale is located?",,,,'
    b"Bridgeport,Bridgeport Connecticut,\r\n"
    b",,,,,,\r\n"
)


def test_bamboogle_sheet_as_released_reads(tmp_path):
    path = tmp_path / "Bamboogle Prerelease - Sheet1.csv"
    path.write_bytes(BAMBOOGLE_AS_RELEASED)
    samples = data.load_split(path)
    assert [s.id for s in samples] == ["bamboogle-0", "bamboogle-1"]
    assert samples[0].question.startswith("Who was the first president")
    assert samples[0].golden_answers == ("John A. Macdonald",)
    assert samples[1].golden_answers == ("Bridgeport", "Bridgeport Connecticut")
    assert samples[1].metadata["dataset"] == "bamboogle"


def test_bamboogle_sheet_as_released_converts(tmp_path, capsys):
    path = tmp_path / "bamboogle.csv"
    path.write_bytes(BAMBOOGLE_AS_RELEASED)
    out = tmp_path / "out"
    assert main(["data", "convert", str(path), "--split", "test", "--out", str(out)]) == 0
    assert "2 questions" in capsys.readouterr().out
    assert [s.golden_answers[0] for s in data.load_split(out, "test")] == [
        "John A. Macdonald",
        "Bridgeport",
    ]


def test_headerless_row_without_an_answer_names_the_cell(tmp_path):
    path = tmp_path / "bamboogle.csv"
    path.write_bytes(b",,,,,,\r\nWho was it?,,,,,,\r\n")  # a blank row first
    with pytest.raises(DataFormatError, match=r"line 2: field 'Answer': is empty \(cell 5\)"):
        read_records(path)
