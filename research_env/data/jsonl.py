"""Read and write FlashRAG-style jsonl: QA samples and corpora, one JSON object per line.

QA lines hold ``id``, ``question``, ``golden_answers`` (a list of strings; a bare string
is accepted as a one-answer list) and an optional ``metadata`` object. Corpus lines hold
``id`` and ``contents`` (``'"Title"\\ntext'``), or ``title`` + ``text``, from which the
contents are built. Files ending in ``.gz`` are read and written gzip-compressed.

A bad line is never dropped silently. By default it raises :class:`DataFormatError`,
whose message names the file, the 1-based line number and what was wrong. With
``on_error="skip"`` the reader keeps going, and the returned :class:`Records` list
carries the count of skipped lines and their errors; a warning states the count.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from research_env.data.errors import DataFormatError
from research_env.data.records import OnError, RecordCollector, Records
from research_env.data.textfile import decode_json, is_gzip, numbered_lines, open_text
from research_env.data.types import Document, QASample
from research_env.storage import atomic_file

T = TypeVar("T")
PathLike = str | os.PathLike[str]

__all__ = [
    "DataFormatError",
    "OnError",
    "Records",
    "document_from_json",
    "document_to_json",
    "iter_jsonl",
    "qa_sample_from_json",
    "read_corpus_jsonl",
    "read_qa_jsonl",
    "write_corpus_jsonl",
    "write_qa_jsonl",
]


# --------------------------------------------------------------------------- parsing


def _id_field(obj: dict[str, Any]) -> str:
    # Some public dumps use integer ids; they are still ids, so accept them as text.
    value = obj.get("id")
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if value is None:
        raise ValueError("missing field 'id'")
    raise ValueError(f"field 'id' must be a non-empty string, got {value!r}")


def _answer_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    # Numeric answers (years, counts) appear as JSON numbers in some datasets.
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(
            f"'golden_answers' holds {value!r} (NaN or Infinity in the file): an answer "
            "must be text or a finite number"
        )
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"'golden_answers' items must be strings, got {value!r}")


def qa_sample_from_json(obj: Any) -> QASample:
    """Build a :class:`QASample` from one decoded JSON object; ``ValueError`` says why not.

    Unknown top-level keys are kept in ``metadata`` (unless metadata already has that
    key) so that no information in the file is lost.
    """
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    sample_id = _id_field(obj)
    question = obj.get("question")
    if question is None:
        raise ValueError("missing field 'question'")
    if not isinstance(question, str):
        raise ValueError(f"'question' must be a string, got {type(question).__name__}")
    if not question.strip():
        raise ValueError("'question' is empty")
    answers = obj.get("golden_answers")
    if answers is None:
        raise ValueError("missing field 'golden_answers'")
    if isinstance(answers, (str, int, float)) and not isinstance(answers, bool):
        answers = [answers]
    if not isinstance(answers, list):
        raise ValueError(f"'golden_answers' must be a list of strings, got {answers!r}")
    if not answers:
        raise ValueError("'golden_answers' is empty (a sample needs an answer to be scored)")
    golden = tuple(_answer_text(a) for a in answers)
    metadata = obj.get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        raise ValueError(f"'metadata' must be an object, got {type(metadata).__name__}")
    else:
        metadata = dict(metadata)
    for key, value in obj.items():
        if key not in ("id", "question", "golden_answers", "metadata"):
            metadata.setdefault(key, value)
    return QASample(id=sample_id, question=question, golden_answers=golden, metadata=metadata)


def document_from_json(obj: Any) -> Document:
    """Build a :class:`Document` from ``id`` + ``contents``, ``id`` + ``title`` + ``text``,
    or ``id`` + ``text`` alone (an untitled passage: the contents are the text)."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    doc_id = _id_field(obj)
    contents = obj.get("contents")
    if contents is not None:
        if not isinstance(contents, str):
            raise ValueError(f"'contents' must be a string, got {type(contents).__name__}")
        return Document(id=doc_id, contents=contents)
    title, text = obj.get("title"), obj.get("text")
    if title is None and text is None:
        raise ValueError("missing field 'contents' (or 'title' and 'text')")
    if title is None and isinstance(text, str):
        return Document(id=doc_id, contents=text)  # untitled passages (some DPR-style dumps)
    if not isinstance(title, str) or not isinstance(text, str):
        raise ValueError("'title' and 'text' must both be strings when 'contents' is absent")
    return Document(id=doc_id, contents=f'"{title}"\n{text}')


def document_to_json(doc: Document) -> dict[str, str]:
    return {"id": doc.id, "contents": doc.contents}


# --------------------------------------------------------------------------- reading


def _read_records(
    path: PathLike, build: Callable[[Any], T], key: Callable[[T], str], on_error: OnError
) -> Records[T]:
    path = Path(path)
    collector: RecordCollector[T] = RecordCollector(key, on_error)
    for line_no, line in numbered_lines(path):
        if line.strip():  # blank lines (e.g. a trailing newline) carry no record
            # add() calls both at once, so the loop variables are the current line's.
            collector.add(
                lambda: build(decode_json(line)),  # noqa: B023
                lambda err: DataFormatError(path, line_no, str(err)),  # noqa: B023
            )
    return collector.finish(str(path), unit="line")


def read_qa_jsonl(path: PathLike, on_error: OnError = "raise") -> Records[QASample]:
    """All QA samples of a jsonl file, in file order.

    ``on_error="raise"`` stops at the first bad line with :class:`DataFormatError`;
    ``"skip"`` leaves bad lines out and reports them in ``.skipped`` / ``.errors``.
    """
    return _read_records(path, qa_sample_from_json, lambda s: s.id, on_error)


def read_corpus_jsonl(path: PathLike, on_error: OnError = "raise") -> Records[Document]:
    """All documents of a corpus jsonl file, in file order (same error rules as QA)."""
    return _read_records(path, document_from_json, lambda d: d.id, on_error)


# --------------------------------------------------------------------------- writing


def _write_lines(path: PathLike, objects: Iterable[dict[str, Any]]) -> int:
    """Write one JSON object per line, atomically (see :func:`research_env.storage.atomic_file`):
    readers never see a half-written file, even if the writer dies mid-way."""
    path = Path(path)
    count = 0
    # The staging name ends in .tmp: compress by the final name's suffix.
    with atomic_file(path) as staging, open_text(staging, "w", compressed=is_gzip(path)) as out:
        for obj in objects:
            out.write(json.dumps(obj, ensure_ascii=False))
            out.write("\n")
            count += 1
    return count


def write_qa_jsonl(samples: Iterable[QASample], path: PathLike) -> int:
    """Write QA samples atomically; returns the number written."""
    return _write_lines(path, (s.to_json() for s in samples))


def write_corpus_jsonl(documents: Iterable[Document], path: PathLike) -> int:
    """Write corpus documents atomically; returns the number written."""
    return _write_lines(path, (document_to_json(d) for d in documents))


def iter_jsonl(path: PathLike) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, decoded_object)`` for each non-blank line; for peeking at
    files of unknown kind (e.g. ``research-env data show``)."""
    path = Path(path)
    for line_no, line in numbered_lines(path):
        if line.strip():
            try:
                yield line_no, decode_json(line)
            except ValueError as err:
                raise DataFormatError(path, line_no, str(err)) from None
