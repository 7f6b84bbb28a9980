"""Token transcripts: what the loss saw, one JSON line per episode.

Masking and token-fidelity bugs (retrieved text trained on, a turn's tokens silently
dropped from the loss, a chat template re-tokenizing differently) are invisible in a
metrics table: the reward curve looks the same. A token transcript keeps, for every token
of an episode, its id, the text the tokenizer gives it, its *role* and, for response
tokens, the loss mask, the sampling log-prob and (when the trainer wrote it) the
advantage, so ``research-env view`` can colour each token by
what happened to it.

Roles (one character per token, the string ``record["roles"]``):

====  ==============  ===============================================================
code  name            meaning
====  ==============  ===============================================================
P     prompt          the rendered prompt (never trained)
T     trained         loss mask 1: the loss trains on it
U     untrained       the policy generated it but its loss mask is 0 (a truncated
                      episode the trainer masked out, or a bug)
R     retrieved       an observation token inside a ``<result>`` / ``<information>``
                      block: retrieved documents, masked out of the loss
E     environment     any other observation token: the block's tags, corrective messages
====  ==============  ===============================================================

``T`` comes from the loss mask alone, so an observation token with mask 1 shows as trained
(and its response position is listed in ``record["leaks"]``, which the view outlines in
red): the view shows the mask as it is, not as it should be.

Files are named ``*.tokens.jsonl`` (:data:`SUFFIX`) so they are never confused with the
text transcripts ``research-env eval`` writes to ``transcripts/<name>.jsonl``. The trainer
writes ``<out>/transcripts/train.tokens.jsonl`` when ``logging.save_transcripts`` is set;
the evaluation harness's ``evaluate_model(..., token_transcripts=path)`` writes eval episodes.
This module imports no torch: callers pass plain lists.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

FORMAT = "research-gym/token-transcript-v1"
SUFFIX = ".tokens.jsonl"
ROLE_NAMES = {
    "P": "prompt",
    "T": "trained",
    "U": "untrained",
    "R": "retrieved",
    "E": "environment",
}
# The blocks whose content is retrieved text (research_env.templates: result_tag).
RESULT_TAGS = ("result", "information")
# Scalars copied from the env's final info when present.
INFO_KEYS = (
    "question_id",
    "question",
    "golden_answers",
    "prediction",
    "em",
    "f1",
    "format_valid",
    "searches",
    "hops",
    "type",
    "termination",
    "invalid_reason",
    "supporting_recall",
)
_BLOCK = re.compile(r"<(" + "|".join(RESULT_TAGS) + r")>(.*?)(?:</\1>|\Z)", flags=re.DOTALL)


def token_texts(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """The text each token contributes, so that ``"".join(...)`` reads like the decoded
    sequence. Decoded incrementally with one token of context (a SentencePiece token's
    leading space survives); a character split over several byte tokens is given whole to
    the token that completes it, and the others get ``""``."""
    texts: list[str] = []
    prefix = read = 0  # decode(ids[prefix:read]) is the context already attributed
    for i in range(len(ids)):
        before = tokenizer.decode(ids[prefix:read]) if read > prefix else ""
        after = tokenizer.decode(ids[prefix : i + 1])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            texts.append(after[len(before) :])
            prefix, read = read, i + 1
        else:
            texts.append("")
    if texts and read < len(ids):  # a trailing partial character: the last token shows it
        done = tokenizer.decode(ids[prefix:read]) if read > prefix else ""
        texts[-1] = tokenizer.decode(ids[prefix:])[len(done) :]
    return texts


def model_positions(
    n: int, loss_mask: Sequence[int], turn_spans: Sequence[Sequence[int]]
) -> list[bool]:
    """Which of ``n`` response tokens the policy generated: inside a turn span (or, for a
    trajectory recorded without spans, wherever the mask is 1)."""
    if not turn_spans:
        return [bool(m) for m in loss_mask[:n]] + [False] * max(0, n - len(loss_mask))
    generated = [False] * n
    for start, end in turn_spans:
        for k in range(max(0, start), min(n, end)):
            generated[k] = True
    return generated


def response_roles(
    texts: Sequence[str], loss_mask: Sequence[int], turn_spans: Sequence[Sequence[int]]
) -> str:
    """One role code per response token (see the module docstring)."""
    n = len(texts)
    generated = model_positions(n, loss_mask, turn_spans)
    roles = ["T" if k < len(loss_mask) and loss_mask[k] else "U" if generated[k] else "E"
             for k in range(n)]  # fmt: skip
    k = 0
    while k < n:  # each maximal run of observation tokens is one observation
        if generated[k]:
            k += 1
            continue
        end = k
        while end < n and not generated[end]:
            end += 1
        for j in _retrieved_tokens(texts[k:end]):
            if roles[k + j] == "E":
                roles[k + j] = "R"
        k = end
    return "".join(roles)


def _retrieved_tokens(texts: Sequence[str]) -> set[int]:
    """Indices of the tokens of one observation that lie mostly inside a result block's
    content (a token shared between a tag and the documents goes where most of it is)."""
    offsets, position = [], 0
    for text in texts:
        offsets.append((position, position + len(text)))
        position += len(text)
    content = [m.span(2) for m in _BLOCK.finditer("".join(texts))]
    inside = set()
    for j, (a, b) in enumerate(offsets):
        overlap = sum(max(0, min(b, e) - max(a, s)) for s, e in content)
        if overlap and 2 * overlap >= b - a:
            inside.add(j)
    return inside


def transcript_record(
    trajectory: Any,
    tokenizer: Any,
    *,
    loss_mask: Sequence[float] | None = None,
    advantages: Sequence[float] | None = None,
    source: str = "",
    step: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One episode as a JSON-ready record.

    Args:
        trajectory: an :class:`algorithms.buffer.Trajectory` (or anything with its fields).
        tokenizer: the policy's tokenizer (for each token's text).
        loss_mask: the mask the loss actually used, when it differs from the trajectory's
            (the trainer zeroes truncated episodes); default ``trajectory.loss_mask``.
        advantages: per response token (the trainer's); None when not known (evaluation).
        source: what produced the episode (``"grpo training"``, an eval row's name).
        step: the training step, if any.
        extra: more scalars to record (e.g. the question text).
    """
    prompt, response = list(trajectory.prompt_ids), list(trajectory.response_ids)
    used = trajectory.loss_mask if loss_mask is None else loss_mask
    mask = [round(float(m)) for m in used][: len(response)]  # a float tensor's row: 0/1
    texts = token_texts(tokenizer, prompt) + token_texts(tokenizer, response)
    roles = "P" * len(prompt) + response_roles(texts[len(prompt) :], mask, trajectory.turn_spans)
    generated = model_positions(len(response), mask, trajectory.turn_spans)
    info = dict(trajectory.info or {})
    record: dict[str, Any] = {
        "format": FORMAT,
        "source": source,
        "step": step,
        "group": trajectory.group,
        **{k: info[k] for k in INFO_KEYS if k in info},
        "reward": float(trajectory.reward),
        "finish_reason": str(trajectory.finish_reason or ""),
        "prompt_len": len(prompt),
        "ids": prompt + response,
        "tokens": texts,
        "roles": roles,
        "loss_mask": mask,
        "logprobs": [round(float(x), 4) for x in trajectory.sample_logprobs[: len(response)]],
        "advantages": None
        if advantages is None
        else [round(float(x), 4) for x in list(advantages)[: len(response)]],
        "trained_tokens": sum(mask),
        # Observation tokens the loss trains on: always a bug (response positions).
        "leaks": [k for k, (m, g) in enumerate(zip(mask, generated, strict=False)) if m and not g],
    }
    record.update(extra or {})
    return record


def save_step(
    path: str | Path,
    trajectories: Sequence[Any],
    tokenizer: Any,
    *,
    kept: Sequence[Any],
    loss_mask: Any = None,
    advantages: Any = None,
    step: int | None = None,
    limit: int | None = None,
    source: str = "train",
) -> Path:
    """Append a training step's first ``limit`` episodes to ``path``.

    ``kept`` are the episodes the update used, in the order of its rows: ``loss_mask`` and
    ``advantages`` (``(B, R)`` tensors or nested lists; None when nothing was kept) give
    each its row. An episode the update dropped (a flat group) is recorded with an all-zero
    mask and ``"dropped": true``: the loss never saw it, and the view says so.
    """
    row_of = {id(t): row for row, t in enumerate(kept)}
    masks = loss_mask.tolist() if hasattr(loss_mask, "tolist") else loss_mask
    advs = advantages.tolist() if hasattr(advantages, "tolist") else advantages
    records = []
    for t in list(trajectories)[:limit]:
        row, n = row_of.get(id(t)), len(t.response_ids)
        dropped = row is None or masks is None
        records.append(
            transcript_record(
                t,
                tokenizer,
                loss_mask=[0] * n if dropped else masks[row][:n],
                advantages=None if dropped or advs is None else advs[row][:n],
                source=source,
                step=step,
                extra={"dropped": True} if dropped else None,
            )
        )
    return write_transcripts(path, records)


def write_transcripts(path: str | Path, records: Sequence[Mapping[str, Any]]) -> Path:
    """Append ``records`` to ``path`` (one JSON object a line), creating its directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def record_problem(record: Mapping[str, Any]) -> str | None:
    """What makes ``record`` unfit to draw (a hand-edited or truncated file), or None: the
    per-token lists must line up, or a page would show tokens with the wrong mask."""
    tokens, ids, roles = record.get("tokens"), record.get("ids"), record.get("roles")
    if not (isinstance(tokens, list) and isinstance(ids, list) and isinstance(roles, str)):
        return "tokens, ids (lists) and roles (a string) are required"
    n, prompt = len(tokens), record.get("prompt_len")
    if len(ids) != n or len(roles) != n:
        return f"{n} tokens but {len(ids)} ids and {len(roles)} roles"
    if not isinstance(prompt, int) or not 0 <= prompt <= n:
        return f"prompt_len {prompt!r} is not a count of 0 to {n} tokens"
    if not all(isinstance(t, str) for t in tokens) or set(roles) - set(ROLE_NAMES):
        return f"token texts must be strings and roles one of {''.join(ROLE_NAMES)}"
    if not all(_is_int(i) for i in ids):
        return "ids must be integers"
    for key in ("loss_mask", "logprobs", "advantages"):
        value = record.get(key)
        if key == "advantages" and value is None:
            continue
        if not isinstance(value, list) or len(value) != n - prompt:
            return f"{key} must list one value per response token ({n - prompt})"
        if not all(v is None or _is_number(v) for v in value):
            return f"{key} must hold numbers"
    return _field_problem(record)


# The types of the scalar fields the page shows or filters by (each may be null/absent).
_NUMBER_FIELDS = ("step", "group", "reward", "em", "f1", "searches", "hops", "trained_tokens",
                  "supporting_recall")  # fmt: skip
_TEXT_FIELDS = ("source", "finish_reason", "termination", "question", "question_id",
                "prediction", "type", "invalid_reason")  # fmt: skip


def _field_problem(record: Mapping[str, Any]) -> str | None:
    for key in _NUMBER_FIELDS:
        value = record.get(key)
        if value is not None and not _is_number(value):
            return f"{key} must be a number, got {type(value).__name__}"
    for key in _TEXT_FIELDS:
        value = record.get(key)
        if value is not None and not isinstance(value, str):
            return f"{key} must be text, got {type(value).__name__}"
    gold, leaks = record.get("golden_answers"), record.get("leaks")
    if gold is not None and not (isinstance(gold, list) and all(isinstance(g, str) for g in gold)):
        return "golden_answers must be a list of strings"
    if leaks is not None and not (isinstance(leaks, list) and all(_is_int(k) for k in leaks)):
        return "leaks must be a list of token positions"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_transcripts(path: str | Path, every: int = 1) -> Iterator[dict[str, Any]]:
    """The records of one ``*.tokens.jsonl`` file, lazily (a run's file can be large);
    ``every`` > 1 yields only every ``every``-th record and never parses the others.

    Raises:
        ValueError: a line that is not a token-transcript record (the message says which
            line, and how to get the right file).
    """
    from research_env.data.textfile import decode_json

    path = Path(path)
    # Undecodable bytes and nesting too deep to parse become a ValueError naming the line.
    with path.open(encoding="utf-8", errors="surrogateescape") as f:
        records = 0
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            records += 1
            if (records - 1) % every:
                continue
            try:
                record = decode_json(line)
            except ValueError as err:
                raise ValueError(f"{path}:{number}: not a JSON line: {err}") from None
            if not isinstance(record, dict) or record.get("format") != FORMAT:
                raise ValueError(
                    f'{path}:{number}: not a token transcript (no "format": {FORMAT!r}). '
                    f"Token transcripts are *{SUFFIX} files, written by training with "
                    "logging.save_transcripts > 0 or by research-env demo; the "
                    "transcripts/<name>.jsonl of research-env eval hold text only"
                )
            yield record
