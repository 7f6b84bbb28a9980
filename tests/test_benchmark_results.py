"""benchmarks.results: a speed script replaces its own section of RESULTS.md, nothing else."""

from __future__ import annotations

from benchmarks.results import publish

BEFORE = """# Benchmark results

## BM25 retrieval

old bm25 numbers

## Retrieval server

### Batching

old batching numbers

### Stacks

old stack numbers

## Dense retrieval

old dense numbers
"""


def test_a_section_is_replaced_in_place(tmp_path, capsys):
    path = tmp_path / "RESULTS.md"
    path.write_text(BEFORE)
    publish("## BM25 retrieval\n\nnew bm25 numbers\n", path=path)
    text = path.read_text()
    assert text == BEFORE.replace("old bm25 numbers", "new bm25 numbers")
    assert "new bm25 numbers" in capsys.readouterr().out


def test_a_new_section_is_appended_and_no_write_only_prints(tmp_path, capsys):
    path = tmp_path / "RESULTS.md"
    path.write_text(BEFORE)
    publish("## Decoding\n\nfast\n", path=path)
    assert path.read_text() == BEFORE + "\n## Decoding\n\nfast\n"
    publish("## Decoding\n\nslow\n", path=path, write=False)
    assert path.read_text().endswith("fast\n")
    assert "slow" in capsys.readouterr().out


def test_a_subsection_is_replaced_inside_its_section(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(BEFORE)
    publish("### Batching\n\nnew batching\n", within="## Retrieval server", path=path)
    assert path.read_text() == BEFORE.replace("old batching numbers", "new batching")
    publish("### Threads\n\nthreads\n", within="## Retrieval server", path=path)
    text = path.read_text()
    assert "old stack numbers\n\n### Threads\n\nthreads\n\n## Dense retrieval" in text


def test_a_missing_file_and_section_are_created(tmp_path):
    path = tmp_path / "RESULTS.md"
    publish("### Batching\n\nnumbers\n", within="## Retrieval server", path=path)
    assert path.read_text() == (
        "# Benchmark results\n\n## Retrieval server\n\n### Batching\n\nnumbers\n"
    )


def test_every_results_section_the_code_cites_exists():
    """Docstrings and comments point at RESULTS.md sections for their figures
    (``RESULTS.md, "Episode cost"`` or ``RESULTS.md ("Episode cost")``); a renamed or
    removed section leaves a citation that leads nowhere."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    headings = [
        line.lstrip("#").strip()
        for line in (root / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    ]
    cite = re.compile(r'RESULTS\.md(?:,\s*|\s*\(\s*)"([^"]{1,100})"')
    missing = []
    for folder in ("algorithms", "research_env", "benchmarks"):
        for path in sorted((root / folder).rglob("*.py")):
            text = re.sub(r"\s*\n\s*(#\s*)?", " ", path.read_text(encoding="utf-8"))
            for title in cite.findall(text):
                if not any(title in heading for heading in headings):
                    missing.append(f"{path.relative_to(root)}: {title!r}")
    assert not missing, "cited RESULTS.md sections that do not exist: " + "; ".join(missing)
