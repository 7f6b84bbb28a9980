"""Will a run fit? The memory of a training run per GPU, estimated before any weight loads.

    research-env plan --config configs/research-grpo.yaml --model qwen2.5-7b --gpu-memory 80GB

The model is built on the ``meta`` device (shapes, no storage) from its config, so a 7B
plan takes a second on a laptop. The estimate follows the run's settings: ``model.dtype``
and ``optim.master_weights`` (float32 masters and moments for 16-bit weights,
``trainer/optim.py``), LoRA (adapters only train; the base is the KL reference),
``trainer.train_layers`` (only the top blocks keep activations and optimizer state),
``model.gradient_checkpointing``, ``trainer.autocast_dtype``, ``rollout.rollout_dtype``,
``trainer.sharding: fsdp`` (weights, gradients, optimizer and reference split over the
GPUs; each rank still gathers the full weights to decode) and the rollout's shape.

A step has two phases, and the peak is the larger:

* **rollout**: weights (+ a decoding copy in ``rollout_dtype``), optimizer state, the KL
  reference, the KV cache of every row the rank decodes (padded to ``max_total_tokens``,
  as the decoder pads every row to the widest) and one step's float32 logits per row;
* **update**: weights, gradients, optimizer state, the reference, the activations one
  micro-batch keeps for backward (``micro_batch_size`` rows of ``max_total_tokens``), and
  the LM head's float32 logits for one chunk of ``logprob_chunk_size`` positions; or, at
  the end of backward, the gradients instead (backward frees activations as it goes).

What it leaves out: the CUDA context and allocator slack (about 0.5-1 GiB; see
``HEADROOM``) and temporaries inside one kernel. Checked against measured peaks in
benchmarks/RESULTS.md ("Memory planner").

With ``rollout.backend: vllm`` the built-in decoder's items (its KV cache, decoding copy
and logits) are not there; vLLM gets a share of the GPU instead (:class:`VLLMShare`):
``rollout.vllm_gpu_memory_utilization: auto`` is what the training peak leaves, less a
margin, and a share too small for vLLM's weights and one sequence of KV cache is refused
before anything loads.
"""

from __future__ import annotations

import copy
import logging
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from algorithms.config import TrainConfig

logger = logging.getLogger(__name__)
GiB = 2**30
HEADROOM = 1.0 * GiB  # CUDA context, cuBLAS workspaces, allocator fragmentation
# vLLM beside training (rollout.backend: vllm). Its weights and KV cache are in bfloat16
# (VLLMBackend.create's dtype). Inside its share it also needs room for its profile run's
# activations, its sampler and CUDA graphs: VLLM_OVERHEAD. Between the training peak and
# its share a margin stays free: HEADROOM plus VLLM_MARGIN of the training estimate (the
# planner's estimate was up to 5.6% under a measured peak: benchmarks/RESULTS.md).
VLLM_BYTES = 2
VLLM_OVERHEAD = 1.0 * GiB
VLLM_MARGIN = 0.10

# Random-init models of real shapes (Qwen2.5 family; the numbers are the released
# configs'): what `plan` and benchmarks/gpu_check.py size without a download.
SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2.5-3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                       num_attention_heads=16, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2.5-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False,
                       vocab_size=152064),
}  # fmt: skip


def shape_config(name: str) -> Any:
    """The Hugging Face config of a :data:`SHAPES` entry (a Qwen2 config)."""
    from transformers import Qwen2Config

    return Qwen2Config(**{"vocab_size": 151936, "rope_theta": 1e6, **SHAPES[name]})


def model_config(name: str) -> Any:
    """The config of a model named as ``model.name`` is (an offline name, a local
    directory, a hub id already in the local cache) or of a :data:`SHAPES` entry."""
    if name in SHAPES:
        return shape_config(name)
    if name == "tiny-random":
        from algorithms.policy import load_policy

        return load_policy("tiny-random", device="cpu").model.config  # 3M weights: instant
    from transformers import AutoConfig

    from algorithms.model_zoo import _OFFLINE_DIRS

    source = str(_OFFLINE_DIRS[name]()) if name in _OFFLINE_DIRS else name
    try:
        return AutoConfig.from_pretrained(source)
    except OSError as err:
        raise ValueError(
            f"plan: no config for model {name!r} here ({err}); name a local model directory, "
            f"an offline name, or one of the shapes {sorted(SHAPES)}"
        ) from None


def meta_model(config: Any, dtype: torch.dtype) -> Any:
    """The model with every tensor on the meta device: shapes and dtypes, no storage.
    ``config`` is left as it was (``from_config`` would write the dtype into it)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(copy.deepcopy(config), dtype=dtype)


# The phases of a step: what stays, what the rollout adds, and the update's alternatives
# (activations and the head's logits during forward and backward; gradients at its end).
RESIDENT = ["weights", "optimizer (moments + fp32 masters)", "reference copy (KL)"]
ROLLOUT = ["weights gathered to decode (fsdp)", "decoding copy (rollout_dtype)",
           "rollout KV cache", "decode logits (float32)"]  # fmt: skip
UPDATE = [["update activations", "logits chunk (float32, x4)"], ["gradients"]]


@dataclass
class Plan:
    """Bytes per GPU, item by item, for each phase of a step."""

    items: dict[str, float]
    gpus: int
    params: int = 0  # the model's weights (all of them, whatever is trained or sharded)
    kv_per_token: float = 0.0  # bytes of K and V per token in vLLM's dtype
    max_positions: int = 0  # the model's context (vLLM's max_model_len by default)

    def _sum(self, names: list[str]) -> float:
        return sum(self.items[name] for name in names)

    @property
    def rollout_phase(self) -> float:
        return self._sum([*RESIDENT, *ROLLOUT])

    @property
    def update_phase(self) -> float:
        """Backward frees activations as it creates gradients: at most one of the two."""
        return self._sum(RESIDENT) + max(self._sum(names) for names in UPDATE)

    @property
    def peak(self) -> float:
        return max(self.rollout_phase, self.update_phase)

    def table(self, gpu_memory: float | None = None) -> str:
        lines = [f"{'item':<34}{'GiB per GPU':>12}"]
        lines += [f"{name:<34}{value / GiB:>12.2f}" for name, value in self.items.items()]
        lines.append(f"{'rollout phase':<34}{self.rollout_phase / GiB:>12.2f}")
        lines.append(f"{'update phase':<34}{self.update_phase / GiB:>12.2f}")
        lines.append(f"{'total per GPU (the larger)':<34}{self.peak / GiB:>12.2f}")
        if gpu_memory is not None:
            verdict = "fits" if self.fits(gpu_memory) else "DOES NOT FIT"
            lines.append(
                f"{verdict} in {gpu_memory / GiB:.0f} GiB per GPU x {self.gpus} "
                f"(with {HEADROOM / GiB:.1f} GiB for the CUDA context and allocator)"
            )
        return "\n".join(lines)

    def fits(self, gpu_memory: float) -> bool:
        return self.peak + HEADROOM <= gpu_memory


def _bytes(dtype: str | None, default: torch.dtype) -> int:
    if dtype is None:
        return default.itemsize
    from algorithms.model_zoo import resolve_dtype as _resolve_dtype

    return _resolve_dtype(dtype).itemsize


def plan(
    config: TrainConfig,
    *,
    model: str | None = None,
    gpus: int = 1,
    device: str = "cuda",
    hf_config: Any = None,
) -> Plan:
    """The memory per GPU of ``config``'s run (``model`` replaces ``config.model.name``)
    on ``gpus`` GPUs (data-parallel; sharded with ``trainer.sharding: fsdp``); ``device``
    resolves the ``"auto"`` precisions (``"cpu"`` to check the plan on this CPU);
    ``hf_config`` gives the model's Hugging Face config directly."""
    from algorithms.model_zoo import resolve_dtype as _resolve_dtype
    from algorithms.precision import autocast_precision, resolve_precision
    from algorithms.trainer.freeze import train_top_layers

    hf = hf_config if hf_config is not None else model_config(model or config.model.name)
    dtype = _resolve_dtype(config.model.dtype)
    net = meta_model(hf, dtype)
    t, r = config.trainer, config.rollout
    params = sum(p.numel() for p in net.parameters())
    lora = config.model.lora
    if lora is not None:
        trainable = _lora_parameters(net, lora.r, lora.target_modules)
        trained_layers = hf.num_hidden_layers
        train_bytes = 4  # peft keeps adapters in float32
    else:
        layers = t.train_layers
        trainable = train_top_layers(net, layers) if layers is not None else params
        trained_layers = t.train_layers or hf.num_hidden_layers
        train_bytes = dtype.itemsize
    fsdp = t.sharding == "fsdp"
    share = gpus if fsdp else 1
    masters = config.optim.master_weights and train_bytes == 2
    moments = 4 if train_bytes == 4 or masters else train_bytes
    optimizer = trainable * (2 * moments + (4 if masters else 0))
    head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    kv_dim = hf.num_key_value_heads * head_dim
    rows = r.questions_per_step * r.group_size // max(1, gpus)
    rollout_dtype = resolve_precision(r.rollout_dtype, device)
    # The int8 copy holds 1-byte weights and decodes (and caches keys) in float32.
    int8 = rollout_dtype == "int8"
    decode_bytes = 1 if int8 else _bytes(rollout_dtype, dtype)
    kv_bytes = 4 if int8 else decode_bytes
    embed = hf.vocab_size * hf.hidden_size
    tied = bool(getattr(hf, "tie_word_embeddings", False))
    if device == "cuda" and t.autocast_dtype is None:  # planned for a GPU with bf16
        autocast = "bfloat16" if dtype == torch.float32 else None
    else:
        autocast = autocast_precision(t.autocast_dtype, device, dtype)
    compute_bytes = _bytes(autocast, dtype)
    tokens = t.micro_batch_size * r.max_total_tokens
    h, inter = hf.hidden_size, hf.intermediate_size
    per_layer = (7 * h + 2 * kv_dim + 4 * inter) * compute_bytes  # per token, kept for backward
    if config.model.gradient_checkpointing:
        activations = tokens * (trained_layers * h * compute_bytes + per_layer)
    else:
        activations = tokens * trained_layers * per_layer
    chunk = min(t.logprob_chunk_size or tokens, tokens)  # positions per head call
    hf_decodes = r.backend == "hf"  # else vLLM decodes, in its own share of the GPU
    items = {
        "weights": params * dtype.itemsize / share,
        "weights gathered to decode (fsdp)": params * dtype.itemsize if fsdp else 0.0,
        "decoding copy (rollout_dtype)": (
            # int8: 1 byte per linear weight, the embedding table kept in float32; its LM
            # head is its own int8 matrix even where the model ties it to the embedding.
            params - embed + 4.0 * embed + (embed if tied else 0)
            if hf_decodes and int8
            else params * decode_bytes
            if hf_decodes and rollout_dtype and decode_bytes != dtype.itemsize
            else 0.0
        ),
        "gradients": trainable * train_bytes / share,
        "optimizer (moments + fp32 masters)": optimizer / share,
        "reference copy (KL)": (
            params * dtype.itemsize / share if _kl(config) and lora is None else 0.0
        ),
        "rollout KV cache": 2.0 * hf.num_hidden_layers * kv_dim * kv_bytes
        * rows * r.max_total_tokens * hf_decodes,
        "decode logits (float32)": 4.0 * rows * hf.vocab_size * hf_decodes,
        "update activations": float(activations),
        "logits chunk (float32, x4)": 4.0 * 4 * chunk * hf.vocab_size,
    }  # fmt: skip
    return Plan(
        items=items,
        gpus=gpus,
        params=params,
        kv_per_token=2.0 * hf.num_hidden_layers * kv_dim * VLLM_BYTES,
        max_positions=int(getattr(hf, "max_position_embeddings", 0) or 0),
    )


def _kl(config: TrainConfig) -> bool:
    section = getattr(config, config.algo, None)
    return float(getattr(section, "kl_coef", 0.0)) != 0.0


def _lora_parameters(net: Any, r: int, targets: list[str]) -> int:
    total = 0
    for name, module in net.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets:
            total += r * (module.in_features + module.out_features)
    return total


def parse_memory(text: str) -> float:
    """``"80GB"``, ``"80GiB"``, ``"80"`` (GiB) -> bytes. GB is read as GiB, as GPU
    vendors mean it (an "80GB" H100 has 80 GiB)."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*(GiB|GB|G|MiB|MB|M)?\s*", text, re.IGNORECASE)
    if match is None:
        raise ValueError(f"--gpu-memory: expected a size like 80GB or 24GiB, got {text!r}")
    unit = (match.group(2) or "G").upper()
    return float(match.group(1)) * (2**20 if unit.startswith("M") else GiB)


@dataclass
class VLLMShare:
    """vLLM's share of one GPU beside the training run (``rollout.backend: vllm``): what
    ``rollout.vllm_gpu_memory_utilization`` is, or resolves to when it is ``auto``.

    ``auto`` = (GPU memory - the training peak - the margin) / GPU memory, rounded down to
    a thousandth; the margin is ``HEADROOM`` + ``VLLM_MARGIN`` x the training peak. The
    share must hold vLLM's weights, one sequence of ``max_model_len`` tokens of KV cache
    (vLLM refuses to start with less) and ``VLLM_OVERHEAD``; what is left over is KV cache.
    """

    gpu_memory: float
    training: float  # the planner's peak per GPU for the training side
    weights: float  # vLLM's copy of the weights
    kv_per_token: float
    max_model_len: int  # rollout.vllm_max_model_len, else the model's context
    setting: float | str  # the config's value: a number or "auto"

    @property
    def margin(self) -> float:
        return HEADROOM + VLLM_MARGIN * self.training

    @property
    def share(self) -> float:
        if self.setting != "auto":
            return float(self.setting)
        left = self.gpu_memory - self.training - self.margin
        return math.floor(max(0.0, left) / self.gpu_memory * 1000) / 1000

    @property
    def minimum(self) -> float:
        """vLLM's weights + one sequence of KV cache + its own activations."""
        return self.weights + self.kv_per_token * self.max_model_len + VLLM_OVERHEAD

    @property
    def kv_cache(self) -> float:
        return self.share * self.gpu_memory - self.weights - VLLM_OVERHEAD

    def table(self) -> str:
        g = GiB
        setting = "auto" if self.setting == "auto" else f"{self.share:g} (set)"
        lines = [
            f"vLLM's share (rollout.vllm_gpu_memory_utilization: {setting}): {self.share:.3f}"
            f" x {self.gpu_memory / g:.1f} GiB = {self.share * self.gpu_memory / g:.2f} GiB",
            f"  training peak {self.training / g:.2f} GiB, margin {self.margin / g:.2f} GiB "
            f"({HEADROOM / g:.0f} GiB + {VLLM_MARGIN:.0%} of the training peak)",
            f"  its weights (bfloat16) {self.weights / g:.2f} GiB, its activations and "
            f"CUDA graphs {VLLM_OVERHEAD / g:.2f} GiB",
            f"  KV cache {max(0.0, self.kv_cache) / g:.2f} GiB = "
            f"{max(0.0, self.kv_cache) / max(self.kv_per_token, 1.0):,.0f} tokens; one sequence of "
            f"max_model_len {self.max_model_len:,} needs "
            f"{self.kv_per_token * self.max_model_len / g:.2f} GiB",
        ]
        return "\n".join(lines)

    def problem(self) -> str | None:
        """Why vLLM cannot start beside this run, with the numbers and the fixes; None
        when it can."""
        g = GiB
        if self.setting != "auto" and self.training + HEADROOM + self.share * self.gpu_memory > (
            self.gpu_memory
        ):
            room = math.floor((self.gpu_memory - self.training - HEADROOM) / self.gpu_memory * 1000)
            return (
                f"rollout.vllm_gpu_memory_utilization {self.share:g} "
                f"({self.share * self.gpu_memory / g:.2f} GiB) does not fit beside the "
                f"training peak ({self.training / g:.2f} GiB + {HEADROOM / g:.0f} GiB) in "
                f"{self.gpu_memory / g:.1f} GiB: set it to auto (sized with a margin) or "
                f"at most {max(0, room) / 1000:.3f}"
            )
        if self.share * self.gpu_memory < self.minimum:
            return (
                f"vLLM's share of the GPU, {self.share * self.gpu_memory / g:.2f} GiB, is "
                f"less than it needs: {self.minimum / g:.2f} GiB for its weights "
                f"({self.weights / g:.2f}), one sequence of {self.max_model_len:,} tokens "
                f"of KV cache ({self.kv_per_token * self.max_model_len / g:.2f}) and its "
                f"own activations ({VLLM_OVERHEAD / g:.2f}), beside a training peak of "
                f"{self.training / g:.2f} GiB on a {self.gpu_memory / g:.1f} GiB GPU. "
                "Train a smaller model, or shrink the training side with model.lora or "
                "trainer.train_layers (or a smaller trainer.micro_batch_size, "
                "model.gradient_checkpointing), or set a smaller rollout.vllm_max_model_len"
            )
        return None


def vllm_share(config: TrainConfig, result: Plan, gpu_memory: float) -> VLLMShare:
    """vLLM's share of a ``gpu_memory``-byte GPU beside ``result`` (``config``'s plan)."""
    r = config.rollout
    return VLLMShare(
        gpu_memory=gpu_memory,
        training=result.peak,
        weights=result.params * VLLM_BYTES,
        kv_per_token=result.kv_per_token,
        max_model_len=r.vllm_max_model_len or result.max_positions,
        setting=r.vllm_gpu_memory_utilization,
    )


def vllm_memory_utilization(
    config: TrainConfig, gpu_memory: float, *, gpus: int = 1, hf_config: Any = None
) -> float:
    """``rollout.vllm_gpu_memory_utilization`` as the number vLLM takes (``auto`` sized
    from the plan), or a ``ValueError`` with the numbers when vLLM cannot fit."""
    share = vllm_share(config, plan(config, gpus=gpus, hf_config=hf_config), gpu_memory)
    problem = share.problem()
    if problem is not None:
        raise ValueError(f"{problem}\n{share.table()}")
    return share.share


def check_fits(config: TrainConfig, gpu_memory: float, gpus: int = 1) -> Plan:
    """The plan, or a ``ValueError`` with its table when the run cannot fit (with
    ``rollout.backend: vllm``, vLLM's share included): what ``train`` runs on CUDA before
    it loads any weight."""
    result = plan(config, gpus=gpus)
    if result.peak + HEADROOM > 0.9 * gpu_memory and result.fits(gpu_memory):
        logger.warning(
            "this run needs %.1f of the GPU's %.1f GiB (research-env plan):\n%s",
            (result.peak + HEADROOM) / GiB,
            gpu_memory / GiB,
            result.table(gpu_memory),
        )
    if not result.fits(gpu_memory):
        raise ValueError(
            "this run does not fit the GPU (research-env plan prints the same table; lower "
            "rollout.questions_per_step, rollout.max_total_tokens or trainer.micro_batch_size, "
            "or set model.gradient_checkpointing, model.lora, trainer.train_layers or "
            "trainer.sharding=fsdp):\n" + result.table(gpu_memory)
        )
    if config.rollout.backend == "vllm":
        share = vllm_share(config, result, gpu_memory)
        problem = share.problem()
        if problem is not None:
            raise ValueError(f"{problem}\n{result.table(gpu_memory)}\n{share.table()}")
    return result
