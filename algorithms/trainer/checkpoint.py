"""Checkpoints that a killed run can resume from, and the final export as a plain HF model.

A checkpoint is a directory ``<out>/checkpoints/step-000120/`` holding::

    policy/         the model (save_pretrained) or, with LoRA, only the adapter; tokenizer;
                    value_head.pt when the policy has one
    critic/         a separate PPO critic, when there is one
    trainer.pt      optimizer and scheduler state, RNG states (python, numpy, torch), step,
                    and whatever else the algorithm needs to continue exactly
    config.yaml     the run's TrainConfig
    state.json      step and algorithm, human-readable
    checksums.json  the sha256 of every other file, checked when the checkpoint is read

It is written into a temporary sibling directory and renamed into place only when complete,
so a crash while saving never leaves a checkpoint that looks whole but is not; the temporary
directory is removed on failure, and a staging directory left by a killed process
(``.step-000120.*.tmp``) is removed by :func:`prune_checkpoints` and
:func:`remove_stale_staging`.

``trainer.pt`` is read with ``torch.load(weights_only=True)``: it holds only tensors and
plain Python values (the RNG states are stored as lists of ints), so a crafted file cannot
run code when a run resumes. A checkpoint that does not read back (a truncated
``trainer.pt``, a damaged safetensors file, an invalid ``config.yaml``) raises
:class:`CorruptCheckpointError` naming the file; :func:`latest_intact_checkpoint` skips
such checkpoints and returns the newest one that is whole. So does a file whose bytes no
longer match ``checksums.json`` (a flipped byte inside the weights reads back without error,
but not as what was trained); checkpoints written before checksums were kept load without
that check.

Why one file of ~570 lines: it is one idea, the checkpoint's on-disk format, and its
writing, reading, integrity checks and export must change together.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import pickle
import random
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from algorithms.config import TrainConfig
from algorithms.model_zoo import reloadable_base
from algorithms.policy import (
    VALUE_HEAD_FILE,
    Policy,
    load_policy,
    lora_settings,
    quiet_saving,
    set_adapter_base,
)
from research_env import storage

CHECKPOINTS_DIR = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d+)$")
TRAINER_STATE = "trainer.pt"
CHECKSUMS = "checksums.json"
ADAPTER_FILE = "adapter_model.safetensors"
logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# Atomic directories
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to ``target``; on success it *becomes* ``target``.

    An existing ``target`` is replaced only after the new one is complete. On an exception
    the temporary directory is deleted and ``target`` is left as it was.
    """
    with storage.atomic_directory(target, if_exists="replace") as staging:
        yield staging


class CorruptCheckpointError(ValueError):
    """A checkpoint directory whose files do not read back (the message names the file)."""


# --------------------------------------------------------------------------------------
# RNG state
# --------------------------------------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """The global random states of Python, NumPy and torch (CPU and every CUDA device).

    Python's and NumPy's states are stored as plain lists and numbers (no NumPy arrays),
    so ``trainer.pt`` loads with ``weights_only=True``; :func:`restore_rng_state` turns
    them back into the exact states.
    """
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss_next],
        "numpy": [str(kind), [int(k) for k in keys], int(pos), int(has_gauss),
                  float(cached_gaussian)],
        "torch": torch.get_rng_state(),
    }  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # One state per GPU the saving run saw; a resume may see fewer (or more) GPUs:
        # the visible ones get theirs, the others keep their seeded state.
        saved = list(state["cuda"])
        visible = torch.cuda.device_count()
        if len(saved) != visible:
            logger.warning(
                "the checkpoint holds the CUDA RNG states of %d GPUs and %d are visible: "
                "restoring the first %d", len(saved), visible, min(len(saved), visible),
            )  # fmt: skip
        for index, device_state in enumerate(saved[:visible]):
            torch.cuda.set_rng_state(device_state, device=index)


# --------------------------------------------------------------------------------------
# Save / load
# --------------------------------------------------------------------------------------


def step_dir(output_dir: str | os.PathLike, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR / f"step-{step:06d}"


def save_policy_weights(policy: Policy, directory: Path) -> None:
    """Model (or just the LoRA adapter), tokenizer and value head into ``directory``."""
    policy.save(directory)


def save_checkpoint(
    directory: str | os.PathLike,
    *,
    policy: Policy,
    config: TrainConfig,
    step: int,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    critic: Policy | None = None,
    extra_state: dict[str, Any] | None = None,
    optimizer_state: dict[str, Any] | None = None,
) -> Path:
    """Write a complete checkpoint atomically (see the module docstring) and return its path.

    The directory is a checkpoint, not a model: ``from_pretrained(directory)`` fails; the
    model is ``directory/policy`` (``AutoModelForCausalLM`` or, with LoRA,
    ``peft.AutoPeftModelForCausalLM.from_pretrained(directory / "policy")``).
    ``optimizer_state`` replaces ``optimizer.state_dict()`` where that holds only this
    rank's shards (an FSDP run passes the gathered state).
    """
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        save_policy_weights(policy, tmp / "policy")
        if critic is not None:
            save_policy_weights(critic, tmp / "critic")
        trainer_state = {
            "step": step,
            "optimizer": optimizer_state
            if optimizer_state is not None
            else (optimizer.state_dict() if optimizer is not None else None),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": capture_rng_state(),
            "extra": extra_state or {},
        }
        torch.save(trainer_state, tmp / TRAINER_STATE)
        config.to_yaml(tmp / "config.yaml")
        state = {"step": step, "algo": config.algo, "lora": config.model.lora is not None}
        (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
        sums = {
            file.relative_to(tmp).as_posix(): storage.file_sha256(file)
            for file in sorted(tmp.rglob("*"))
            if file.is_file()
        }
        (tmp / CHECKSUMS).write_text(json.dumps({"sha256": sums}, indent=2) + "\n")
    return directory


def _check_checksums(directory: Path) -> None:
    """Every file listed in ``checksums.json`` is there with the bytes it was written with
    (a checkpoint without the file, written before it existed, is not checked)."""
    listing = directory / CHECKSUMS
    if not listing.exists():
        return
    try:
        sums = json.loads(listing.read_text(encoding="utf-8"))["sha256"]
        items = list(sums.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CorruptCheckpointError(
            f"{listing} is not a checksum list ({_one_line(err)})"
        ) from None
    for name, expected in items:
        file = directory / name
        if not file.is_file():
            raise CorruptCheckpointError(f"{file} is missing (listed in {CHECKSUMS})")
        if storage.file_sha256(file) != expected:
            raise CorruptCheckpointError(
                f"{file} does not match the sha256 recorded when the checkpoint was written: "
                "its bytes changed on disk (a damaged or edited file)"
            )


@dataclass
class CheckpointState:
    """What :func:`load_checkpoint` reads besides the weights."""

    path: Path
    step: int
    config: TrainConfig
    optimizer: dict[str, Any] | None
    scheduler: dict[str, Any] | None
    rng: dict[str, Any]
    extra: dict[str, Any]


def load_checkpoint(directory: str | os.PathLike, *, mmap: bool = False) -> CheckpointState:
    """Read a checkpoint's trainer state and config, and check that its weight files read.

    ``mmap=True`` maps the optimizer's tensors instead of reading them (cheap: for checking
    a checkpoint or reading its config; a truncated file still fails). Raises :class:`CorruptCheckpointError` (a ``ValueError``) naming the file that does not
    read back, and ``FileNotFoundError`` when ``directory`` is no checkpoint at all.
    """
    directory = Path(directory)
    if not (directory / TRAINER_STATE).exists():
        raise FileNotFoundError(f"{directory} is not a checkpoint (no {TRAINER_STATE})")
    state = _load_trainer_state(directory / TRAINER_STATE, mmap=mmap)
    try:
        config = TrainConfig.from_yaml(directory / "config.yaml")
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise CorruptCheckpointError(
            f"{directory / 'config.yaml'} is not a valid config ({_one_line(err)})"
        ) from None
    _check_weight_files(directory)
    _check_checksums(directory)
    try:
        return CheckpointState(
            path=directory,
            step=int(state["step"]),
            config=config,
            optimizer=state["optimizer"],
            scheduler=state["scheduler"],
            rng=state["rng"],
            extra=state.get("extra", {}),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise CorruptCheckpointError(
            f"{directory / TRAINER_STATE} lacks the trainer state ({_one_line(err)})"
        ) from None


def _load_trainer_state(path: Path, *, mmap: bool = False) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``: tensors and plain values only, so a
    crafted file cannot run code. Checkpoints written before the RNG states were stored as
    lists held NumPy arrays; those few NumPy types are allowed too (they reconstruct an
    array and run nothing else)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        try:
            with torch.serialization.safe_globals(_legacy_numpy_globals()):
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError:
            raise CorruptCheckpointError(
                f"{path} was refused: it holds Python objects other than tensors and plain "
                f"values, and loading it could run code ({_one_line(err)[:300]}). ReSearch-Gym "
                "never writes such a file; do not resume from it unless you wrote it yourself."
            ) from None
        except Exception as inner:
            raise CorruptCheckpointError(
                f"{path} does not read back ({_one_line(inner)})"
            ) from None
    except Exception as err:  # truncated or garbled: EOFError, RuntimeError, ...
        raise CorruptCheckpointError(f"{path} does not read back ({_one_line(err)})") from None
    if not isinstance(state, dict):
        raise CorruptCheckpointError(f"{path} does not hold a trainer state dict")
    rng = state.get("rng")
    if isinstance(rng, dict) and isinstance(rng.get("numpy"), tuple):  # a legacy state
        kind, keys, pos, has_gauss, cached = rng["numpy"]
        rng["numpy"] = [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]
        version, internal, gauss_next = rng["python"]
        rng["python"] = [version, list(internal), gauss_next]
    return state


def _legacy_numpy_globals() -> list[Any]:
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's array reconstructor
    return [reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _check_weight_files(directory: Path) -> None:
    """Read the header of every safetensors file (cheap: the tensors are not loaded); a
    truncated or garbled file fails here, naming itself, instead of deep inside a load."""
    from safetensors import safe_open

    for name in ("policy", "critic"):
        part = directory / name
        if not part.is_dir():
            if name == "policy":
                raise CorruptCheckpointError(f"{directory} has no policy/ directory")
            continue
        files = sorted(part.glob("*.safetensors"))
        if not files and not any(part.glob("*.bin")):
            raise CorruptCheckpointError(f"{part} holds no weights (*.safetensors)")
        for file in files:
            try:
                with safe_open(str(file), framework="pt") as handle:
                    handle.keys()
            except Exception as err:
                raise CorruptCheckpointError(
                    f"{file} is not a readable safetensors file ({_one_line(err)})"
                ) from None
        for binary in sorted(part.glob("*.bin")):  # torch pickles: tensors only, as trainer.pt
            try:
                torch.load(binary, map_location="cpu", weights_only=True, mmap=True)
            except Exception as err:
                raise CorruptCheckpointError(
                    f"{binary} is not a readable weights file of tensors ({_one_line(err)[:300]})"
                ) from None
        for json_file in part.glob("*.json"):  # configs and the tokenizer
            try:
                json.loads(json_file.read_bytes().decode("utf-8"))
            except (OSError, ValueError, RecursionError) as err:
                raise CorruptCheckpointError(
                    f"{json_file} is not valid JSON ({_one_line(err)})"
                ) from None


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return f"{type(err).__name__}: {text}" if type(err).__name__ not in text else text


def load_policy_weights(
    directory: Path, config: TrainConfig, *, base_name: str, value_head: bool = False
) -> Policy:
    """Rebuild a policy saved by :func:`save_policy_weights`.

    A full model is loaded from the directory itself. A LoRA adapter is put back on a fresh
    load of its base model (``base_name``), which is also what the KL reference is.
    """
    model_cfg = config.model
    lora = lora_settings(config)
    if lora is None or not (directory / "adapter_config.json").exists():
        # A full model (a separate PPO critic is one even when the policy has adapters).
        return load_policy(
            str(directory),
            dtype=model_cfg.dtype,
            device=model_cfg.device,
            gradient_checkpointing=model_cfg.gradient_checkpointing,
            value_head=value_head,
        )
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    policy = load_policy(
        base_name,
        dtype=model_cfg.dtype,
        device=model_cfg.device,
        lora=lora,
        gradient_checkpointing=model_cfg.gradient_checkpointing,
        value_head=value_head,
    )
    set_peft_model_state_dict(policy.model, load_file(directory / ADAPTER_FILE))
    if value_head and policy.value_head is not None and (directory / VALUE_HEAD_FILE).exists():
        state = torch.load(directory / VALUE_HEAD_FILE, map_location=policy.device)
        policy.value_head.load_state_dict(state)
    policy.name = base_name
    return policy


def _step_dirs(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    root = Path(output_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)))


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The highest-step complete checkpoint under ``<output_dir>/checkpoints``, if any.

    Complete means renamed into place (it has ``trainer.pt``); whether its files read back
    is :func:`latest_intact_checkpoint`'s question.
    """
    found = [p for _, p in _step_dirs(output_dir) if (p / TRAINER_STATE).exists()]
    return found[-1] if found else None


def latest_intact_checkpoint(
    output_dir: str | os.PathLike,
) -> tuple[Path | None, list[str]]:
    """The newest checkpoint under ``<output_dir>/checkpoints`` whose files all read back
    (:func:`load_checkpoint` succeeds), and one message per newer checkpoint skipped as
    damaged (naming the bad file)."""
    skipped: list[str] = []
    for _, path in reversed(_step_dirs(output_dir)):
        if not (path / TRAINER_STATE).exists():
            continue
        try:
            load_checkpoint(path, mmap=True)
        except CorruptCheckpointError as err:
            skipped.append(str(err))
            continue
        return path, skipped
    return None, skipped


def remove_stale_staging(output_dir: str | os.PathLike) -> list[Path]:
    """Remove what killed saves left under ``<output_dir>/checkpoints``: staging
    directories (``.step-N.*.tmp``) and old copies moved aside during a replace
    (``.step-N.old-*``; put back if the checkpoint itself is missing). Only call this when
    no save is under way in that directory (a run's own saves are sequential). Returns the
    paths removed."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    removed = []
    for path in sorted(root.iterdir()):
        if not (path.name.startswith(".step-") and path.is_dir()):
            continue
        name = path.name[1:].split(".", 1)[0]
        if ".old-" in path.name and (path / name).is_dir() and not (root / name).exists():
            os.replace(path / name, root / name)  # the replace was killed half-way
        if path.name.endswith(".tmp") or ".old-" in path.name:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def prune_checkpoints(output_dir: str | os.PathLike, keep_last: int) -> None:
    """Delete all but the ``keep_last`` newest checkpoints, and stale staging directories
    left by killed saves (:func:`remove_stale_staging`)."""
    remove_stale_staging(output_dir)
    steps = _step_dirs(output_dir)
    for _, path in steps[: max(0, len(steps) - max(1, keep_last))]:
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Final export
# --------------------------------------------------------------------------------------


def export_pretrained(
    policy: Policy,
    directory: str | os.PathLike,
    *,
    config: TrainConfig | None = None,
    step: int | None = None,
    weights: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write the policy as a plain Hugging Face model directory (LoRA merged in).

    The result loads with ``AutoModelForCausalLM.from_pretrained(directory)`` and has no
    trace of PEFT or of the value head. With LoRA the adapter alone is exported too, in
    ``directory/adapter`` (``peft.AutoPeftModelForCausalLM.from_pretrained`` reloads it on
    its base model). A model card (``README.md``) says what the model is and how to load
    it; ``config`` and ``step`` add how it was trained. The export is atomic like a
    checkpoint. ``weights`` replace the model's own tensors by state-dict name: the
    float32 master weights of a run with 16-bit weights, so that the export holds what was
    learned rather than its bf16 rounding (load with ``dtype=torch.float32`` to keep it).
    """
    directory = Path(directory)
    model = policy.model
    with atomic_directory(directory) as tmp, quiet_saving():
        lora = hasattr(model, "merge_and_unload")
        if lora:
            policy.model.save_pretrained(tmp / ADAPTER_DIR)
            policy.tokenizer.save_pretrained(tmp / ADAPTER_DIR)
            set_adapter_base(tmp / ADAPTER_DIR, reloadable_base(policy))
            # Merge on a copy: the live model keeps training with separate adapters.
            model = copy.deepcopy(model).merge_and_unload()
        state = {**model.state_dict(), **weights} if weights and not lora else None
        model.save_pretrained(tmp, state_dict=state)
        policy.tokenizer.save_pretrained(tmp)
        write_model_card(tmp, policy, config=config, step=step, has_adapter=lora)
    return directory


ADAPTER_DIR = "adapter"


# Offline model names and the hub models they are copies of (the card's ``base_model``).
OFFLINE_HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
                   "gemma3-270m": "google/gemma-3-270m-it"}  # fmt: skip


def _card_evaluation(config: TrainConfig | None) -> list[str]:
    """The run's last held-out evaluation (``eval/*`` in metrics.jsonl), if it had one."""
    path = Path(config.output_dir) / "metrics.jsonl" if config is not None else None
    last: dict[str, Any] = {}
    for line in path.read_text(encoding="utf-8").splitlines() if path and path.exists() else []:
        with contextlib.suppress(json.JSONDecodeError):
            record = json.loads(line)
            if isinstance(record, dict) and "eval/em" in record:
                last = record
    if not last:
        return []
    values = ", ".join(f"{k.removeprefix('eval/')} {float(v):.3f}" for k, v in last.items()
                       if k.startswith("eval/") and isinstance(v, (int, float)))  # fmt: skip
    split = config.eval.split if config is not None else "?"
    return ["## Evaluation", "", f"Held-out split `{split}`, step {last.get('step')}: {values}.",
            ""]  # fmt: skip


def _card_prompt(config: TrainConfig | None) -> list[str]:
    """The prompt the policy was trained on: its template's system prompt and question."""
    if config is None:
        return []
    from research_env.templates import get_template

    template = get_template(config.env.template)
    messages = template.render_messages("<the question>")
    return ["## Prompt format", "", f"Template `{template.name}` (research_env/templates.py), "
            "as chat messages (or the same text without a chat template):", "", "```",
            *(f"[{m['role']}]\n{m['content']}" for m in messages), "```", ""]  # fmt: skip


def write_model_card(
    directory: str | os.PathLike,
    policy: Policy,
    *,
    config: TrainConfig | None = None,
    step: int | None = None,
    has_adapter: bool | None = None,
) -> Path:
    """``directory/README.md``: a Hugging Face model card for an exported policy."""
    directory = Path(directory)
    base = policy.name
    has_adapter = (directory / ADAPTER_DIR).is_dir() if has_adapter is None else has_adapter
    algo = config.algo if config is not None else None
    trained = []
    if algo is not None:
        trained.append(f"algorithm: {algo}")
    if step is not None:
        trained.append(f"training steps: {step}")
    if config is not None:
        env = config.env
        trained += [
            f"dataset: {env.dataset} (split {env.split}), retriever: {env.retriever}, "
            f"top-{env.top_k}, reward: {env.reward}, template: {env.template}",
            f"learning rate: {config.optim.lr:g}, seed: {config.trainer.seed}",
        ]
    if policy.lora is not None:
        trained.append(f"LoRA r={policy.lora.r}, alpha={policy.lora.alpha} (merged here)")
    front = ["---", "library_name: transformers", "pipeline_tag: text-generation"]
    hub_base = OFFLINE_HUB_IDS.get(base, base)
    if "/" in hub_base and not Path(hub_base).expanduser().exists():
        front.append(f"base_model: {hub_base}")
    front += ["tags:", "- research-gym", "- reasoning-with-search"]
    front += [f"- {algo}"] if algo else []
    front.append("---")
    lines = [
        *front,
        "",
        f"# ReSearch-Gym policy{f': {Path(config.output_dir).name}' if config else ''}",
        "",
        f"A causal LM fine-tuned from `{base}` with ReSearch-Gym to answer multi-hop "
        "questions by reasoning with search: it thinks in `<think>...</think>`, queries "
        "with `<search>query</search>`, reads the `<result>...</result>` the environment "
        "returns, and answers with `<answer>... \\boxed{answer}</answer>`.",
        "",
        "## Training",
        "",
        *([f"- {t}" for t in trained] or ["- (not recorded)"]),
        "",
        *_card_evaluation(config),
        *_card_prompt(config),
        "## Loading",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'model = AutoModelForCausalLM.from_pretrained("path/to/this/directory")',
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/directory")',
        "```",
    ]
    if has_adapter:
        lines += [
            "",
            f"The LoRA adapter alone is in `{ADAPTER_DIR}/`:",
            "",
            "```python",
            "from peft import AutoPeftModelForCausalLM",
            "",
            f'model = AutoPeftModelForCausalLM.from_pretrained("path/to/this/directory/{ADAPTER_DIR}")',
            "```",
        ]
    lines += [
        "",
        "Evaluate it with `research-env eval --model path/to/this/directory`, or continue "
        "training with `research-env train --model path/to/this/directory`.",
        "",
    ]
    card = directory / "README.md"
    card.write_text("\n".join(lines), encoding="utf-8")
    return card
