"""MuSiQue (Trivedi et al., 2022): the original jsonl release, one question per line::

    {"id": "2hop__460946_294723", "question": "Who is the spouse of the Green performer?",
     "answer": "Miquette Giraudy", "answer_aliases": ["M. Giraudy"], "answerable": true,
     "paragraphs": [{"idx": 0, "title": "...", "paragraph_text": "...",
                     "is_supporting": false}, ...],
     "question_decomposition": [
        {"id": 460946, "question": "Green >> performer", "answer": "Steve Hillage",
         "paragraph_support_idx": 10},
        {"id": 294723, "question": "#1 >> spouse", "answer": "Miquette Giraudy",
         "paragraph_support_idx": 5}]}

Golden answers are ``answer`` then ``answer_aliases``. The decomposition becomes the
``decomposition`` metadata the scripted oracle follows: ``#k`` placeholders stay as they
are (the oracle fills in hop ``k``'s answer), and MuSiQue's relation shorthand
``"X >> relation"`` becomes the keyword query ``"X relation"``. Each
step's ``doc_id`` is the corpus id of the paragraph ``paragraph_support_idx`` names.
The hop count is the number of steps; ``type`` is the reasoning-graph shape from the id
prefix (``2hop``, ``3hop1``, ``4hop3``...). MuSiQue-Full's unanswerable questions read too,
with ``answerable: false`` in their metadata.
"""

from __future__ import annotations

import re
from typing import Any

from research_env.data.formats._base import (
    FieldError,
    ParsedRecord,
    answer_list,
    id_field,
    record_rows,
    require,
    require_dict,
    text_field,
)
from research_env.data.paragraphs import paragraph_document
from research_env.data.types import Document, QASample

PARAGRAPH_KEYS = ("idx", "title", "paragraph_text", "is_supporting")
STEP_KEYS = ("id", "question", "answer", "paragraph_support_idx")
_SHAPE_RE = re.compile(r"^(\d+hop\d*)__")


def spell_relation(question: str) -> str:
    """``"#1 >> spouse"`` -> ``"#1 spouse"``: the shorthand as a keyword query.

    A plain space rather than a rephrasing ("spouse of #1"), because relation names
    such as ``educated at`` or ``located in the administrative territorial entity`` do
    not take "of" gracefully. Natural sub-questions are left as they are.
    """
    return " ".join(part.strip() for part in question.split(">>") if part.strip())


def _paragraphs(obj: dict[str, Any]) -> tuple[dict[int, Document], list[Document], list[str]]:
    by_idx: dict[int, Document] = {}
    ordered: list[Document] = []
    supporting: list[str] = []
    for i, para in enumerate(record_rows(require(obj, "paragraphs"), "paragraphs", PARAGRAPH_KEYS)):
        name = f"paragraphs[{i}]"
        idx = para.get("idx", i)
        if not isinstance(idx, int) or isinstance(idx, bool):
            raise FieldError(f"{name}.idx", f"expected an integer, got {idx!r}")
        try:
            title = text_field(para, "title")
            text = text_field(para, "paragraph_text")
        except FieldError as err:
            raise FieldError(f"{name}.{err.field}", err.reason) from None
        doc = paragraph_document(title, text)
        by_idx[idx] = doc
        ordered.append(doc)
        if para.get("is_supporting"):
            supporting.append(doc.id)
    return by_idx, ordered, supporting


def _decomposition(obj: dict[str, Any], by_idx: dict[int, Document]) -> list[dict[str, Any]]:
    value = obj.get("question_decomposition")
    if value is None:
        return []
    steps: list[dict[str, Any]] = []
    for i, step in enumerate(record_rows(value, "question_decomposition", STEP_KEYS)):
        name = f"question_decomposition[{i}]"
        try:
            sub_question = text_field(step, "question")
            answer = text_field(step, "answer")
        except FieldError as err:
            raise FieldError(f"{name}.{err.field}", err.reason) from None
        out: dict[str, Any] = {"question": spell_relation(sub_question), "answer": answer}
        support = step.get("paragraph_support_idx")
        if support is not None:
            if support not in by_idx:
                raise FieldError(
                    f"{name}.paragraph_support_idx", f"{support!r} is no paragraph's idx"
                )
            out["doc_id"] = by_idx[support].id
        steps.append(out)
    return steps


def parse(obj: Any, position: int = 0) -> ParsedRecord:
    """One record of the file (``position``: its 0-based index, unused here)."""
    obj = require_dict(obj)
    sample_id = id_field(obj, "id")
    question = text_field(obj, "question")
    answer = text_field(obj, "answer")
    aliases = obj.get("answer_aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise FieldError("answer_aliases", f"expected a list of strings, got {aliases!r:.80}")
    answerable = obj.get("answerable", True)
    if not isinstance(answerable, bool):
        raise FieldError("answerable", f"expected true or false, got {answerable!r}")
    by_idx, paragraphs, supporting = _paragraphs(obj)
    steps = _decomposition(obj, by_idx)
    # Supporting documents in reasoning order: the steps' paragraphs, then any others.
    ordered = [s["doc_id"] for s in steps if "doc_id" in s] + supporting
    shape = _SHAPE_RE.match(sample_id)
    metadata: dict[str, Any] = {
        "dataset": "musique",
        "type": shape.group(1) if shape else "multihop",
        "answerable": answerable,
        "supporting_doc_ids": list(dict.fromkeys(ordered)),
    }
    hops = len(steps) if steps else _hops_from_shape(shape)
    if hops is not None:
        metadata["hops"] = hops
    if steps:
        metadata["decomposition"] = steps
    sample = QASample(sample_id, question, answer_list(answer, *aliases), metadata)
    return ParsedRecord(sample, tuple(paragraphs))


def _hops_from_shape(shape: re.Match[str] | None) -> int | None:
    return int(shape.group(1)[0]) if shape else None
