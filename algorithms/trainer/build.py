"""What an algorithm object is built from, before its first step: the seeds, the rollout
engine and its backend (the HF decoder or vLLM), the frozen KL reference, and the config
made to describe the policy actually passed in."""

from __future__ import annotations

import copy
import logging
import random
from typing import Any

import numpy as np
import torch

from algorithms.config import TrainConfig
from algorithms.policy import Policy

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def frozen_copy(model: Any) -> Any:
    """A frozen copy of ``model``: the KL reference of a full fine-tune."""
    reference = copy.deepcopy(model)
    reference.eval().requires_grad_(False)
    return reference


def vllm_backend(config: TrainConfig, policy: Policy) -> Any:
    """The colocated vLLM engine ``rollout.backend: vllm`` asks for (one per run: the
    training and the evaluation engines share it)."""
    from algorithms.rollout.vllm_backend import VLLMBackend

    r = config.rollout
    share = r.vllm_gpu_memory_utilization
    if share == "auto":
        share = auto_vllm_share(config, policy)
    return VLLMBackend.create(
        r.vllm_model or policy.model.config._name_or_path,
        gpu_memory_utilization=share,
        max_model_len=r.vllm_max_model_len,
        seed=config.trainer.seed,
        sleep=r.vllm_sleep,
    )


def gpu_memory(policy: Policy) -> float | None:
    """The memory of the GPU the policy is on (None off CUDA)."""
    device = next(policy.model.parameters()).device
    if device.type != "cuda":
        return None
    return float(torch.cuda.get_device_properties(device).total_memory)


def auto_vllm_share(config: TrainConfig, policy: Policy) -> float:
    """``rollout.vllm_gpu_memory_utilization: auto`` for this run on this GPU, from the
    memory planner (before vLLM starts); a ``ValueError`` when vLLM cannot fit."""
    from algorithms.planner import vllm_memory_utilization
    from algorithms.trainer.distributed import world_size

    total = gpu_memory(policy)
    if total is None:
        raise ValueError(
            "rollout.vllm_gpu_memory_utilization: auto sizes vLLM's share of the GPU, but "
            "the policy is not on a CUDA device (vLLM runs on CUDA only): set "
            "model.device: cuda, or rollout.backend: hf"
        )
    share = vllm_memory_utilization(config, total, gpus=world_size(), hf_config=policy.model.config)
    logger.info("vLLM's share of the GPU (rollout.vllm_gpu_memory_utilization: auto): %.3f", share)
    return share


def rollout_engine(
    config: TrainConfig, policy: Policy, env_kwargs: dict[str, Any], backend: Any = None
) -> Any:
    """The rollout engine of ``config.rollout`` over ``env_kwargs``'s env."""
    from algorithms.rollout import RolloutEngine

    r = config.rollout
    return RolloutEngine(
        policy,
        env_kwargs,
        sampling=r.sampling(),
        prompt_format=r.prompt_format,
        rollout_dtype=r.rollout_dtype,
        pack_weights=r.pack_weights,
        fused=r.fused,
        backend=backend,
    )


def sync_model_config(config: TrainConfig, policy: Policy) -> None:
    """Make ``config.model`` describe the policy actually passed in (checkpoints rely on it)."""
    from algorithms.config import LoraConfig

    config.model.name = policy.name
    dtype = next(p.dtype for p in policy.model.parameters() if p.is_floating_point())
    config.model.dtype = str(dtype).removeprefix("torch.")
    if policy.lora is not None:
        lora = policy.lora
        config.model.lora = LoraConfig(
            r=lora.r, alpha=lora.alpha, dropout=lora.dropout,
            target_modules=list(lora.target_modules),
        )  # fmt: skip
    else:
        config.model.lora = None
