"""Published results on the seven search-QA benchmarks, quoted beside ours by
``research-env eval --suite searchr1`` (:mod:`research_app.suite`).

A number here is exactly what the paper's own text says, or absent. Every number and
setting was checked on 2026-12-07 against the text of the paper (its table, not an image
of it, and not a third party's quotation); ``source`` names the table and section, and
``note`` says why a number or setting is absent. A setting the text does not state is
None; the report prints it, and a missing number, as an empty cell. Scores are
percentages (the papers' 0.329 is 32.9 here). What makes two rows comparable is the
whole setting: model, corpus, retriever, top-k, metric and the questions evaluated; a
row whose settings differ from ours (or are unknown) is context, not a comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PUBLISHED", "PublishedRow", "published_for_size"]

# The seven datasets, in the order every table prints them.
DATASETS = ("nq", "triviaqa", "popqa", "hotpotqa", "2wikimultihopqa", "musique", "bamboogle")


@dataclass(frozen=True)
class PublishedRow:
    """One system's published scores (percent) at one model size, with its settings.

    ``source`` cites where the numbers and settings were read (paper, table, section);
    ``note`` says why a number or setting is absent ("" when nothing is)."""

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
    note: str = ""


_SEARCH_R1 = (
    "Search-R1, arXiv 2503.09516 (arxiv.org/html/2503.09516), Experimental Setup: "
    '"the 2018 Wikipedia dump [...] as the knowledge source and E5 [...] as the '
    'retriever", "the number of retrieved passages to three"'
)
_SEARCH_R1_NOTE = (
    "Search-R1: no scores. Its results tables (Tables 2 and 3) were not found as text. "
    "The 3B scores once quoted here came from a third-party reproduction "
    "(huggingface.co/blog/Seungyoun/reproduce-search-r1); other third parties place "
    "them in Table 3 (the GRPO runs), not in the main results (PPO, Table 2)."
)
_ZEROSEARCH = (
    'ZeroSearch, arXiv 2505.04588v3, Table 3 (EM), with Section 4.3: "all methods '
    'use SerpAPI as the search engine" during evaluation (Google Web Search), "the '
    'number of retrieved documents is fixed at five"; Section 4.1: Exact Match'
)
_ZEROSEARCH_SETTINGS: dict = {
    "corpus": "Google Web Search",
    "retriever": "Google (SerpAPI)",
    "top_k": 5,
    "metric": "EM",
}
_STEPSEARCH = (
    "StepSearch, arXiv 2505.15107, Table 1 (EM / F1; the four columns marked as "
    'tested on wiki-18), with Section 3.3: E5 as the retriever in training; "for '
    "evaluation, we augment the corpus with the 2018 Wikipedia dump [...] and "
    'uniformly retrieve k=3 documents"; Section 3.1: word-level F1 and Exact Match'
)
_STEPSEARCH_SETTINGS: dict = {
    "corpus": "training corpus + Wikipedia 2018",
    "retriever": "E5",
    "top_k": 3,
    "metric": "EM / F1",
}

PUBLISHED: tuple[PublishedRow, ...] = (
    PublishedRow(
        system="Search-R1-instruct",
        model="Qwen2.5-3B-Instruct",
        size="3b",
        source=_SEARCH_R1,
        corpus="Wikipedia 2018",
        retriever="E5",
        top_k=3,
        note=_SEARCH_R1_NOTE,
    ),
    PublishedRow(
        system="ZeroSearch-base",
        model="Qwen2.5-3B-Base",
        size="3b",
        source=_ZEROSEARCH,
        **_ZEROSEARCH_SETTINGS,
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
        source=_ZEROSEARCH,
        **_ZEROSEARCH_SETTINGS,
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
        source=_STEPSEARCH,
        **_STEPSEARCH_SETTINGS,
        em={"hotpotqa": 32.9, "2wikimultihopqa": 33.9, "musique": 18.1, "bamboogle": 32.8},
        f1={"hotpotqa": 43.4, "2wikimultihopqa": 39.5, "musique": 27.3, "bamboogle": 41.9},
    ),
    PublishedRow(
        system="StepSearch-instruct",
        model="Qwen2.5-3B-Instruct",
        size="3b",
        source=_STEPSEARCH,
        **_STEPSEARCH_SETTINGS,
        em={"hotpotqa": 34.5, "2wikimultihopqa": 32.0, "musique": 17.4, "bamboogle": 34.4},
        f1={"hotpotqa": 45.2, "2wikimultihopqa": 38.5, "musique": 26.1, "bamboogle": 45.2},
    ),
    PublishedRow(
        system="ZeroSearch-base",
        model="Qwen2.5-7B-Base",
        size="7b",
        source=_ZEROSEARCH,
        **_ZEROSEARCH_SETTINGS,
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
        source=_ZEROSEARCH,
        **_ZEROSEARCH_SETTINGS,
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
        source=_STEPSEARCH,
        **_STEPSEARCH_SETTINGS,
        em={"hotpotqa": 38.0, "2wikimultihopqa": 38.5, "musique": 21.6, "bamboogle": 46.7},
        f1={"hotpotqa": 49.3, "2wikimultihopqa": 45.0, "musique": 32.4, "bamboogle": 57.3},
    ),
    PublishedRow(
        system="StepSearch-instruct",
        model="Qwen2.5-7B-Instruct",
        size="7b",
        source=_STEPSEARCH,
        **_STEPSEARCH_SETTINGS,
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
