"""HotpotQA (Yang et al., 2018): the original json release and the hub's copy.

A file is one JSON list of questions::

    {"_id": "5a8b57f25542995d1e6f1371", "question": "...", "answer": "yes",
     "type": "comparison", "level": "hard",
     "supporting_facts": [["Scott Derrickson", 0], ["Ed Wood", 0]],
     "context": [["Scott Derrickson", ["Scott Derrickson (born July 16, 1966) is...", ...]],
                 ["Ed Wood", [...]], ...]}

The distractor setting gives each question its 2 gold paragraphs and 8 distractors; the
fullwiki setting gives 10 retrieved paragraphs, which may miss a gold one (the titles
not found are kept in ``missing_supporting_titles``). Test files have no answers and
cannot be scored. The Hugging Face copy (``hotpotqa/hotpot_qa``) names the id ``id`` and
stores ``context`` / ``supporting_facts`` column-wise; both read the same.

Every HotpotQA question is a 2-hop question (bridge or comparison of two paragraphs).
2WikiMultiHopQA follows this layout, so its reader reuses :func:`parse_wiki_context`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from research_env.data.formats._base import (
    FieldError,
    ParsedRecord,
    answer_list,
    id_field,
    require,
    require_dict,
    rows,
    text_field,
)
from research_env.data.paragraphs import join_sentences, paragraph_document
from research_env.data.types import Document, QASample

HOTPOTQA_TYPES = ("bridge", "comparison")


@dataclass(frozen=True)
class WikiContext:
    """The paragraphs of one question and which of them support it."""

    paragraphs: tuple[Document, ...]
    supporting_doc_ids: list[str]
    supporting_facts: list[list[Any]]
    missing_titles: list[str]
    by_title: dict[str, Document]


def _context_paragraphs(obj: dict[str, Any]) -> list[tuple[str, Document]]:
    out: list[tuple[str, Document]] = []
    for i, entry in enumerate(rows(require(obj, "context"), "context", ("title", "sentences"))):
        name = f"context[{i}]"
        if not isinstance(entry, list) or len(entry) != 2:
            raise FieldError(name, f"expected [title, [sentences...]], got {entry!r:.80}")
        title, sentences = entry
        if not isinstance(title, str) or not title.strip():
            raise FieldError(f"{name}[0]", f"title must be a non-empty string, got {title!r}")
        if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
            raise FieldError(f"{name}[1]", "sentences must be a list of strings")
        out.append((title, paragraph_document(title, join_sentences(sentences))))
    return out


def _supporting_facts(obj: dict[str, Any]) -> list[list[Any]]:
    value = obj.get("supporting_facts")
    if value is None:
        return []
    facts: list[list[Any]] = []
    for i, fact in enumerate(rows(value, "supporting_facts", ("title", "sent_id"))):
        if (
            not isinstance(fact, list)
            or len(fact) != 2
            or not isinstance(fact[0], str)
            or not isinstance(fact[1], int)
            or isinstance(fact[1], bool)
        ):
            raise FieldError(
                f"supporting_facts[{i}]", f"expected [title, sentence_index], got {fact!r:.80}"
            )
        facts.append([fact[0], fact[1]])
    return facts


def parse_wiki_context(obj: dict[str, Any]) -> WikiContext:
    """Paragraphs from ``context``; supporting documents from ``supporting_facts`` titles,
    in the order the facts name them."""
    paragraphs = _context_paragraphs(obj)
    by_title: dict[str, Document] = {}
    for title, doc in paragraphs:
        by_title.setdefault(title, doc)
    facts = _supporting_facts(obj)
    supporting: dict[str, None] = {}
    missing: dict[str, None] = {}
    for title, _ in facts:
        found = by_title.get(title)
        if found is None:
            missing.setdefault(title, None)
        else:
            supporting.setdefault(found.id, None)
    return WikiContext(
        paragraphs=tuple(doc for _, doc in paragraphs),
        supporting_doc_ids=list(supporting),
        supporting_facts=facts,
        missing_titles=list(missing),
        by_title=by_title,
    )


def answer_field(obj: dict[str, Any], dataset: str) -> str:
    if obj.get("answer") is None:
        raise FieldError(
            "answer",
            f"missing ({dataset} test files ship no answers; convert the train or dev "
            "file to train or evaluate)",
        )
    return text_field(obj, "answer")


def parse(obj: Any, position: int = 0) -> ParsedRecord:
    """One record of the file (``position``: its 0-based index, unused here)."""
    obj = require_dict(obj)
    sample_id = id_field(obj, "_id", "id")
    question = text_field(obj, "question")
    answer = answer_field(obj, "HotpotQA")
    context = parse_wiki_context(obj)
    metadata: dict[str, Any] = {"dataset": "hotpotqa", "hops": 2}
    for key in ("type", "level"):
        if obj.get(key) is not None:
            metadata[key] = text_field(obj, key)
    metadata["supporting_doc_ids"] = context.supporting_doc_ids
    metadata["supporting_facts"] = context.supporting_facts
    if context.missing_titles:
        metadata["missing_supporting_titles"] = context.missing_titles
    sample = QASample(sample_id, question, answer_list(answer), metadata)
    return ParsedRecord(sample, context.paragraphs)
