"""The seven-benchmark suite (``research-env eval --suite searchr1``) end to end on small
FlashRAG-format files and a local BM25 corpus: every dataset at its split, the per-row
intervals (hand-computed), fingerprints, and the published rows beside ours."""

from __future__ import annotations

import json

import pytest
from test_judge_reward import fake_judge

from research_app import cli
from research_app.published import PUBLISHED, published_for_size
from research_app.suite import SUITES, load_suite, model_size

# One made-up fact per dataset; Bamboogle's is missing from the corpus, so the oracle
# policy (which answers only when the documents hold every fact) answers "unknown" there.
FACTS = {
    "nq": ("Who founded Drellow Works?", "Ada Pell"),
    "triviaqa": ("Who painted The Glass Tide?", "Tamsy Orr"),
    "popqa": ("What is Brisa Telk's occupation?", "engineer"),
    "hotpotqa": ("Where is Quimby Forge headquartered?", "Ostravel"),
    "2wikimultihopqa": ("Who directed Harrow Lane?", "Mirel Vast"),
    "musique": ("Which river runs through Quesland?", "the Ambrel"),
    "bamboogle": ("Who composed the Veltry Suite?", "Oda Quill"),
}


def write_suite(root):
    """FlashRAG files for the seven datasets (two questions each) and a corpus."""
    corpus = []
    for folder, (question, answer) in FACTS.items():
        split = next(b.split for b in SUITES["searchr1"] if b.folder == folder)
        rows = [
            {
                "id": f"{folder}-{i}",
                "question": question,
                "golden_answers": [answer],
                "metadata": {"decomposition": [{"question": question, "answer": answer}]},
            }
            for i in range(2)
        ]
        (root / folder).mkdir(parents=True)
        text = "\n".join(json.dumps(r) for r in rows) + "\n"
        (root / folder / f"{split}.jsonl").write_text(text, encoding="utf-8")
        if folder != "bamboogle":
            corpus.append({"id": folder, "contents": f'"{folder}"\n{question[:-1]}: {answer}.'})
    corpus.append({"id": "filler", "contents": '"Filler"\nNothing to see here.'})
    path = root / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(d) for d in corpus) + "\n", encoding="utf-8")
    return path


def run_suite_cli(data, corpus, *more: str) -> int:
    return cli.main(
        ["eval", "--suite", "searchr1", "--data-dir", str(data), "--corpus", str(corpus), *more]
    )


def test_the_suite_is_search_r1s_seven_datasets_at_their_splits():
    assert [(b.folder, b.split) for b in SUITES["searchr1"]] == [
        ("nq", "test"),
        ("triviaqa", "test"),
        ("popqa", "test"),
        ("hotpotqa", "dev"),
        ("2wikimultihopqa", "dev"),
        ("musique", "dev"),
        ("bamboogle", "test"),
    ]


def test_missing_files_are_named_in_one_error(tmp_path):
    write_suite(tmp_path)
    (tmp_path / "musique" / "dev.jsonl").unlink()
    (tmp_path / "nq" / "test.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=r"2 file\(s\) missing") as caught:
        load_suite("searchr1", tmp_path)
    assert "nq/test.jsonl" in str(caught.value) and "musique/dev.jsonl" in str(caught.value)


def test_scripted_suite_report_rows_intervals_and_published_rows(tmp_path, capsys):
    data = tmp_path / "flashrag"
    corpus = write_suite(data)
    out = tmp_path / "out"
    code = run_suite_cli(data, corpus, "--policy", "oracle", "--top-k", "1", "--out", str(out))
    assert code == 0
    text = capsys.readouterr().out
    # 2 of 2 right: EM 100.0, Wilson half-width 1.96 * sqrt(1.96^2/16) / (1 + 1.96^2/2)
    # = 0.9604 / 2.9208 = 0.329; F1 all 1.0: a t interval of width 0.
    assert "| NQ | test | 2 | 100.0 ± 32.9 | 100.0 ± 0.0 |" in text
    assert "| HotpotQA | dev | 2 | 100.0 ± 32.9 |" in text
    assert "| Bamboogle | test | 2 | 0.0 ± 32.9 | 0.0 ± 0.0 |" in text  # fact not in corpus
    assert "| average (unweighted, 7 datasets) | | | 85.7 | 85.7 |" in text  # 6 of 7
    assert "quoted from the papers, not run here" in text
    assert (
        "| ZeroSearch-base | Qwen2.5-3B-Base | Google Web Search | Google (SerpAPI) | 5 | EM "
        "| 43 | 61.6 | 41.4 | 33.8 | 34.6 | 13 | 13.89 |" in text
    )
    assert (
        "| StepSearch-base | Qwen2.5-3B-Base | training corpus + Wikipedia 2018 | E5 | 3 |" in text
    )
    assert "StepSearch, arXiv 2505.15107, Table 1" in text
    # A row whose scores were not found in the paper's text prints its settings, empty
    # cells and, under Notes, why.
    assert (
        "| Search-R1-instruct | Qwen2.5-3B-Instruct | Wikipedia 2018 | E5 | 3 |" + "  |" * 8 in text
    )
    assert "Notes:\n- Search-R1: no scores." in text
    saved = json.loads((out / "suite.json").read_text())
    assert [row["dataset"] for row in saved] == [b.folder for b in SUITES["searchr1"]]
    assert all(row["n"] == 2 and len(row["fingerprint"]) == 64 for row in saved)
    # Each dataset is its own question set, so each row has its own fingerprint.
    assert len({row["fingerprint"] for row in saved}) == 7
    assert (out / "suite.md").read_text().startswith("## Suite searchr1: oracle")
    assert len((out / "musique.jsonl").read_text().splitlines()) == 2


def test_the_suite_runs_a_language_model_end_to_end(tmp_path, capsys):
    data = tmp_path / "flashrag"
    corpus = write_suite(data)
    code = run_suite_cli(
        data,
        corpus,
        *("--model", "tiny-random", "--limit", "1"),
        *("--max-turn-tokens", "4", "--max-total-tokens", "24", "--out", str(tmp_path / "out")),
        *("--judge", fake_judge()),  # a loopback OpenAI-compatible judge
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "| dataset | split | n | EM | F1 | judge | fingerprint |" in text
    for label in ("NQ", "TriviaQA", "PopQA", "HotpotQA", "2Wiki", "MuSiQue", "Bamboogle"):
        assert f"| {label} | " in text
    saved = json.loads((tmp_path / "out" / "suite.json").read_text())
    assert [row["n"] for row in saved] == [1] * 7
    assert all(row["settings"]["retriever"] == "bm25" for row in saved)
    # tiny-random states no size: the 3B rows are shown, saying so.
    assert "at 3B (no published rows at this model's size)" in text


def test_the_suite_without_a_data_dir_says_what_it_needs(capsys):
    with pytest.raises(SystemExit, match="needs --data-dir DIR"):
        cli.main(["eval", "--suite", "searchr1"])


def test_model_sizes_and_published_rows_by_size():
    assert [model_size(m) for m in ("Qwen2.5-3B-Instruct", "qwen2.5-7b", "tiny-random")] == [
        "3b",
        "7b",
        None,
    ]
    assert model_size("smollm2-135m") is None and model_size("Llama-3.2-3B") == "3b"
    size, rows = published_for_size("7b")
    assert size == "7b" and rows and all(r.size == "7b" for r in rows)
    assert published_for_size("0.5b")[0] == "3b"
    # Every published number is a percentage for one of the seven datasets.
    folders = {b.folder for b in SUITES["searchr1"]}
    for row in PUBLISHED:
        assert set(row.em) <= folders and set(row.f1) <= set(row.em)
        assert all(0 <= v <= 100 for v in [*row.em.values(), *row.f1.values()])


def test_published_numbers_cite_the_papers_table_text_or_say_why_they_are_absent():
    for row in PUBLISHED:
        if row.em or row.f1:  # a number needs its table and the metric the paper states
            assert "arXiv" in row.source and "Table" in row.source, row.system
            assert row.metric in ("EM", "EM / F1"), row.system
            assert (row.metric == "EM / F1") == bool(row.f1), row.system
        else:
            assert row.note.startswith(row.system.split("-")[0]), row.system
    search_r1 = next(r for r in PUBLISHED if r.system == "Search-R1-instruct")
    # The 3B scores a third-party blog quoted as "the paper" are not Table 2's main result.
    assert not search_r1.em and "third-party" in search_r1.note
    assert (search_r1.corpus, search_r1.retriever, search_r1.top_k) == ("Wikipedia 2018", "E5", 3)
    # ZeroSearch's evaluation searches Google (SerpAPI) for five documents (Section 4.3).
    zerosearch = [r for r in PUBLISHED if r.system.startswith("ZeroSearch")]
    assert {(r.retriever, r.top_k, r.metric) for r in zerosearch} == {("Google (SerpAPI)", 5, "EM")}
    # Table 1 of StepSearch prints 0.467 / 0.573 for the 7B base model on Bamboogle.
    step7 = next(r for r in PUBLISHED if r.system == "StepSearch-base" and r.size == "7b")
    assert (step7.em["bamboogle"], step7.f1["bamboogle"]) == (46.7, 57.3)
