"""Checkpoints that a killed run can resume from, and the final export as a plain HF model.

A checkpoint is a directory ``<out>/checkpoints/step-000120/`` holding::

    policy/         the model (save_pretrained) or, with LoRA, only the adapter; tokenizer;
                    value_head.pt when the policy has one
    critic/         a separate PPO critic, when there is one
    trainer.pt      optimizer and scheduler state, RNG states (python, numpy, torch), step,
                    and whatever else the algorithm needs to continue exactly
    config.yaml     the run's TrainConfig
    state.json      step and algorithm, human-readable

It is written into a temporary sibling directory and renamed into place only when complete,
so a crash while saving never leaves a checkpoint that looks whole but is not; the temporary
directory is removed on failure. Resuming therefore only ever sees finished checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from algorithms.config import TrainConfig
from algorithms.policy import VALUE_HEAD_FILE, LoraSettings, Policy, load_policy
from research_env import storage

CHECKPOINTS_DIR = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d+)$")
TRAINER_STATE = "trainer.pt"
ADAPTER_FILE = "adapter_model.safetensors"


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


# --------------------------------------------------------------------------------------
# RNG state
# --------------------------------------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """The global random states of Python, NumPy and torch (CPU and every CUDA device)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
) -> Path:
    """Write a complete checkpoint atomically (see the module docstring) and return its path."""
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        save_policy_weights(policy, tmp / "policy")
        if critic is not None:
            save_policy_weights(critic, tmp / "critic")
        trainer_state = {
            "step": step,
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": capture_rng_state(),
            "extra": extra_state or {},
        }
        torch.save(trainer_state, tmp / TRAINER_STATE)
        config.to_yaml(tmp / "config.yaml")
        state = {"step": step, "algo": config.algo, "lora": config.model.lora is not None}
        (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    return directory


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


def load_checkpoint(directory: str | os.PathLike) -> CheckpointState:
    directory = Path(directory)
    if not (directory / TRAINER_STATE).exists():
        raise FileNotFoundError(f"{directory} is not a checkpoint (no {TRAINER_STATE})")
    # weights_only=False: the state holds Python/NumPy RNG tuples, and the file is our own.
    state = torch.load(directory / TRAINER_STATE, map_location="cpu", weights_only=False)
    return CheckpointState(
        path=directory,
        step=int(state["step"]),
        config=TrainConfig.from_yaml(directory / "config.yaml"),
        optimizer=state["optimizer"],
        scheduler=state["scheduler"],
        rng=state["rng"],
        extra=state.get("extra", {}),
    )


def lora_settings(config: TrainConfig) -> LoraSettings | None:
    lora = config.model.lora
    if lora is None:
        return None
    return LoraSettings(
        r=lora.r, alpha=lora.alpha, dropout=lora.dropout, target_modules=tuple(lora.target_modules)
    )


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


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The highest-step complete checkpoint under ``<output_dir>/checkpoints``, if any."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return None
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := _STEP_DIR.match(p.name)) and (p / TRAINER_STATE).exists()
    ]
    return max(found)[1] if found else None


def prune_checkpoints(output_dir: str | os.PathLike, keep_last: int) -> None:
    """Delete all but the ``keep_last`` newest checkpoints (and stale temporary dirs)."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return
    steps = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)))
    for _, path in steps[: max(0, len(steps) - max(1, keep_last))]:
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Final export
# --------------------------------------------------------------------------------------


def export_pretrained(policy: Policy, directory: str | os.PathLike) -> Path:
    """Write the policy as a plain Hugging Face model directory (LoRA merged in).

    The result loads with ``AutoModelForCausalLM.from_pretrained(directory)`` and has no
    trace of PEFT or of the value head. The export is atomic like a checkpoint.
    """
    directory = Path(directory)
    model = policy.model
    with atomic_directory(directory) as tmp:
        if hasattr(model, "merge_and_unload"):
            # Merge on a copy: the live model keeps training with separate adapters.
            model = copy.deepcopy(model).merge_and_unload()
        model.save_pretrained(tmp)
        policy.tokenizer.save_pretrained(tmp)
    return directory
