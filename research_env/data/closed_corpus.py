"""Closed corpora: the paragraphs a dataset ships, deduplicated into a FlashRAG corpus.

HotpotQA (distractor), MuSiQue and 2WikiMultiHopQA give every question its own handful
of Wikipedia paragraphs, gold and distractors. Pooling them over a split gives a corpus
of a few hundred thousand passages at most: enough to train and evaluate with a local
BM25 index instead of the 21M-passage Wikipedia dump, with the gold paragraphs known.

Why content-hash ids: the same paragraph appears under many questions (and in train and
dev), so its id must depend on nothing but its title and text. Then a sample read
straight from the original file, the same sample read next month, and a corpus merged
from several splits all agree on which document is which, and supporting-document
recall can be computed on real data without a lookup table.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from research_env.data.jsonl import OnError, read_corpus_jsonl, write_corpus_jsonl, write_qa_jsonl
from research_env.data.paragraphs import (
    join_sentences,
    normalize_whitespace,
    paragraph_document,
    paragraph_id,
)
from research_env.data.types import Document, QASample

if TYPE_CHECKING:
    from research_env.data.formats import ParsedRecord

__all__ = [
    "ClosedCorpus",
    "ConversionReport",
    "cached_closed_corpus",
    "convert",
    "join_sentences",
    "paragraph_document",
    "paragraph_id",
]

PathArg = str | os.PathLike[str]


class ClosedCorpus:
    """Documents added in first-seen order, each id once.

    ``paragraphs_seen`` counts every paragraph added, so ``paragraphs_seen - len(self)``
    is how many duplicates were folded.
    """

    def __init__(self, documents: Iterable[Document] = ()) -> None:
        self._docs: dict[str, Document] = {}
        self.paragraphs_seen = 0
        self.add(documents)

    def add(self, documents: Iterable[Document]) -> None:
        for doc in documents:
            self.paragraphs_seen += 1
            known = self._docs.get(doc.id)
            if known is None:
                self._docs[doc.id] = doc
            elif normalize_whitespace(known.contents) != normalize_whitespace(doc.contents):
                raise ValueError(
                    f"document id {doc.id!r} already holds different contents: "
                    f"{known.contents[:60]!r} vs {doc.contents[:60]!r}"
                )

    def __len__(self) -> int:
        return len(self._docs)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._docs

    @property
    def documents(self) -> list[Document]:
        return list(self._docs.values())

    @classmethod
    def from_records(cls, records: Iterable[ParsedRecord]) -> ClosedCorpus:
        corpus = cls()
        for record in records:
            corpus.add(record.paragraphs)
        return corpus


# --------------------------------------------------------------------------- convert


@dataclass
class ConversionReport:
    """What :func:`convert` wrote, for the CLI to print and for tests to check."""

    split: str
    format: str
    split_path: Path
    samples: int
    skipped: int
    corpus_path: Path | None = None
    corpus_documents: int = 0
    corpus_new_documents: int = 0
    paragraphs_seen: int = 0
    missing_supporting: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.format} -> {self.split_path}: {self.samples} questions"]
        if self.skipped:
            lines[0] += f", {self.skipped} malformed record(s) skipped"
        if self.corpus_path is not None:
            lines.append(
                f"closed corpus -> {self.corpus_path}: {self.corpus_documents} documents "
                f"({self.corpus_new_documents} new; {self.paragraphs_seen} paragraphs read)"
            )
        if self.missing_supporting:
            lines.append(
                f"{self.missing_supporting} question(s) name supporting titles that are not "
                "among their paragraphs (fullwiki-style files): recall counts only those found"
            )
        return "\n".join(lines)


def convert(
    source: PathArg,
    out_dir: PathArg,
    split: str | None = None,
    format: str = "auto",
    on_error: OnError = "raise",
    config: str | None = None,
) -> ConversionReport:
    """Write ``source`` as ``<out_dir>/<split>.jsonl`` (FlashRAG QA shape) and, when it
    ships paragraphs, merge them into ``<out_dir>/corpus.jsonl``.

    ``source`` is anything :func:`research_env.data.formats.read_records` reads (a file
    in any supported format, a saved Hugging Face dataset directory, or ``hf:NAME``).
    ``split`` defaults to the one named in the file name (``hotpot_dev_distractor_v1``
    -> ``dev``). An existing ``corpus.jsonl`` is merged, not replaced, so converting
    train and then dev into one directory keeps the ids of both valid.
    """
    from research_env.data import formats

    read = formats.read_records(
        source, format=format, on_error=on_error, split=split, config=config
    )
    split = split or read.split or formats.split_from_name(str(source))
    if split is None:
        raise ValueError(
            f"cannot tell the split of {str(source)!r} from its name; pass split= (--split)"
        )
    out = Path(out_dir)
    split_path = out / f"{split}.jsonl"
    samples: list[QASample] = [r.sample for r in read.records]
    report = ConversionReport(
        split=split,
        format=read.format,
        split_path=split_path,
        samples=len(samples),
        skipped=read.records.skipped,
        errors=[str(e) for e in read.records.errors],
        missing_supporting=sum(1 for s in samples if s.metadata.get("missing_supporting_titles")),
    )
    if any(r.paragraphs for r in read.records):
        corpus_path = out / "corpus.jsonl"
        corpus = ClosedCorpus(read.paragraphs())
        report.paragraphs_seen = corpus.paragraphs_seen
        if corpus_path.exists():  # merge: earlier splits' ids must stay valid
            merged = ClosedCorpus(read_corpus_jsonl(corpus_path))
            before = len(merged)
            merged.add(corpus.documents)
            corpus, report.corpus_new_documents = merged, len(merged) - before
        else:
            report.corpus_new_documents = len(corpus)
        write_corpus_jsonl(corpus.documents, corpus_path)
        report.corpus_path = corpus_path
        report.corpus_documents = len(corpus)
    write_qa_jsonl(samples, split_path)
    return report


def cached_closed_corpus(source: PathArg, cache_root: Path, format: str = "auto") -> Path | None:
    """The closed corpus of a release file (or of every release file in a directory, or
    of every split of a saved Hugging Face dataset), built once into
    ``cache_root/closed_corpus/`` and reused while the files are unchanged.

    Returns ``None`` when the source ships no paragraphs (Bamboogle, FlashRAG QA files).
    Lets ``gym.make(dataset="hotpot_dev_distractor_v1.json")`` find a corpus with no
    conversion step; ``research-env data convert`` does the same thing explicitly.
    """
    from research_env.data import formats, hub

    path = Path(source).resolve()
    if path.is_dir() and hub.is_local_dataset_dir(path):
        # A saved Hugging Face dataset: pool the paragraphs of all its splits.
        watched = sorted(p for p in path.rglob("*") if p.is_file())
        reads = [
            lambda s=s: formats.read_records(path, format, split=s) for s in hub.local_splits(path)
        ]
    else:
        candidates = formats.raw_files(path) if path.is_dir() else [path]
        # Only files of a format that ships paragraphs; detection reads one record each.
        watched = [f for f in candidates if _ships_paragraphs(f, format)]
        reads = [lambda f=f: formats.read_records(f, format) for f in watched]
    if not watched:
        return None
    identity = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in watched]
    digest = hashlib.sha256(repr((identity, format)).encode()).hexdigest()[:16]
    target = cache_root / "closed_corpus" / f"{path.stem}-{digest}" / "corpus.jsonl"
    empty = target.with_name("NO_PARAGRAPHS")
    if target.exists():
        return target
    if empty.exists():
        return None
    corpus = ClosedCorpus()
    for read in reads:
        corpus.add(read().paragraphs())
    if not len(corpus):
        empty.parent.mkdir(parents=True, exist_ok=True)
        empty.touch()  # remember: the next env for this dataset needs not read it again
        return None
    write_corpus_jsonl(corpus.documents, target)  # atomic: temp file + rename
    return target


def _ships_paragraphs(file: Path, format: str) -> bool:
    from research_env.data import formats

    try:
        name = formats.detect_format(file) if format == "auto" else format
    except ValueError:
        return False  # not a dataset file (a README.json, a config): nothing to pool
    return formats.resolve_format(name).ships_paragraphs
