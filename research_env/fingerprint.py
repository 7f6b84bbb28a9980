"""Run fingerprints: what must match for two results to be comparable.

Search-agent numbers move with the dataset split, the corpus, the retriever and its
top-k, the prompt template, the turn budget, the reward and the model; comparisons that
ignore one of these get disputed (Search-R1 #40/#46, StepSearch #2). Every train and eval
output directory therefore holds a ``fingerprint.json``::

    from research_env import MultiHopSearchEnv
    from research_env.fingerprint import fingerprint, differing_fields
    a = fingerprint(MultiHopSearchEnv(split="dev"), model="smollm2-135m")
    b = fingerprint(MultiHopSearchEnv(split="dev", top_k=5), model="smollm2-135m")
    differing_fields(a, b)   # ['rules.top_k']

What goes in (all content, never paths or mtimes, so a copied corpus compares equal):

- ``dataset``: the split's size and a SHA-256 over its samples' ids, questions and golden
  answers, in order (``--limit N`` takes the first N, so order matters);
- ``corpus``: the SHA-256 of the corpus file when the env has one (``None`` otherwise);
- ``retriever``: the retriever's own ``fingerprint()`` dict when it has one (BM25, dense,
  HTTP, hybrid, the controls and the caches do), else its class and its plain public
  attributes;
- ``rules``: top-k, max turns and the other :class:`~research_env.episode.EpisodeRules`
  (a rule that is off, ``None``, is left out: adding an optional rule keeps old hashes);
- ``template``: its name and a hash of everything it renders; ``reward``: its name;
- ``model``: whatever the caller names (a model name or directory);
- ``decoding`` (evaluations): sampling, token limits and ``decode_dtype``, the precision
  the episodes were decoded in (``float32``, ``bfloat16``, or ``int8`` for the 8-bit
  decoding copy), so runs decoded differently never compare as equal.

``hash`` is the SHA-256 of all of that; two fingerprints are comparable when their hashes
are equal. Torch-free, like the rest of ``research_env``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from research_env.data.types import QASample
from research_env.storage import atomic_file, file_sha256

__all__ = [
    "FINGERPRINT_FILE",
    "FINGERPRINT_VERSION",
    "corpus_sha256",
    "dataset_sha256",
    "describe_retriever",
    "differing_fields",
    "fingerprint",
    "flatten",
    "read_fingerprint",
    "stable_hash",
    "write_fingerprint",
]

FINGERPRINT_FILE = "fingerprint.json"
# Bumped when what goes into a fingerprint changes: older files then differ in "version".
FINGERPRINT_VERSION = 1
# Keys that describe a fingerprint rather than the setup: never compared.
NOT_COMPARED = ("hash", "notes")

_PLAIN = (str, int, float, bool, type(None))


def stable_hash(value: Any) -> str:
    """SHA-256 of ``value`` as canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def dataset_sha256(samples: Sequence[QASample]) -> str:
    """A hash of a split: every sample's id, question and golden answers, in order."""
    digest = hashlib.sha256()
    for sample in samples:
        row = [sample.id, sample.question, list(sample.golden_answers)]
        digest.update(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
    return digest.hexdigest()


_corpus_hashes: dict[tuple[str, int, int], str] = {}
_corpus_lock = threading.Lock()


def corpus_sha256(path: str | os.PathLike[str]) -> str:
    """The corpus file's SHA-256, computed once per process per (path, size, mtime)."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    with _corpus_lock:
        if key not in _corpus_hashes:
            _corpus_hashes[key] = file_sha256(resolved)
        return _corpus_hashes[key]


def describe_retriever(retriever: Any) -> dict[str, Any]:
    """The retriever's ``fingerprint()`` if it has one, else its class and the plain
    (str/number/bool/None) public attributes it holds."""
    method = getattr(retriever, "fingerprint", None)
    if callable(method):
        return dict(method())
    cls = type(retriever)
    params = {
        k: v
        for k, v in sorted(vars(retriever).items())
        if not k.startswith("_") and isinstance(v, _PLAIN)
    }
    return {"name": f"{cls.__module__}.{cls.__qualname__}", "params": params}


def _reward_name(reward_fn: Any) -> str:
    from research_env.rewards import REWARDS

    for name, fn in REWARDS.items():
        if fn is reward_fn:
            return name
    described = getattr(reward_fn, "fingerprint_name", None)
    if isinstance(described, str):
        return described
    module = getattr(reward_fn, "__module__", type(reward_fn).__module__)
    qualname = getattr(reward_fn, "__qualname__", type(reward_fn).__qualname__)
    return f"{module}.{qualname}"


def fingerprint(env: Any, *, model: str | None = None, **extra: Any) -> dict[str, Any]:
    """The fingerprint of a :class:`~research_env.env.MultiHopSearchEnv` (or anything
    with ``samples``, ``retriever``, ``rules``, ``template`` and ``reward_fn``; a vector
    env's first sub-env is used), for ``model``. ``extra`` adds compared fields (e.g.
    ``decoding="greedy"``)."""
    env = getattr(env, "envs", [env])[0]
    corpus = getattr(env, "corpus_path", None)
    template = env.template
    fields: dict[str, Any] = {
        "version": FINGERPRINT_VERSION,
        "dataset": {"n": len(env.samples), "sha256": dataset_sha256(env.samples)},
        "corpus": {"sha256": corpus_sha256(corpus)} if corpus is not None else None,
        "retriever": describe_retriever(env.retriever),
        "rules": _rules(env.rules),
        "template": {"name": template.name, "sha256": stable_hash(template.fingerprint_fields())},
        "reward": _reward_name(env.reward_fn),
        "model": None if model is None else str(model),
        **extra,
    }
    return {**fields, "hash": stable_hash(fields)}


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b.c": leaf}``; lists and other values are leaves."""
    if isinstance(value, Mapping) and (value or not prefix):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def differing_fields(
    a: Mapping[str, Any], b: Mapping[str, Any], ignore: Sequence[str] = ()
) -> list[str]:
    """Dotted names of the fields where ``a`` and ``b`` differ (sorted), leaving out
    ``hash``/``notes`` and any field in ``ignore`` or under it (``ignore=["retriever"]``
    skips every ``retriever.*``)."""
    skipped = (*NOT_COMPARED, *ignore)
    flat_a = flatten({k: v for k, v in a.items()})
    flat_b = flatten({k: v for k, v in b.items()})
    return sorted(
        key
        for key in set(flat_a) | set(flat_b)
        if flat_a.get(key) != flat_b.get(key)
        and not any(key == s or key.startswith(s + ".") for s in skipped)
    )


def write_fingerprint(directory: str | os.PathLike[str], value: Mapping[str, Any]) -> Path:
    """Write ``directory/fingerprint.json`` (atomically); returns its path."""
    path = Path(directory) / FINGERPRINT_FILE
    with atomic_file(path) as staging:
        staging.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
    return path


def read_fingerprint(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``directory/fingerprint.json``, or ``None`` when there is none; a ``ValueError``
    naming the file when it is not a JSON object of at most a few levels."""
    from research_env.storage import read_json_file

    path = Path(directory) / FINGERPRINT_FILE
    if not path.exists():
        return None
    value = read_json_file(path, "a run fingerprint")
    if not isinstance(value, dict):
        raise ValueError(
            f"{path}: a run fingerprint must be a JSON object, got {type(value).__name__}"
        )
    if _depth(value) > _MAX_DEPTH:
        raise ValueError(f"{path}: a run fingerprint nests deeper than {_MAX_DEPTH} levels")
    return value


_MAX_DEPTH = 32  # a written fingerprint nests 3 or 4 levels


def _depth(value: Any) -> int:
    """How deeply ``value`` nests (without recursion: any depth is measured)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return deepest


def _rules(rules: Any) -> dict[str, Any]:
    """The episode rules that change the numbers. A rule that is off (``None``, or shaping
    with every weight 0) is left out, so runs from before it existed keep their hashes."""
    described = {k: v for k, v in dataclasses.asdict(rules).items() if v is not None}
    shaping = getattr(rules, "shaping", None)
    if shaping is not None and not shaping.enabled:
        described.pop("shaping", None)
    return described
