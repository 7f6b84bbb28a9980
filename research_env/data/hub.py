"""Datasets from the Hugging Face hub by name, or from a local copy of one.

``read_records("hf:hotpotqa/hotpot_qa:distractor", split="validation")`` loads through
``datasets.load_dataset`` (the ``hub`` extra: ``pip install 'research-gym[hub]'``) and
parses the rows with the same readers as the original files: the hub's copies keep the
field names of the releases, with lists of records stored column-wise, which the readers
accept.

Without internet (or with ``HF_HUB_OFFLINE=1``) a dataset not already in the local
Hugging Face cache cannot load; :class:`HubUnavailableError` says so and how to use a
local copy instead. Local copies read with no network at all:

- a directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``;
- a directory of parquet files as the hub stores them
  (``data/validation-00000-of-00001.parquet``), the split chosen by file name;
- the original release files (see :mod:`research_env.data.formats`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from research_env.data.split_names import SPLIT_SYNONYMS, split_from_name

__all__ = [
    "HubUnavailableError",
    "hub_rows",
    "is_local_dataset_dir",
    "local_rows",
    "local_splits",
]

PathArg = str | os.PathLike[str]

LOCAL_HELP = (
    "Use a local copy instead: download the original release file (e.g. "
    "hotpot_dev_distractor_v1.json, musique_ans_v1.0_dev.jsonl, 2Wiki's dev.json) or "
    "save the dataset on a machine with internet (datasets.load_dataset(...)"
    ".save_to_disk(DIR)) and pass that path as the dataset, or run "
    "'research-env data convert PATH --out DIR' once and use DIR."
)


class HubUnavailableError(ConnectionError, ValueError):
    """The hub cannot be reached (offline mode or no network) for a dataset not cached.

    A ``ValueError`` too, so the command line reports it as a user error, not a crash.
    """


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise ValueError(
            "loading from the Hugging Face hub needs the 'datasets' package: "
            "pip install 'research-gym[hub]' (or pip install datasets). " + LOCAL_HELP
        ) from None
    return datasets


def _offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE", "") or os.environ.get("HF_DATASETS_OFFLINE", "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def hub_rows(
    name: str, split: str, config: str | None = None, cache_dir: PathArg | None = None
) -> Iterator[dict[str, Any]]:
    """The rows of ``split`` of hub dataset ``name`` (``config`` for multi-config ones,
    such as HotpotQA's ``distractor`` / ``fullwiki``)."""
    datasets = _datasets()
    label = f"hf:{name}" + (f":{config}" if config else "")
    try:
        dataset = datasets.load_dataset(
            name, config, split=split, cache_dir=str(cache_dir) if cache_dir else None
        )
    except ConnectionError as err:
        why = "the hub is offline (HF_HUB_OFFLINE=1)" if _offline() else "the hub is unreachable"
        raise HubUnavailableError(
            f"cannot load {label} split {split!r}: {why} and the dataset is not in the "
            f"local Hugging Face cache ({err}). {LOCAL_HELP}"
        ) from None
    except (FileNotFoundError, ValueError) as err:
        # Unknown names, configs and splits; the message of `datasets` says which.
        raise ValueError(f"cannot load {label} split {split!r}: {err}") from None
    return iter(dataset)


# --------------------------------------------------------------------------- local


def _is_saved(path: Path) -> bool:
    return (path / "dataset_dict.json").exists() or (path / "state.json").exists()


def _parquet_files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*.parquet") if not p.name.startswith("."))


def is_local_dataset_dir(path: PathArg) -> bool:
    """A ``save_to_disk`` directory, or a directory of hub-style parquet files."""
    path = Path(path)
    return path.is_dir() and (_is_saved(path) or bool(_parquet_files(path)))


def _pick_split(available: list[str], split: str | None, where: Path) -> str:
    if split is None:
        if len(available) == 1:
            return available[0]
        raise ValueError(f"{where} holds splits {available}: pass the split to read")
    for candidate in SPLIT_SYNONYMS.get(split, (split,)):
        if candidate in available:
            return candidate
    raise ValueError(f"{where} has no split {split!r}; splits there: {available}")


def local_splits(path: PathArg) -> list[str]:
    """The split names of a local dataset directory (one saved ``Dataset``: its name)."""
    path = Path(path)
    if (path / "dataset_dict.json").exists():
        splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
        return [str(s) for s in splits]
    if _is_saved(path):
        return [path.name]
    return sorted({split_from_name(f.name) or f.stem for f in _parquet_files(path)})


def local_rows(path: PathArg, split: str | None) -> tuple[str, Iterator[dict[str, Any]]]:
    """``(split chosen, rows)`` of a local dataset directory; no network involved."""
    path = Path(path)
    if _is_saved(path):
        datasets = _datasets()
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            chosen = _pick_split(sorted(loaded), split, path)
            return chosen, iter(loaded[chosen])
        return split or path.name, iter(loaded)  # one saved Dataset: it is the split
    return _parquet_rows(path, split)


def _parquet_rows(path: Path, split: str | None) -> tuple[str, Iterator[dict[str, Any]]]:
    by_split: dict[str, list[Path]] = {}
    for file in _parquet_files(path):
        by_split.setdefault(split_from_name(file.name) or file.stem, []).append(file)
    chosen = _pick_split(sorted(by_split), split, path)
    return chosen, _iter_parquet(by_split[chosen])


def parquet_file_rows(path: PathArg) -> Iterator[dict[str, Any]]:
    """The rows of one parquet file (e.g. Search-R1's ``train.parquet``)."""
    return _iter_parquet([Path(path)])


def _iter_parquet(files: list[Path]) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq  # ships with `datasets`

    for file in files:
        for batch in pq.ParquetFile(file).iter_batches(batch_size=1024):
            yield from batch.to_pylist()
