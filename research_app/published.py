"""Published results on the seven search-QA benchmarks, quoted beside ours by
``research-env eval --suite searchr1`` (:mod:`research_app.suite`).

Every number here was read from the source named in its row, not from memory: a table
in a paper's repository (an image, read by eye) or a quotation of the paper. A setting
the source does not state is None and prints as an empty cell; so does a number we could
not verify. Scores are percentages (the papers' 0.329 is 32.9 here). What makes two rows
comparable is the whole setting: model, corpus, retriever, top-k, metric and the
questions evaluated; a row whose settings differ from ours (or are unknown) is context,
not a comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PUBLISHED", "PublishedRow", "published_for_size"]

# The seven datasets, in the order every table prints them.
DATASETS = ("nq", "triviaqa", "popqa", "hotpotqa", "2wikimultihopqa", "musique", "bamboogle")


@dataclass(frozen=True)
class PublishedRow:
    """One system's published scores (percent) at one model size, with its settings."""

    system: str
    model: str
    size: str  # "3b", "7b": matched against the evaluated model's size
    source: str
    corpus: str | None = None
    retriever: str | None = None
    top_k: int | None = None
    metric: str | None = None
    em: dict[str, float] = field(default_factory=dict)
    f1: dict[str, float] = field(default_factory=dict)


_SEARCH_R1_SETTING = (
    "Search-R1 paper (arXiv 2503.09516, Experimental Setup): the 2018 Wikipedia dump, "
    "E5 retriever, three passages per search"
)
_ZEROSEARCH_TABLE = (
    "ZeroSearch main-results table (github.com/Alibaba-NLP/ZeroSearch, "
    "assets/results.jpg, commit 2d4cdca); its corpus, retriever, top-k and metric are "
    "not stated in that table and were not verified"
)
_STEPSEARCH_TABLE = (
    "StepSearch main-results table (github.com/Zillwang/StepSearch, "
    "assets/main_results.png, commit 43215ba), EM and F1 columns; its corpus, retriever "
    "and top-k were not verified"
)

PUBLISHED: tuple[PublishedRow, ...] = (
    PublishedRow(
        system="Search-R1-instruct",
        model="Qwen2.5-3B-Instruct",
        size="3b",
        source=(
            "scores as quoted from the paper by a reproduction "
            "(huggingface.co/blog/Seungyoun/reproduce-search-r1); " + _SEARCH_R1_SETTING
        ),
        corpus="Wikipedia 2018",
        retriever="E5",
        top_k=3,
        metric=None,
        em={
            "nq": 39.7,
            "triviaqa": 56.5,
            "popqa": 39.1,
            "hotpotqa": 33.1,
            "2wikimultihopqa": 31.0,
            "musique": 12.4,
            "bamboogle": 23.2,
        },
    ),
    PublishedRow(
        system="ZeroSearch-base",
        model="Qwen2.5-3B-Base",
        size="3b",
        source=_ZEROSEARCH_TABLE,
        em={
            "nq": 43.00,
            "triviaqa": 61.60,
            "popqa": 41.40,
            "hotpotqa": 33.80,
            "2wikimultihopqa": 34.60,
            "musique": 13.00,
            "bamboogle": 13.89,
        },
    ),
    PublishedRow(
        system="ZeroSearch-inst",
        model="Qwen2.5-3B-Instruct",
        size="3b",
        source=_ZEROSEARCH_TABLE,
        em={
            "nq": 41.40,
            "triviaqa": 57.40,
            "popqa": 44.80,
            "hotpotqa": 27.40,
            "2wikimultihopqa": 30.00,
            "musique": 9.80,
            "bamboogle": 11.11,
        },
    ),
    PublishedRow(
        system="StepSearch-base",
        model="Qwen2.5-3B-Base",
        size="3b",
        source=_STEPSEARCH_TABLE,
        metric="EM / F1",
        em={"hotpotqa": 32.9, "2wikimultihopqa": 33.9, "musique": 18.1, "bamboogle": 32.8},
        f1={"hotpotqa": 43.4, "2wikimultihopqa": 39.5, "musique": 27.3, "bamboogle": 41.9},
    ),
    PublishedRow(
        system="StepSearch-instruct",
        model="Qwen2.5-3B-Instruct",
        size="3b",
        source=_STEPSEARCH_TABLE,
        metric="EM / F1",
        em={"hotpotqa": 34.5, "2wikimultihopqa": 32.0, "musique": 17.4, "bamboogle": 34.4},
        f1={"hotpotqa": 45.2, "2wikimultihopqa": 38.5, "musique": 26.1, "bamboogle": 45.2},
    ),
    PublishedRow(
        system="ZeroSearch-base",
        model="Qwen2.5-7B-Base",
        size="7b",
        source=_ZEROSEARCH_TABLE,
        em={
            "nq": 42.40,
            "triviaqa": 66.40,
            "popqa": 60.40,
            "hotpotqa": 32.00,
            "2wikimultihopqa": 34.00,
            "musique": 18.00,
            "bamboogle": 33.33,
        },
    ),
    PublishedRow(
        system="ZeroSearch-inst",
        model="Qwen2.5-7B-Instruct",
        size="7b",
        source=_ZEROSEARCH_TABLE,
        em={
            "nq": 43.60,
            "triviaqa": 65.20,
            "popqa": 48.80,
            "hotpotqa": 34.60,
            "2wikimultihopqa": 35.20,
            "musique": 18.40,
            "bamboogle": 27.78,
        },
    ),
    PublishedRow(
        system="StepSearch-base",
        model="Qwen2.5-7B-Base",
        size="7b",
        source=_STEPSEARCH_TABLE,
        metric="EM / F1",
        em={"hotpotqa": 38.0, "2wikimultihopqa": 38.5, "musique": 21.6, "bamboogle": 46.7},
        f1={"hotpotqa": 49.3, "2wikimultihopqa": 45.0, "musique": 32.4, "bamboogle": 57.3},
    ),
    PublishedRow(
        system="StepSearch-instruct",
        model="Qwen2.5-7B-Instruct",
        size="7b",
        source=_STEPSEARCH_TABLE,
        metric="EM / F1",
        em={"hotpotqa": 38.6, "2wikimultihopqa": 36.6, "musique": 22.6, "bamboogle": 40.0},
        f1={"hotpotqa": 50.2, "2wikimultihopqa": 43.1, "musique": 31.2, "bamboogle": 53.4},
    ),
)


def published_for_size(size: str | None) -> tuple[str, list[PublishedRow]]:
    """``(size shown, rows)``: the rows at ``size`` ("3b", "7b"); for an unknown or
    unpublished size, the 3B rows (the size most search-agent papers report)."""
    sizes = {row.size for row in PUBLISHED}
    shown = size if size in sizes else "3b"
    return shown, [row for row in PUBLISHED if row.size == shown]
