"""Bamboogle (Press et al., 2023): 125 two-hop questions Google's search box got wrong.

Two shapes are read:

- Rows with the columns ``Question`` and ``Answer`` (the Hugging Face copy
  ``chiayewken/bamboogle`` keeps those names): a CSV or TSV export with a header row, a
  JSON list or jsonl of such rows, or hub rows; lower-case ``question`` / ``answer``
  also work.
- The sheet as published: a CSV with no header row and seven columns per row (question,
  three empty, answer, an optional second answer, one empty), CRLF line endings. Such
  rows reach :func:`parse` as lists of cells (see :mod:`._files`); a two-cell row is
  read as question and answer.

Records have no id: a row's id is ``bamboogle-<position>`` unless it has an ``id``
column. It ships no paragraphs (questions are meant for web or Wikipedia search).
"""

from __future__ import annotations

from typing import Any

from research_env.data.formats._base import (
    FieldError,
    ParsedRecord,
    answer_list,
    id_field,
    require_dict,
    text_field,
)
from research_env.data.types import QASample


def _column(obj: dict[str, Any], name: str) -> str:
    """The field ``Name`` or ``name``; the error names the spelling of the release."""
    for key in (name.capitalize(), name, name.upper()):
        if key in obj and obj[key] is not None:
            return text_field(obj, key)
    raise FieldError(name.capitalize(), "missing")


_METADATA = {"dataset": "bamboogle", "hops": 2, "type": "compositional"}

# The published sheet's layout: which cells hold the question and the answers.
RELEASE_QUESTION_CELL = 0
RELEASE_ANSWER_CELLS = (4, 5)


def _release_row(cells: list[Any], position: int) -> ParsedRecord:
    """A headerless row: the published seven-cell layout, or question and answer."""
    texts = [str(c).strip() if c is not None else "" for c in cells]
    if len(texts) == 2:
        question, answers = texts[0], texts[1:]
    elif len(texts) > RELEASE_ANSWER_CELLS[0]:
        question = texts[RELEASE_QUESTION_CELL]
        answers = [texts[i] for i in RELEASE_ANSWER_CELLS if i < len(texts)]
    else:
        raise ValueError(
            f"a row without a header has {len(texts)} cells; expected the published layout "
            "(question, three empty, answer, optional second answer, empty) or question, "
            "answer; or add a header row naming the Question and Answer columns"
        )
    if not question:
        raise FieldError("Question", "is empty (cell 1)")
    golden = answer_list(*answers)
    if not golden:
        raise FieldError("Answer", f"is empty (cell {RELEASE_ANSWER_CELLS[0] + 1})")
    return ParsedRecord(QASample(f"bamboogle-{position}", question, golden, dict(_METADATA)))


def parse(obj: Any, position: int = 0) -> ParsedRecord:
    """One row; ``position`` (0-based) names it when it has no ``id`` column."""
    if isinstance(obj, list):
        return _release_row(obj, position)
    obj = require_dict(obj)
    has_id = any(obj.get(k) not in (None, "") for k in ("id", "ID", "Id"))
    sample_id = id_field(obj, "id", "ID", "Id") if has_id else f"bamboogle-{position}"
    question = _column(obj, "question")
    answer = _column(obj, "answer")
    return ParsedRecord(QASample(sample_id, question.strip(), answer_list(answer), dict(_METADATA)))
