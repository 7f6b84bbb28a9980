"""The value checks of :meth:`algorithms.config.TrainConfig.validate` on the shared
sections: ranges, the env's names (through research_env's registries) and the device,
each returning a list of problems so that one error can name them all before any heavy
work. An algorithm's own section is checked by its settings' ``validate`` (in the
algorithm's module), so no algorithm is named here."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from algorithms.config import TrainConfig


def range_problems(c: TrainConfig) -> list[str]:
    problems: list[str] = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    t, r, o = c.trainer, c.rollout, c.optim
    need(t.steps >= 1, f"trainer.steps (--steps) must be >= 1, got {t.steps}")
    need(t.epochs >= 1, f"trainer.epochs must be >= 1, got {t.epochs}")
    need(
        t.micro_batch_size >= 1, f"trainer.micro_batch_size must be >= 1, got {t.micro_batch_size}"
    )
    need(
        t.minibatch_size is None or t.minibatch_size >= 1,
        f"trainer.minibatch_size must be >= 1 or null, got {t.minibatch_size}",
    )
    need(
        t.logprob_chunk_size is None or t.logprob_chunk_size >= 1,
        f"trainer.logprob_chunk_size must be >= 1 or null, got {t.logprob_chunk_size}",
    )
    need(
        t.num_threads is None or t.num_threads >= 1,
        f"trainer.num_threads must be >= 1 or null, got {t.num_threads}",
    )
    need(t.seed >= 0, f"trainer.seed must be >= 0, got {t.seed}")
    need(
        r.questions_per_step >= 1,
        f"rollout.questions_per_step must be >= 1, got {r.questions_per_step}",
    )
    need(r.group_size >= 1, f"rollout.group_size must be >= 1, got {r.group_size}")
    need(
        r.max_sampling_rounds >= 1,
        f"rollout.max_sampling_rounds must be >= 1, got {r.max_sampling_rounds}",
    )
    need(
        r.dynamic_sampling == "off" or r.group_size >= 2,
        f"rollout.dynamic_sampling={r.dynamic_sampling} keeps groups whose episodes differ, "
        f"and a group of {r.group_size} episode(s) never does: set rollout.group_size >= 2 "
        "(8 where success is rare) or rollout.dynamic_sampling=off",
    )
    need(
        r.dynamic_sampling == "off" or c.algo != "sft",
        "rollout.dynamic_sampling picks which groups of the policy's own episodes to learn "
        "from, and the SFT warm start learns from demonstrations: set "
        "rollout.dynamic_sampling=off for algo sft",
    )
    need(r.temperature > 0, f"rollout.temperature must be > 0, got {r.temperature}")
    need(0 < r.top_p <= 1, f"rollout.top_p must be in (0, 1], got {r.top_p}")
    need(r.top_k >= 0, f"rollout.top_k must be >= 0 (0 = off), got {r.top_k}")
    need(r.max_turn_tokens >= 1, f"rollout.max_turn_tokens must be >= 1, got {r.max_turn_tokens}")
    need(
        r.max_total_tokens >= 1, f"rollout.max_total_tokens must be >= 1, got {r.max_total_tokens}"
    )
    need(o.lr >= 0, f"optim.lr must be >= 0, got {o.lr}")
    need(o.critic_lr is None or o.critic_lr > 0, f"optim.critic_lr must be > 0, got {o.critic_lr}")
    need(o.warmup_steps >= 0, f"optim.warmup_steps must be >= 0, got {o.warmup_steps}")
    need(0 <= o.min_lr_ratio <= 1, f"optim.min_lr_ratio must be in [0, 1], got {o.min_lr_ratio}")
    need(
        o.max_grad_norm is None or o.max_grad_norm > 0,
        f"optim.max_grad_norm must be > 0 or null, got {o.max_grad_norm}",
    )
    need(
        len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas),
        f"optim.betas must be two numbers in [0, 1), got {o.betas}",
    )
    need(c.env.top_k >= 1, f"env.top_k must be >= 1, got {c.env.top_k}")
    need(c.env.max_turns >= 1, f"env.max_turns must be >= 1, got {c.env.max_turns}")
    need(
        c.env.max_doc_words is None or c.env.max_doc_words >= 1,
        f"env.max_doc_words must be >= 1 or null (whole documents), got {c.env.max_doc_words}",
    )
    need(
        c.env.hops is None or (len(c.env.hops) > 0 and all(int(h) >= 1 for h in c.env.hops)),
        f"env.hops must be a non-empty list of hop counts >= 1 or null (all), got {c.env.hops}",
    )
    layers = c.trainer.train_layers
    need(
        layers is None or layers >= 1,
        f"trainer.train_layers must be >= 1 or null (train every layer), got {layers}",
    )
    need(
        layers is None or c.model.lora is None,
        "trainer.train_layers and model.lora both choose what trains: set one of them to null",
    )
    need(c.eval.every >= 0, f"eval.every must be >= 0 (0 = never), got {c.eval.every}")
    need(c.eval.questions >= 1, f"eval.questions must be >= 1, got {c.eval.questions}")
    need(c.eval.temperature >= 0, f"eval.temperature must be >= 0, got {c.eval.temperature}")
    need(c.logging.every >= 0, f"logging.every must be >= 0, got {c.logging.every}")
    need(
        c.logging.save_transcripts >= 0,
        f"logging.save_transcripts must be >= 0 (0 = none), got {c.logging.save_transcripts}",
    )
    need(
        c.checkpoint.every >= 0,
        f"checkpoint.every must be >= 0 (0 = only at the end), got {c.checkpoint.every}",
    )
    need(
        c.checkpoint.keep_last >= 1,
        f"checkpoint.keep_last must be >= 1, got {c.checkpoint.keep_last}",
    )
    if c.model.lora is not None:
        need(c.model.lora.r >= 1, f"model.lora.r must be >= 1, got {c.model.lora.r}")
        need(
            0 <= c.model.lora.dropout < 1,
            f"model.lora.dropout must be in [0, 1), got {c.model.lora.dropout}",
        )
        need(bool(c.model.lora.target_modules), "model.lora.target_modules must not be empty")
    need(
        c.model.dtype in _DTYPES,
        f"model.dtype must be one of {sorted(_DTYPES)}, got {c.model.dtype!r}",
    )
    from algorithms.precision import ROLLOUT_DTYPES

    need(
        c.rollout.rollout_dtype is None or c.rollout.rollout_dtype in ROLLOUT_DTYPES,
        f"rollout.rollout_dtype must be null or one of {list(ROLLOUT_DTYPES)}, "
        f"got {c.rollout.rollout_dtype!r}",
    )
    return problems  # fmt: skip


_DTYPES = frozenset({"float32", "fp32", "bfloat16", "bf16", "float16", "fp16"})

_STEPS = 10**8  # steps, intervals and counts of questions
_COEF = (0.0, 1e3)  # loss weights
# The range of every numeric setting: far beyond any sane run, so that a typo (1e999 =
# inf, a group of 1e20 episodes) is refused before it reaches the model or the memory.
# A numeric setting not listed here gets _INT_RANGE or _FLOAT_RANGE.
BOUNDS: dict[str, tuple[float, float]] = {
    "model.lora.r": (1, 4096), "model.lora.alpha": (1, 65_536), "model.lora.dropout": (0, 1),
    "env.top_k": (1, 1000), "env.max_turns": (1, 10_000), "env.max_doc_words": (1, 2**20),
    "env.search_cost": (-100, 100), "env.shaping.retrieval_gain": (-100, 100),
    "env.shaping.redundant_query": (-100, 100), "env.shaping.no_search_multihop": (-100, 100),
    "rollout.questions_per_step": (1, 65_536), "rollout.group_size": (1, 1024),
    "rollout.temperature": (0, 100), "rollout.top_p": (0, 1), "rollout.top_k": (0, 2**24),
    "rollout.max_turn_tokens": (1, 2**20), "rollout.max_total_tokens": (1, 2**22),
    "rollout.vllm_gpu_memory_utilization": (0, 1), "rollout.vllm_max_model_len": (1, 2**22),
    "rollout.max_sampling_rounds": (1, 1000),
    "optim.lr": (0, 1), "optim.critic_lr": (0, 1), "optim.betas": (0, 1), "optim.eps": (0, 1),
    "optim.weight_decay": (0, 10), "optim.max_grad_norm": (0, 1e6),
    "optim.warmup_steps": (0, _STEPS), "optim.min_lr_ratio": (0, 1),
    "trainer.steps": (1, _STEPS), "trainer.epochs": (1, 1000),
    "trainer.minibatch_size": (1, 2**20), "trainer.micro_batch_size": (1, 65_536),
    "trainer.logprob_chunk_size": (1, 2**22), "trainer.train_layers": (1, 10_000),
    "trainer.tis_cap": (0, 1e6), "trainer.seed": (0, 2**63 - 1), "trainer.num_threads": (1, 4096),
    "eval.every": (0, _STEPS), "eval.questions": (1, _STEPS), "eval.temperature": (0, 100),
    "logging.every": (0, _STEPS), "logging.save_transcripts": (0, _STEPS),
    "checkpoint.every": (0, _STEPS), "checkpoint.keep_last": (1, 10**6),
    "grpo.clip_low": (0, 10), "grpo.clip_high": (0, 10), "grpo.kl_coef": _COEF,
    "grpo.entropy_coef": (-1e3, 1e3),
    "ppo.clip_low": (0, 10), "ppo.clip_high": (0, 10), "ppo.kl_coef": _COEF,
    "ppo.entropy_coef": (-1e3, 1e3), "ppo.vf_coef": _COEF, "ppo.vf_clip": (0, 1e6),
    "ppo.gamma": (0, 1), "ppo.lam": (0, 1),
    "reinforce.kl_coef": _COEF, "reinforce.gamma": (0, 1), "reinforce.entropy_coef": (-1e3, 1e3),
    "sft.min_reward": (-1e6, 1e6),
}  # fmt: skip
_INT_RANGE = (-(2**31), 2**31 - 1)
_FLOAT_RANGE = (-1e9, 1e9)


def bound_problems(c: TrainConfig, earlier: Sequence[str] = ()) -> list[str]:
    """Every numeric setting is finite and within its range in :data:`BOUNDS`.

    A finite setting already named by ``earlier`` (the finer checks of
    :func:`range_problems`) is not named again.
    """
    problems: list[str] = []
    for path, value in _numbers(c, ""):
        key = path.split("[")[0]
        default = _INT_RANGE if isinstance(value, int) else _FLOAT_RANGE
        low, high = BOUNDS.get(key, default)
        span = f"[{_shown(low)}, {_shown(high)}]"
        if not math.isfinite(value):
            problems.append(f"{path} must be a finite number in {span}, got {value}")
        elif not low <= value <= high and not any(p.startswith(key + " ") for p in earlier):
            problems.append(f"{path} must be in {span}, got {_shown(value)}")
    return problems


def _shown(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 2**64 else f"{x:g}"


def _numbers(node: object, prefix: str) -> Iterator[tuple[str, float]]:
    """(dotted path, value) of every int or float setting below ``node``, lists included."""
    for item in dataclasses.fields(node):  # type: ignore[arg-type]
        value = getattr(node, item.name)
        path = f"{prefix}{item.name}"
        if dataclasses.is_dataclass(value):
            yield from _numbers(value, path + ".")
        elif isinstance(value, dict):  # the algorithms' own sections, by name
            for name, section in value.items():
                if dataclasses.is_dataclass(section):
                    yield from _numbers(section, f"{name}.")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    yield f"{path}[{i}]", v
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield path, value


def name_problems(c: TrainConfig) -> list[str]:
    """The names the env resolves, checked through research_env's registries (no torch,
    no model, no index: a dataset name or path is looked up, not read)."""
    from algorithms.registry import available_algorithms
    from research_env import data, sources
    from research_env.rewards import get_reward
    from research_env.templates import get_template

    problems: list[str] = []
    if c.algo not in available_algorithms():
        problems.append(f"algo must be one of {available_algorithms()}, got {c.algo!r}")
    for key, check in (
        ("reward", lambda name: get_reward(name, c.env.reward_kwargs)),
        ("template", get_template),
    ):
        try:
            check(getattr(c.env, key))
        except (ValueError, TypeError) as err:
            problems.append(f"env.{key}: {err}")
    splits = [("env.split", c.env.split)]
    if c.eval.every:
        splits.append(("eval.split", c.eval.split))
    dataset = c.env.dataset
    named = data.DATASETS.get(dataset)
    if named is not None:
        for key, split in splits:
            if split not in named.splits:
                problems.append(
                    f"{key}: dataset {dataset!r} has no split {split!r}; choose one of "
                    f"{list(named.splits)}"
                )
    elif not dataset.startswith("hf:") and not Path(dataset).expanduser().exists():
        problems.append(
            f"env.dataset: unknown dataset {dataset!r}: not a dataset name "
            f"({', '.join(sorted(data.DATASETS))}) and no such file or directory"
        )
    retriever = c.env.retriever
    if not retriever.startswith(("http://", "https://")) and retriever not in sources.RETRIEVERS:
        problems.append(
            f"env.retriever: unknown retriever {retriever!r}; choose one of "
            f"{sorted(sources.RETRIEVERS)} or a server URL (http://host:port)"
        )
    if c.env.corpus is not None and not Path(c.env.corpus).expanduser().exists():
        problems.append(f"env.corpus: no such file {c.env.corpus!r}")
    return problems


def device_problems(device: str) -> list[str]:
    import torch

    if device == "auto":
        return []
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        return [
            f"model.device (--device): {device!r} is not a device; use auto, cpu, cuda or cuda:N"
        ]
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return [f"model.device (--device) is {device!r}, but this machine has no CUDA GPU"]
        if parsed.index is not None and parsed.index >= count:
            return [
                f"model.device (--device) is {device!r}, but this machine has {count} CUDA "
                f"GPU(s): cuda:0 to cuda:{count - 1}"
            ]
    elif parsed.type not in ("cpu", "mps", "xpu", "meta"):
        return [f"model.device (--device): unsupported device {device!r}"]
    return []


def sharding_problems(c: TrainConfig, check_launch: bool = True) -> list[str]:
    """What ``trainer.sharding: fsdp`` needs (see :mod:`algorithms.trainer.fsdp`): ranks to
    shard over (``check_launch``: this process is one of them; not asked of a plan for
    other machines), and every rank running the same forward and backward passes, because
    each pass of a sharded block is a collective that all ranks join."""
    if c.trainer.sharding != "fsdp":
        return []
    import os

    from algorithms.trainer.distributed import is_distributed

    problems: list[str] = []
    if check_launch and not is_distributed() and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        problems.append(
            "trainer.sharding: fsdp shards the model over the ranks of a distributed launch, "
            "and this process runs alone: launch it with torchrun --nproc-per-node N (N >= 2) "
            "or accelerate launch, or set trainer.sharding=none (a checkpoint written under "
            "FSDP holds the full model and resumes without it)"
        )
    if c.trainer.share_prompts:
        problems.append(
            "trainer.sharding: fsdp needs trainer.share_prompts=false (prompt sharing picks a "
            "number of passes per micro-batch from each rank's data, and sharded ranks must "
            "run the same passes)"
        )
    if c.trainer.filter_zero_variance_groups:
        problems.append(
            "trainer.sharding: fsdp needs trainer.filter_zero_variance_groups=false (it "
            "drops a different number of episodes on each rank, and sharded ranks must run "
            "the same passes)"
        )
    if c.rollout.dynamic_sampling != "off":
        problems.append(
            "trainer.sharding: fsdp needs rollout.dynamic_sampling=off (each rank would keep "
            "a different number of groups, and sharded ranks must run the same passes)"
        )
    if c.trainer.train_layers is not None:
        problems.append(
            "trainer.sharding: fsdp and trainer.train_layers are not tested together (the "
            "root shard would mix a frozen tied head with a trained final norm): set "
            "trainer.train_layers=null, or use model.lora to train fewer parameters"
        )
    return problems


def precision_problems(c: TrainConfig) -> list[str]:
    """float16 training needs loss scaling (a ``GradScaler``), which the trainer does not
    do: small gradients underflow to 0 in float16 and large ones overflow, so such a run
    silently learns less or skips its steps. bfloat16 has float32's range and needs none."""
    problems: list[str] = []
    if c.model.dtype in ("float16", "fp16"):
        problems.append(
            f"model.dtype={c.model.dtype} trains without loss scaling, where gradients "
            "underflow: set model.dtype=bfloat16 (float32 master weights keep small steps; "
            "optim.master_weights) or float32"
        )
    if c.trainer.autocast_dtype == "float16":
        problems.append(
            "trainer.autocast_dtype=float16 trains without loss scaling, where gradients "
            "underflow: set trainer.autocast_dtype=bfloat16 (or auto)"
        )
    return problems
