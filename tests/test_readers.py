"""Readers for the original dataset releases, closed corpora, `data convert` / `stats`,
the hub loader (offline error, local copies) and episodes over converted data.

Every fixture file is written here, in the release's own layout and field names, with a
few realistic records each.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import gymnasium as gym
import pytest

import research_env  # noqa: F401  (registers the env)
from research_app.cli import main
from research_env import data
from research_env.data import formats
from research_env.data.closed_corpus import (
    ClosedCorpus,
    convert,
    join_sentences,
    paragraph_document,
    paragraph_id,
)
from research_env.data.formats import RecordFormatError, detect_format, read_records
from research_env.data.stats import answer_type, dataset_stats
from research_env.policies import OraclePolicy

# --------------------------------------------------------------------------- fixtures

DERRICKSON = [
    "Scott Derrickson (born July 16, 1966) is an American director, screenwriter and producer.",
    " He lives in Los Angeles, California.",
]
ED_WOOD = [
    "Edward Davis Wood Jr. (October 10, 1924 – December 10, 1978) was an American "
    "filmmaker, actor, writer, producer, and director.",
]
KISS_AND_TELL = [
    "Kiss and Tell is a 1945 American comedy film starring then 17-year-old Shirley Temple "
    "as Corliss Archer.",
]
SHIRLEY_TEMPLE = [
    "Shirley Temple Black (April 23, 1928 – February 10, 2014) was an American actress, "
    "singer, dancer, businesswoman, and diplomat.",
    " As a diplomat she served as Chief of Protocol of the United States.",
]

HOTPOT = [
    {
        "_id": "5a8b57f25542995d1e6f1371",
        "question": "Were Scott Derrickson and Ed Wood of the same nationality?",
        "answer": "yes",
        "type": "comparison",
        "level": "hard",
        "supporting_facts": [["Scott Derrickson", 0], ["Ed Wood", 0]],
        "context": [
            ["Adam Collis", ["Adam Collis is an American filmmaker and actor."]],
            ["Ed Wood", ED_WOOD],
            ["Scott Derrickson", DERRICKSON],
            ["Tyler Bates", ["Tyler Bates (born June 5, 1965) is an American musician."]],
        ],
    },
    {
        "_id": "5a8c7595554299585d9e36b6",
        "question": "What government position was held by the woman who portrayed Corliss "
        "Archer in the film Kiss and Tell?",
        "answer": "Chief of Protocol",
        "type": "bridge",
        "level": "medium",
        "supporting_facts": [
            ["Kiss and Tell (1945 film)", 0],
            ["Shirley Temple", 0],
            ["Shirley Temple", 1],
        ],
        "context": [
            ["Meet Corliss Archer", ["Meet Corliss Archer is an American radio sitcom."]],
            ["Shirley Temple", SHIRLEY_TEMPLE],
            ["Ed Wood", ED_WOOD],  # the same paragraph under a second question
            ["Kiss and Tell (1945 film)", KISS_AND_TELL],
        ],
    },
]

MUSIQUE = [
    {
        "id": "2hop__460946_294723",
        "paragraphs": [
            {
                "idx": 0,
                "title": "Grant's First Stand",
                "paragraph_text": "Grant's First Stand is the debut album by American jazz "
                "guitarist Grant Green, recorded in 1961.",
                "is_supporting": False,
            },
            {
                "idx": 1,
                "title": "Miquette Giraudy",
                "paragraph_text": "Miquette Giraudy (born 9 February 1953, Nice) is a French "
                "keyboard player and vocalist, the spouse and musical partner of Steve Hillage.",
                "is_supporting": True,
            },
            {
                "idx": 2,
                "title": "Green (Steve Hillage album)",
                "paragraph_text": "Green is the fourth studio album by British progressive rock "
                "musician Steve Hillage, who is its performer. It was released in 1978.",
                "is_supporting": True,
            },
        ],
        "question": "Who is the spouse of the Green performer?",
        "question_decomposition": [
            {
                "id": 460946,
                "question": "Green >> performer",
                "answer": "Steve Hillage",
                "paragraph_support_idx": 2,
            },
            {
                "id": 294723,
                "question": "#1 >> spouse",
                "answer": "Miquette Giraudy",
                "paragraph_support_idx": 1,
            },
        ],
        "answer": "Miquette Giraudy",
        "answer_aliases": ["Giraudy"],
        "answerable": True,
    },
    {
        "id": "3hop1__9285_5188_23307",
        "paragraphs": [
            {
                "idx": 0,
                "title": "Sergei Prokofiev",
                "paragraph_text": "Sergei Prokofiev was a Russian composer and pianist. He was "
                "educated at the Saint Petersburg Conservatory from 1904.",
                "is_supporting": True,
            },
            {
                "idx": 1,
                "title": "Moscow Conservatory",
                "paragraph_text": "The Moscow Conservatory is a music school in Moscow, "
                "founded in 1866.",
                "is_supporting": False,
            },
            {
                "idx": 2,
                "title": "Saint Petersburg Conservatory",
                "paragraph_text": "The Saint Petersburg Conservatory is a music school located "
                "in the city of Saint Petersburg, Russia.",
                "is_supporting": True,
            },
            {
                "idx": 3,
                "title": "Saint Petersburg",
                "paragraph_text": "Saint Petersburg is the second-largest city of Russia. The "
                "city was founded by Peter the Great in 1703.",
                "is_supporting": True,
            },
        ],
        "question": "When was the city where Sergei Prokofiev studied founded?",
        "question_decomposition": [
            {
                "id": 9285,
                "question": "Sergei Prokofiev >> educated at",
                "answer": "Saint Petersburg Conservatory",
                "paragraph_support_idx": 0,
            },
            {
                "id": 5188,
                "question": "#1 >> located in the administrative territorial entity",
                "answer": "Saint Petersburg",
                "paragraph_support_idx": 2,
            },
            {
                "id": 23307,
                "question": "When was #2 founded?",
                "answer": "1703",
                "paragraph_support_idx": 3,
            },
        ],
        "answer": "1703",
        "answer_aliases": [],
        "answerable": True,
    },
]

TWOWIKI = [
    {
        "_id": "8813f87c0bdd11eba7f7acde48001122",
        "type": "compositional",
        "question": "Who is the mother of the director of film Polish-Russian War (Film)?",
        "context": [
            [
                "Maheen Khan",
                [
                    "Maheen Khan is a Pakistani fashion and costume designer.",
                    "She has done many national and international shows.",
                ],
            ],
            [
                "Polish-Russian War (film)",
                [
                    "Polish-Russian War is a 2009 Polish film.",
                    "It was directed by Xawery Żuławski.",
                ],
            ],
            [
                "Xawery Żuławski",
                [
                    "Xawery Żuławski (born 22 December 1971) is a Polish film director.",
                    "He is the son of actress Małgorzata Braunek and director Andrzej Żuławski.",
                ],
            ],
        ],
        "supporting_facts": [["Polish-Russian War (film)", 1], ["Xawery Żuławski", 1]],
        "evidences": [
            ["Polish-Russian War", "director", "Xawery Żuławski"],
            ["Xawery Żuławski", "mother", "Małgorzata Braunek"],
        ],
        "answer": "Małgorzata Braunek",
    },
    {
        "_id": "5811079c0bdc11eba7f7acde48001122",
        "type": "comparison",
        "question": "Which film came out first, Blind Shaft or The Mask Of Fu Manchu?",
        "context": [
            ["Blind Shaft", ["Blind Shaft is a 2003 film about a pair of con artists."]],
            [
                "The Mask of Fu Manchu",
                ["The Mask of Fu Manchu is a 1932 adventure film directed by Charles Brabin."],
            ],
        ],
        "supporting_facts": [["Blind Shaft", 0], ["The Mask of Fu Manchu", 0]],
        "evidences": [
            ["Blind Shaft", "publication date", "2003"],
            ["The Mask of Fu Manchu", "publication date", "1932"],
        ],
        "answer": "The Mask Of Fu Manchu",
    },
]

BAMBOOGLE = [
    (
        "Who was president of the United States in the year that Citibank was founded?",
        "james madison",
    ),
    ("What rocket was the first spacecraft that ever approached Uranus launched on?", "Titan IIIE"),
    ("When was the longest bridge in the world opened?", "30 June 2011"),
]

FLASHRAG = [
    {"id": "test_0", "question": "Who wrote Hamlet?", "golden_answers": ["William Shakespeare"]},
    {"id": "test_1", "question": "How many moons has Mars?", "golden_answers": ["2", "two"]},
]


def write_json(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def write_bamboogle_csv(path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Question", "Answer"])
        writer.writerows(BAMBOOGLE)
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    raw = tmp_path / "raw"
    raw.mkdir()
    return {
        "hotpotqa": write_json(raw / "hotpot_dev_distractor_v1.json", HOTPOT),
        "musique": write_jsonl(raw / "musique_ans_v1.0_dev.jsonl", MUSIQUE),
        "2wiki": write_json(raw / "dev.json", TWOWIKI),
        "bamboogle": write_bamboogle_csv(raw / "bamboogle.csv"),
        "flashrag": write_jsonl(raw / "nq_test.jsonl", FLASHRAG),
    }


def para_id(title: str, sentences: list[str]) -> str:
    return paragraph_id(title, join_sentences(sentences))


# --------------------------------------------------------------------------- readers


def test_detect_format_from_extension_and_keys(files):
    for name, path in files.items():
        assert detect_format(path) == name
    assert formats.format_of_record({"foo": 1}) is None


def test_hotpotqa_fields_and_supporting_docs(files):
    read = read_records(files["hotpotqa"])
    assert read.format == "hotpotqa" and read.split == "dev"
    first, second = read.records
    sample = first.sample
    assert sample.id == "5a8b57f25542995d1e6f1371"
    assert sample.golden_answers == ("yes",)
    meta = sample.metadata
    assert (meta["hops"], meta["type"], meta["level"]) == (2, "comparison", "hard")
    # Supporting docs in the order the facts name them, each one of the paragraphs.
    assert meta["supporting_doc_ids"] == [
        para_id("Scott Derrickson", DERRICKSON),
        para_id("Ed Wood", ED_WOOD),
    ]
    assert meta["supporting_facts"] == [["Scott Derrickson", 0], ["Ed Wood", 0]]
    assert len(first.paragraphs) == 4
    derrickson = next(p for p in first.paragraphs if p.title == "Scott Derrickson")
    # HotpotQA sentences keep their leading space: one space between sentences.
    assert derrickson.text == (
        "Scott Derrickson (born July 16, 1966) is an American director, screenwriter and "
        "producer. He lives in Los Angeles, California."
    )
    assert derrickson.contents.startswith('"Scott Derrickson"\n')
    # Two facts from one paragraph count it once.
    assert second.sample.metadata["supporting_doc_ids"] == [
        para_id("Kiss and Tell (1945 film)", KISS_AND_TELL),
        para_id("Shirley Temple", SHIRLEY_TEMPLE),
    ]
    assert "decomposition" not in second.sample.metadata


def test_hotpotqa_fullwiki_keeps_missing_supporting_titles(tmp_path):
    record = dict(HOTPOT[0], context=[["Ed Wood", ED_WOOD]])  # the retrieval missed one
    (read,) = read_records(write_json(tmp_path / "fullwiki.json", [record])).records
    meta = read.sample.metadata
    assert meta["supporting_doc_ids"] == [para_id("Ed Wood", ED_WOOD)]
    assert meta["missing_supporting_titles"] == ["Scott Derrickson"]


def test_musique_answers_hops_and_decomposition(files):
    read = read_records(files["musique"])
    assert read.format == "musique"
    two, three = (r.sample for r in read.records)
    assert two.golden_answers == ("Miquette Giraudy", "Giraudy")
    assert (two.metadata["hops"], two.metadata["type"]) == (2, "2hop")
    assert two.metadata["answerable"] is True
    by_title = {p.title: p.id for p in read.records[0].paragraphs}
    assert two.metadata["decomposition"] == [
        {
            "question": "Green performer",
            "answer": "Steve Hillage",
            "doc_id": by_title["Green (Steve Hillage album)"],
        },
        {
            "question": "#1 spouse",
            "answer": "Miquette Giraudy",
            "doc_id": by_title["Miquette Giraudy"],
        },
    ]
    # Supporting docs follow the reasoning order, not the paragraph order.
    assert two.metadata["supporting_doc_ids"] == [
        by_title["Green (Steve Hillage album)"],
        by_title["Miquette Giraudy"],
    ]
    assert three.metadata["hops"] == 3 and three.metadata["type"] == "3hop1"
    steps = [s["question"] for s in three.metadata["decomposition"]]
    assert steps == [
        "Sergei Prokofiev educated at",
        "#1 located in the administrative territorial entity",
        "When was #2 founded?",
    ]


def test_2wiki_hops_type_and_decomposition_from_evidences(files):
    read = read_records(files["2wiki"])
    assert read.format == "2wiki"
    compositional, comparison = read.records
    meta = compositional.sample.metadata
    assert (meta["hops"], meta["type"]) == (2, "compositional")
    film = para_id("Polish-Russian War (film)", TWOWIKI[0]["context"][1][1])
    director = para_id("Xawery Żuławski", TWOWIKI[0]["context"][2][1])
    assert meta["supporting_doc_ids"] == [film, director]
    assert meta["decomposition"] == [
        # The subject matches its paragraph despite the "(film)" suffix of the title.
        {"question": "director of Polish-Russian War", "answer": "Xawery Żuławski", "doc_id": film},
        {"question": "mother of #1", "answer": "Małgorzata Braunek", "doc_id": director},
    ]
    # 2Wiki's sentences have no leading space; paragraphs still read as prose.
    doc = next(p for p in compositional.paragraphs if p.id == film)
    assert (
        doc.text == "Polish-Russian War is a 2009 Polish film. It was directed by Xawery Żuławski."
    )
    assert comparison.sample.metadata["decomposition"][1]["question"] == (
        "publication date of The Mask of Fu Manchu"
    )


def test_bamboogle_csv_and_json(files, tmp_path):
    read = read_records(files["bamboogle"])
    assert read.format == "bamboogle"
    samples = read.samples
    assert [s.id for s in samples] == ["bamboogle-0", "bamboogle-1", "bamboogle-2"]
    assert samples[0].golden_answers == ("james madison",)
    assert samples[2].metadata == {"dataset": "bamboogle", "hops": 2, "type": "compositional"}
    as_json = [{"Question": q, "Answer": a} for q, a in BAMBOOGLE]
    again = read_records(write_json(tmp_path / "bamboogle.json", as_json)).samples
    assert [s.to_json() for s in again] == [s.to_json() for s in samples]


def test_flashrag_through_the_same_reader(files):
    samples = read_records(files["flashrag"]).samples
    assert [s.golden_answers for s in samples] == [("William Shakespeare",), ("2", "two")]


def test_format_override(files, tmp_path):
    # 2Wiki follows HotpotQA's layout, so it reads as HotpotQA when asked to.
    read = read_records(files["2wiki"], format="hotpotqa")
    assert read.format == "hotpotqa"
    assert read.records[0].sample.metadata["dataset"] == "hotpotqa"
    # A release under an unhelpful name is still detected by its first record.
    odd = write_json(tmp_path / "download.txt", HOTPOT)
    assert read_records(odd).format == "hotpotqa"
    with pytest.raises(ValueError, match="unknown format 'squad'"):
        read_records(files["hotpotqa"], format="squad")


def test_load_split_reads_release_files_and_directories(files):
    samples = data.load_split(files["hotpotqa"])
    assert [s.id for s in samples] == [r["_id"] for r in HOTPOT]
    # In a directory, the release file whose name has the split is that split.
    raw = files["musique"].parent
    assert [s.id for s in data.load_split(raw, "dev")] == [r["_id"] for r in TWOWIKI]  # dev.json
    # Several releases side by side: the format picks the file.
    dev = data.load_split(raw, "dev", format="musique")
    assert [s.id for s in dev] == [r["id"] for r in MUSIQUE]
    (raw / "dev.json").unlink()
    with pytest.raises(ValueError, match="several files match split 'dev'"):
        data.load_split(raw, "dev")  # hotpot_dev_distractor_v1.json, musique_ans_v1.0_dev.jsonl


def test_gzip_release(tmp_path):
    import gzip

    path = tmp_path / "hotpot_train_v1.1.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        json.dump(HOTPOT, handle)
    read = read_records(path)
    assert read.format == "hotpotqa" and read.split == "train" and len(read.records) == 2


# --------------------------------------------------------------------------- errors


def test_json_list_error_names_file_record_line_and_field(tmp_path):
    broken = [HOTPOT[0], {k: v for k, v in HOTPOT[1].items() if k != "answer"}]
    path = tmp_path / "hotpot.json"
    path.write_text(json.dumps(broken, indent=1), encoding="utf-8")
    with pytest.raises(RecordFormatError) as info:
        read_records(path)
    error = info.value
    start_line = json.dumps(broken, indent=1).splitlines().index(" {", 2) + 1
    assert (error.path, error.record, error.line, error.field) == (
        str(path),
        1,
        start_line,
        "answer",
    )
    assert str(error).startswith(f"{path}, record 1 (line {start_line}): field 'answer': missing")


def test_jsonl_error_names_line_and_nested_field(tmp_path):
    bad = json.loads(json.dumps(MUSIQUE[1]))
    del bad["paragraphs"][2]["paragraph_text"]
    path = write_jsonl(tmp_path / "musique.jsonl", [MUSIQUE[0], bad])
    with pytest.raises(RecordFormatError) as info:
        read_records(path)
    assert info.value.line == 2 and info.value.field == "paragraphs[2].paragraph_text"
    assert str(info.value) == (f"{path}, line 2: field 'paragraphs[2].paragraph_text': missing")


def test_wrong_shape_fields_are_named(tmp_path):
    cases = {
        "supporting_facts[0]": dict(HOTPOT[0], supporting_facts=[["Ed Wood", "first"]]),
        "context[1]": dict(HOTPOT[0], context=[HOTPOT[0]["context"][0], ["Ed Wood"]]),
        "_id": dict(HOTPOT[0], _id=""),
    }
    for field, record in cases.items():
        with pytest.raises(RecordFormatError, match=re.escape(f"field '{field}'")) as info:
            read_records(write_json(tmp_path / "h.json", [record]), format="hotpotqa")
        assert info.value.field == field


def test_skip_mode_counts_every_bad_record(tmp_path):
    bad_step = json.loads(json.dumps(MUSIQUE[1]))
    bad_step["question_decomposition"][0]["paragraph_support_idx"] = 9
    lines = [
        "{not json",
        json.dumps(MUSIQUE[0]),
        json.dumps(bad_step),
        json.dumps(MUSIQUE[0]),  # duplicate id
    ]
    path = tmp_path / "musique_dev.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="skipped 3 malformed record"):
        read = read_records(path, on_error="skip")
    assert [r.sample.id for r in read.records] == ["2hop__460946_294723"]
    assert read.records.skipped == 3
    reasons = [str(e) for e in read.records.errors]
    assert "line 1: invalid JSON" in reasons[0]  # detection used line 2
    assert "line 3: field 'question_decomposition[0].paragraph_support_idx'" in reasons[1]
    assert "line 4: duplicate id" in reasons[2]
    with pytest.warns(UserWarning, match="skipped 3"):
        samples = data.load_split(path, on_error="skip")
    assert samples.skipped == 3  # type: ignore[attr-defined]


def test_test_files_without_answers_say_why(tmp_path):
    record = {k: v for k, v in HOTPOT[0].items() if k not in ("answer", "supporting_facts")}
    with pytest.raises(RecordFormatError, match="test files ship no answers"):
        read_records(write_json(tmp_path / "hotpot_test_fullwiki_v1.json", [record]))


def test_undetectable_file_asks_for_format(tmp_path):
    with pytest.raises(ValueError, match="pass format="):
        read_records(write_jsonl(tmp_path / "x.jsonl", [{"query": "q", "label": 1}]))


# --------------------------------------------------------------------------- closed corpus


def test_paragraph_ids_depend_on_content_only():
    a = paragraph_document("Ed Wood", "Edward Davis Wood Jr. was  a filmmaker.")
    b = paragraph_document("Ed Wood", "Edward Davis Wood Jr. was a filmmaker. ")
    assert a.id == b.id  # whitespace differences fold
    assert a.id != paragraph_document("Ed Woods", "Edward Davis Wood Jr. was a filmmaker.").id
    corpus = ClosedCorpus([a, b])
    assert (len(corpus), corpus.paragraphs_seen) == (1, 2)


def test_convert_builds_deduplicated_closed_corpus(files, tmp_path):
    out = tmp_path / "hotpotqa"
    report = convert(files["hotpotqa"], out)
    assert (report.split, report.format, report.samples) == ("dev", "hotpotqa", 2)
    assert (report.paragraphs_seen, report.corpus_documents) == (8, 7)  # Ed Wood twice
    corpus = data.load_corpus(out)
    ids = {doc.id for doc in corpus}
    assert len(ids) == len(corpus) == 7
    for doc in corpus:
        assert doc.contents.startswith(f'"{doc.title}"\n')
    samples = data.load_split(out, "dev")
    for sample in samples:
        assert sample.metadata["supporting_doc_ids"]
        assert set(sample.metadata["supporting_doc_ids"]) <= ids
    # The converted split is the FlashRAG shape of what the reader gives.
    assert [s.to_json() for s in samples] == [
        s.to_json() for s in read_records(files["hotpotqa"]).samples
    ]


def test_convert_merges_into_an_existing_corpus(files, tmp_path):
    out = tmp_path / "mixed"
    convert(files["hotpotqa"], out)
    report = convert(files["musique"], out, split="train")
    assert report.corpus_new_documents == 7 and report.corpus_documents == 14
    ids = {doc.id for doc in data.load_corpus(out)}
    for split in ("dev", "train"):
        for sample in data.load_split(out, split):
            assert set(sample.metadata["supporting_doc_ids"]) <= ids


def test_release_file_gets_a_cached_closed_corpus(files, tmp_path):
    cache = tmp_path / "cache"
    first = data.corpus_path(files["2wiki"], cache_dir=cache)
    assert first is not None and first.is_relative_to(cache)
    assert data.corpus_path(files["2wiki"], cache_dir=cache) == first  # built once
    ids = {d.id for d in data.read_corpus_jsonl(first)}
    for sample in data.load_split(files["2wiki"]):
        assert set(sample.metadata["supporting_doc_ids"]) <= ids
    assert data.corpus_path(files["bamboogle"], cache_dir=cache) is None  # no paragraphs


# --------------------------------------------------------------------------- CLI


def test_cli_convert_round_trip(files, tmp_path, capsys):
    out = tmp_path / "musique"
    assert main(["data", "convert", str(files["musique"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"musique -> {out / 'dev.jsonl'}: 2 questions" in printed
    assert "closed corpus" in printed and "7 documents" in printed
    assert sorted(p.name for p in out.iterdir()) == ["corpus.jsonl", "dev.jsonl"]
    converted = data.load_split(out, "dev")
    assert [s.to_json() for s in converted] == [
        s.to_json() for s in read_records(files["musique"]).samples
    ]


def test_cli_convert_bamboogle_needs_no_corpus(files, tmp_path, capsys):
    out = tmp_path / "bamboogle"
    assert (
        main(["data", "convert", str(files["bamboogle"]), "--split", "test", "--out", str(out)])
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["test.jsonl"]
    assert len(data.load_split(out, "test")) == 3


def test_cli_convert_errors_and_skip(tmp_path, capsys):
    path = tmp_path / "hotpot_dev.json"
    write_json(path, [HOTPOT[0], {"_id": "x", "question": "q?", "context": []}])
    out = tmp_path / "out"
    assert main(["data", "convert", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{path}, record 1 (line 1): field 'answer': missing" in err
    assert not out.exists()  # nothing half-written
    args = ["data", "convert", str(path), "--out", str(out), "--on-error", "skip"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "1 questions, 1 malformed record(s) skipped" in printed
    assert "skipped: " in printed and "field 'answer'" in printed


def test_cli_convert_needs_a_split_it_cannot_guess(files, tmp_path, capsys):
    assert main(["data", "convert", str(files["bamboogle"]), "--out", str(tmp_path / "o")]) == 2
    assert "--split" in capsys.readouterr().err


def test_cli_stats(files, tmp_path, capsys):
    out = tmp_path / "hotpotqa"
    main(["data", "convert", str(files["hotpotqa"]), "--out", str(out)])
    capsys.readouterr()
    assert main(["data", "stats", str(out), "--split", "dev"]) == 0
    printed = capsys.readouterr().out
    assert "2 questions" in printed
    assert "answer types: yes/no 1 (50%), span 1 (50%)" in printed
    assert "hops: 2 2 (100%)" in printed
    assert "question types: comparison 1 (50%), bridge 1 (50%)" in printed
    assert "supporting docs found there: 4/4 (100%)" in printed
    assert main(["data", "stats", str(files["musique"]), "--json"]) == 0
    numbers = json.loads(capsys.readouterr().out)
    assert numbers["hops"] == {"2": 1, "3": 1}
    assert numbers["answer_types"] == {"span": 1, "date": 1}
    assert numbers["with_decomposition"] == 2


def test_cli_show_release_file(files, capsys):
    assert main(["data", "show", str(files["musique"]), "--n", "1"]) == 0
    printed = capsys.readouterr().out
    assert "2hop, 2 hop(s)" in printed and "1. Green performer -> Steve Hillage" in printed


def test_cli_show_reads_a_sheet_without_a_header_or_says_what_is_wrong(tmp_path, capsys):
    sheet = tmp_path / "questions.csv"
    sheet.write_text("Who wrote The Glass Tide?,Tamsy Orr\nWhere is Quimby Forge?,Ostravel\n")
    assert main(["data", "show", str(sheet), "--n", "2"]) == 0
    printed = capsys.readouterr().out
    assert "Q: Who wrote The Glass Tide?" in printed and "A: Ostravel" in printed
    sheet.write_text("just one cell\n")
    assert main(["data", "show", str(sheet)]) == 2
    said = capsys.readouterr().err
    assert "questions.csv, line 1: a row without a header has 1 cells" in said
    assert "invalid JSON" not in said


def test_cli_help_mentions_formats(capsys):
    with pytest.raises(SystemExit):
        main(["data", "convert", "--help"])
    text = capsys.readouterr().out
    for word in ("hotpotqa", "musique", "2wiki", "bamboogle", "--on-error", "corpus.jsonl"):
        assert word in text


def test_answer_types():
    expected = {
        "yes": "yes/no",
        "No": "yes/no",
        "1703": "date",
        "16 July 1966": "date",
        "July 16, 1966": "date",
        "3.5 million": "numeric",
        "60%": "numeric",
        "two": "numeric",
        "Chief of Protocol": "span",
    }
    assert {a: answer_type(a) for a in expected} == expected


def test_dataset_stats_counts(files):
    samples = [*read_records(files["musique"]).samples, *read_records(files["2wiki"]).samples]
    stats = dataset_stats(samples, corpus_ids=set())
    assert stats.questions == 4 and stats.golden_answers == 5  # one MuSiQue alias
    assert stats.hops == {2: 3, 3: 1}
    assert stats.question_types == {"2hop": 1, "3hop1": 1, "compositional": 1, "comparison": 1}
    assert stats.answer_types == {"span": 3, "date": 1}
    assert (stats.with_supporting, stats.supporting_docs) == (4, 9)
    assert (stats.with_decomposition, stats.supporting_in_corpus) == (4, 0)


# --------------------------------------------------------------------------- hub


def test_hub_offline_error_says_how_to_use_a_local_file(monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(data.hub.HubUnavailableError) as info:  # type: ignore[attr-defined]
        data.load_split("hf:research-gym-tests/no-such-dataset", "validation")
    message = str(info.value)
    assert "offline" in message and "HF_HUB_OFFLINE=1" in message
    assert "local copy" in message and "research-env data convert" in message


def _hub_style_hotpot_rows() -> list[dict]:
    """HotpotQA as the hub stores it: ``id``, and lists of pairs stored column-wise."""
    rows = []
    for record in HOTPOT:
        rows.append(
            {
                "id": record["_id"],
                "question": record["question"],
                "answer": record["answer"],
                "type": record["type"],
                "level": record["level"],
                "supporting_facts": {
                    "title": [t for t, _ in record["supporting_facts"]],
                    "sent_id": [i for _, i in record["supporting_facts"]],
                },
                "context": {
                    "title": [t for t, _ in record["context"]],
                    "sentences": [s for _, s in record["context"]],
                },
            }
        )
    return rows


def test_local_saved_dataset_reads_like_the_release(files, tmp_path):
    datasets = pytest.importorskip("datasets")
    saved = tmp_path / "hotpot_saved"
    split = datasets.Dataset.from_list(_hub_style_hotpot_rows())
    datasets.DatasetDict({"validation": split}).save_to_disk(str(saved))
    from_disk = data.load_split(saved, "dev")  # dev finds the hub's "validation"
    from_file = data.load_split(files["hotpotqa"])
    assert [s.to_json() for s in from_disk] == [s.to_json() for s in from_file]
    with pytest.raises(ValueError, match=r"no split 'train'; splits there: \['validation'\]"):
        data.load_split(saved, "train")
    # Converting the hub copy gives the same corpus ids as the release file.
    report = convert(saved, tmp_path / "out", split="validation")
    assert report.corpus_documents == 7
    # And an env pointed at the saved directory finds its closed corpus by itself.
    bundled = data.corpus_path(saved, cache_dir=tmp_path / "cache")
    assert bundled is not None
    assert {d.id for d in data.read_corpus_jsonl(bundled)} == {
        d.id for d in data.load_corpus(tmp_path / "out")
    }
    parquet_dir = tmp_path / "hotpot_parquet"
    (parquet_dir / "distractor").mkdir(parents=True)
    split.to_parquet(str(parquet_dir / "distractor" / "validation-00000-of-00001.parquet"))
    from_parquet = data.load_split(parquet_dir, "validation")
    assert [s.to_json() for s in from_parquet] == [s.to_json() for s in from_file]


# --------------------------------------------------------------------------- episodes


def _make_env(dataset: Path, cache: Path, split: str = "dev", **kwargs):
    return gym.make(
        "ReSearch-MultiHop-v0",
        dataset=str(dataset),
        split=split,
        retriever="bm25",
        cache_dir=str(cache),
        top_k=3,
        max_turns=5,
        **kwargs,
    ).unwrapped


def test_episode_on_converted_hotpotqa_with_bm25(files, tmp_path):
    out = tmp_path / "hotpotqa"
    convert(files["hotpotqa"], out)
    env = _make_env(out, tmp_path / "cache")
    env.reset(options={"question_id": "5a8c7595554299585d9e36b6"})
    prefix = "" if env.template.prefill.endswith("<think>") else "<think>"
    obs, reward, terminated, _, _ = env.step(
        prefix + "Who played Corliss Archer?</think>\n<search>Kiss and Tell 1945 film</search>"
    )
    assert not terminated and "Shirley Temple" in obs
    obs, *_ = env.step("<think>Now her career.</think>\n<search>Shirley Temple diplomat</search>")
    assert "Chief of Protocol" in obs
    _, reward, terminated, _, info = env.step(
        "<think>She was Chief of Protocol.</think>\n"
        "<answer>The answer is \\boxed{Chief of Protocol}</answer>"
    )
    assert terminated and reward == 1.0
    assert info["em"] == 1.0 and info["supporting_recall"] == 1.0


def _run_oracle(env, question_id: str) -> dict:
    policy = OraclePolicy()
    env.reset(options={"question_id": question_id})
    for _ in range(env.rules.max_turns):
        _, _, terminated, truncated, info = env.step(policy.act(env))
        if terminated or truncated:
            return info
    raise AssertionError("episode did not end")


def test_oracle_solves_converted_musique_with_bm25(files, tmp_path):
    out = tmp_path / "musique"
    assert main(["data", "convert", str(files["musique"]), "--out", str(out)]) == 0
    env = _make_env(out, tmp_path / "cache")
    for record in MUSIQUE:
        info = _run_oracle(env, record["id"])
        assert info["em"] == 1.0, info
        assert info["supporting_recall"] == 1.0
        assert info["searches"] == len(record["question_decomposition"])


def test_oracle_solves_2wiki_release_file_directly(files, tmp_path):
    # No conversion step: the env reads the release and builds its closed corpus.
    env = _make_env(files["2wiki"], tmp_path / "cache")
    info = _run_oracle(env, TWOWIKI[0]["_id"])
    assert info["em"] == 1.0 and info["supporting_recall"] == 1.0


def test_a_search_r1_parquet_file_reads_like_its_folder(tmp_path):
    """Search-R1's own ``train.parquet`` (one file, its columns) loads as a file too; only
    its folder did."""
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    rows = [{"id": f"train_{i}", "question": q, "golden_answers": a, "data_source": "nq",
             "prompt": [{"role": "user", "content": "..." + q}], "ability": "fact-reasoning",
             "reward_model": {"ground_truth": {"target": a}, "style": "rule"},
             "extra_info": {"index": i, "split": "train"}}
            for i, (q, a) in enumerate([("who wrote hamlet", ["Shakespeare"]),
                                        ("capital of france", ["Paris"])])]  # fmt: skip
    folder = tmp_path / "searchr1"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), folder / "train.parquet")
    from_folder = data.load_split(folder, "train")
    from_file = data.load_split(folder / "train.parquet")
    assert [s.to_json() for s in from_file] == [s.to_json() for s in from_folder]
    assert [list(s.golden_answers) for s in from_file] == [["Shakespeare"], ["Paris"]]
