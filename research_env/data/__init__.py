"""QA samples and corpora: load a split or a corpus by dataset name, file or directory.

- ``load_split("synthetic", "train")``: the embedded synthetic world (generated into a
  cache directory on first use, see :func:`default_world_dir`).
- ``load_split("path/to/test.jsonl")``: any FlashRAG-style jsonl file.
- ``load_split("path/to/dir", "dev")``: ``<dir>/dev.jsonl``, or the original release
  file in ``dir`` whose name has the split (``hotpot_dev_distractor_v1.json``), or the
  split of a dataset saved by Hugging Face ``datasets``.
- ``load_split("hotpot_dev_distractor_v1.json")``: an original HotpotQA, MuSiQue,
  2WikiMultiHopQA or Bamboogle file, the format detected (or ``format=`` to choose),
  see :mod:`research_env.data.formats`.
- ``load_split("hf:hotpotqa/hotpot_qa:distractor", "validation")``: from the hub, see
  :mod:`research_env.data.hub`.

Named datasets live in :data:`DATASETS`; readers for public datasets register there with
:func:`register_dataset`, and every loader here picks them up by name.

A dataset file that ships its paragraphs (HotpotQA, MuSiQue, 2Wiki) comes with a
*closed corpus*: :func:`corpus_path` builds it once into the cache, so
``gym.make("ReSearch-MultiHop-v0", dataset="hotpot_dev_distractor_v1.json", split="dev")``
trains with BM25 over those paragraphs; ``research-env data convert`` writes the same
corpus beside FlashRAG-shaped splits (see :mod:`research_env.data.closed_corpus`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from research_env.data.jsonl import (
    DataFormatError,
    OnError,
    Records,
    read_corpus_jsonl,
    read_qa_jsonl,
    write_corpus_jsonl,
    write_qa_jsonl,
)
from research_env.data.types import Document, QASample
from research_env.storage import atomic_directory, cache_root

__all__ = [
    "DATASETS",
    "DataFormatError",
    "Document",
    "NamedDataset",
    "QASample",
    "Records",
    "cache_root",
    "corpus_path",
    "default_world_dir",
    "load_corpus",
    "load_split",
    "read_corpus_jsonl",
    "read_qa_jsonl",
    "register_dataset",
    "write_corpus_jsonl",
    "write_qa_jsonl",
]

PathArg = str | os.PathLike[str]


def default_world_dir(cache_dir: PathArg | None = None) -> Path:
    """The directory of the default synthetic world, generating it on first use.

    The directory name carries a hash of the generator version and config, so a new
    generator never serves a stale world. The world is written to a temporary directory
    and renamed into place: a reader never sees a half-written world, and when two
    processes race, one rename wins and the other process uses the winner's (identical)
    files.
    """
    from research_env.data import synthetic

    config = synthetic.SyntheticConfig()
    identity = {"version": synthetic.GENERATOR_VERSION, "config": config.to_json()}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    final = cache_root(cache_dir) / "synthetic" / f"world-v{synthetic.GENERATOR_VERSION}-{digest}"
    if (final / "world.json").exists():
        return final
    with atomic_directory(final, if_exists="keep") as staging:
        synthetic.write_world(synthetic.generate(config), staging)
    return final


@dataclass(frozen=True)
class NamedDataset:
    """A dataset reachable by name: how to load a split, and its corpus file if any."""

    description: str
    splits: tuple[str, ...]
    load_split: Callable[[str, Path | None], list[QASample]]
    corpus_path: Callable[[Path | None], Path] | None = None


def _synthetic_split(split: str, cache_dir: Path | None) -> list[QASample]:
    return read_qa_jsonl(default_world_dir(cache_dir) / f"{split}.jsonl")


DATASETS: dict[str, NamedDataset] = {
    "synthetic": NamedDataset(
        description="embedded procedurally generated multi-hop QA world (1-4 hops)",
        splits=("train", "dev", "test"),
        load_split=_synthetic_split,
        corpus_path=lambda cache_dir: default_world_dir(cache_dir) / "corpus.jsonl",
    ),
}


def register_dataset(name: str, dataset: NamedDataset) -> None:
    """Make ``name`` loadable by :func:`load_split` (and ``gym.make(..., dataset=name)``)."""
    DATASETS[name] = dataset


def _named(name_or_path: PathArg) -> NamedDataset | None:
    return DATASETS.get(name_or_path) if isinstance(name_or_path, str) else None


def _unknown(name_or_path: PathArg) -> ValueError:
    return ValueError(
        f"unknown dataset {str(name_or_path)!r}: not a dataset name ({', '.join(sorted(DATASETS))})"
        " and no such file or directory"
    )


def load_split(
    name_or_path: PathArg,
    split: str = "train",
    cache_dir: PathArg | None = None,
    format: str = "auto",
    on_error: OnError = "raise",
) -> list[QASample]:
    """The QA samples of ``split``: from a named dataset, a file (``split`` is then
    ignored), a directory (``<split>.jsonl``, a release file named for the split, or a
    saved Hugging Face dataset) or ``hf:NAME[:CONFIG]``.

    ``format`` (``"auto"``, ``"hotpotqa"``, ``"musique"``, ``"2wiki"``, ``"bamboogle"``,
    ``"flashrag"``) overrides detection. ``on_error="skip"`` leaves malformed records
    out; the returned :class:`Records` counts them in ``.skipped`` / ``.errors``.
    A source with no questions is an error (``ValueError`` naming it).
    """
    named = _named(name_or_path)
    if named is not None:
        if split not in named.splits:
            raise ValueError(
                f"dataset {name_or_path!r} has no split {split!r}; choose one of {named.splits}"
            )
        samples = named.load_split(split, Path(cache_dir) if cache_dir is not None else None)
        if not samples:
            # Caught here, where the dataset is named: an env over no questions would
            # only fail at reset(), far from the cause.
            raise ValueError(f"dataset {name_or_path!r} split {split!r} has no questions")
        return samples
    from research_env.data import formats

    if not str(name_or_path).startswith(formats.HUB_PREFIX) and not Path(name_or_path).exists():
        raise _unknown(name_or_path)
    # cache_dir is not handed to the hub: its datasets stay in the Hugging Face cache,
    # where a user's earlier downloads already are.
    read = formats.read_records(name_or_path, format=format, on_error=on_error, split=split)
    return read.samples


def corpus_path(dataset: PathArg, cache_dir: PathArg | None = None) -> Path | None:
    """The corpus file that travels with a dataset, or ``None``: a named dataset's own
    corpus, the ``corpus.jsonl`` in a dataset directory / beside a split file, or else the
    closed corpus of the paragraphs an original release file ships (built once into
    ``cache_root(cache_dir)``). ``hf:`` names have none: convert them first."""
    named = _named(dataset)
    if named is not None:
        if named.corpus_path is None:
            return None
        return named.corpus_path(Path(cache_dir) if cache_dir is not None else None)
    from research_env.data import formats

    if str(dataset).startswith(formats.HUB_PREFIX):
        return None
    path = Path(dataset)
    if not path.exists():
        raise _unknown(dataset)
    candidate = (path if path.is_dir() else path.parent) / "corpus.jsonl"
    if candidate.exists():
        return candidate
    from research_env.data.closed_corpus import cached_closed_corpus

    return cached_closed_corpus(path, cache_root(cache_dir))


def load_corpus(name_or_path: PathArg, cache_dir: PathArg | None = None) -> list[Document]:
    """Documents of a named dataset's corpus, of a corpus jsonl file, or of
    ``<dir>/corpus.jsonl``."""
    path = Path(name_or_path)
    if _named(name_or_path) is None and path.is_file():
        return read_corpus_jsonl(path)
    bundled = corpus_path(name_or_path, cache_dir)
    if bundled is None:
        raise ValueError(f"dataset {str(name_or_path)!r} comes without a corpus.jsonl")
    return read_corpus_jsonl(bundled)
