"""Paragraphs as corpus documents: the stable id of a (title, text) paragraph, its
FlashRAG-shaped document, and a paragraph from its sentences. The readers of releases
that ship paragraphs (``formats/hotpotqa.py``, ``formats/musique.py``) and the closed
corpus built from them (``closed_corpus.py``) share these, so both name a paragraph the
same way; nothing here imports either."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from research_env.data.types import Document

ID_PREFIX = "p"  # keeps ids from looking like numbers to tools that guess column types


def normalize_whitespace(text: str) -> str:
    """``text`` with every run of whitespace one space, and none at the ends."""
    return " ".join(text.split())


def paragraph_id(title: str, text: str) -> str:
    """A stable id for a paragraph: a 64-bit hash of its title and text.

    Whitespace is normalized first, so copies that differ only in spacing (HotpotQA's
    sentences carry their leading spaces, 2Wiki's do not) are one document.
    """
    return _hashed_id(normalize_whitespace(title), normalize_whitespace(text))


def _hashed_id(title: str, text: str) -> str:
    key = f"{title}\n{text}".encode()
    return ID_PREFIX + hashlib.blake2b(key, digest_size=8).hexdigest()


def paragraph_document(title: str, text: str) -> Document:
    """The corpus document of a paragraph, FlashRAG shape: ``'"Title"\\ntext'``, with
    runs of whitespace in the text collapsed to one space."""
    title, text = normalize_whitespace(title), normalize_whitespace(text)
    return Document(id=_hashed_id(title, text), contents=f'"{title}"\n{text}')


def join_sentences(sentences: Iterable[str]) -> str:
    """A paragraph from its sentences, one space between two sentences.

    HotpotQA's sentences keep their leading space (joining with ``""`` restores the
    paragraph); 2WikiMultiHopQA's do not. Stripping and joining with a space handles both.
    """
    return " ".join(stripped for s in sentences if (stripped := s.strip()))
