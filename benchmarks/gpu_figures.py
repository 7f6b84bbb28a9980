"""The measurements of ``python -m benchmarks.gpu_check --full``: one JSON of what the first
GPU run must tell (see gpu_check's docstring for the command and what to record).

Every model is randomly initialised (seeded) at a real architecture's shape, built directly
on the device; token ids are random, so no tokenizer's vocabulary limits the shapes. Each
section is a function returning a dict; ``SIZES`` says how big each runs: ``gpu`` (the
real shapes, about 5 minutes on one H100) or ``tiny`` (the suite's CPU run, seconds).
"""

from __future__ import annotations

import platform
import time
from typing import Any

import torch

SIZES: dict[str, dict[str, Any]] = {
    "gpu": dict(
        learn_shape="qwen2.5-0.5b", parity_shape="qwen2.5-0.5b", update_shape="qwen2.5-0.5b",
        decode_shape="qwen2.5-1.5b", decode_rows=160, prompt_tokens=256, new_tokens=128,
        update_rows=4, update_tokens=1024,
        plan_shapes=["qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b"],
    ),
    "tiny": dict(
        learn_shape="tiny", parity_shape="tiny", update_shape="tiny",
        decode_shape="tiny", decode_rows=4, prompt_tokens=16, new_tokens=8,
        update_rows=2, update_tokens=64, plan_shapes=["tiny"],
    ),
}  # fmt: skip
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, tie_word_embeddings=True, vocab_size=1000)  # fmt: skip


def hf_config(shape: str) -> Any:
    from transformers import Qwen2Config

    from algorithms.planner import shape_config

    config = Qwen2Config(**TINY) if shape == "tiny" else shape_config(shape)
    config._attn_implementation = "sdpa"
    return config


def build(shape: str, dtype: torch.dtype, device: torch.device, tokenizer: Any) -> Any:
    """A seeded random policy of ``shape`` on ``device`` (initialised there: a 3B model's
    random init on a host CPU would take minutes)."""
    from transformers import AutoModelForCausalLM

    from algorithms.policy import Policy

    cuda = [torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(0)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(hf_config(shape), dtype=dtype)
    model.config.pad_token_id = tokenizer.pad_token_id
    return Policy(model.eval(), tokenizer, shape, device)


def algorithm(policy: Any, rows: int, tokens: int, lr: float = 1e-6, **overrides: Any) -> Any:
    from algorithms.config import TrainConfig
    from algorithms.grpo import GRPO

    config = TrainConfig(algo="grpo").with_overrides({
        "output_dir": "/tmp/gpu-figures", "logging.wandb": False, "optim.lr": lr,
        "model.dtype": str(next(policy.model.parameters()).dtype).removeprefix("torch."),
        "model.device": str(policy.device), "rollout.group_size": rows,
        "rollout.max_total_tokens": tokens, "trainer.micro_batch_size": rows,
        "grpo.kl_coef": 0.0, **overrides,
    })  # fmt: skip
    return GRPO(policy, config=config)


def episodes(rows: int, tokens: int, vocab: int) -> list[Any]:
    from benchmarks.plan_check import episodes as make

    return make(rows, tokens, vocab)


def versions(device: torch.device) -> dict[str, Any]:
    import transformers

    out: dict[str, Any] = {"torch": torch.__version__, "transformers": transformers.__version__,
                           "python": platform.python_version(), "device": str(device)}  # fmt: skip
    if device.type == "cuda":
        out |= {
            "cuda": torch.version.cuda, "name": torch.cuda.get_device_name(device),
            "capability": list(torch.cuda.get_device_capability(device)),
            "bf16_supported": torch.cuda.is_bf16_supported(),
            "memory_gib": torch.cuda.get_device_properties(device).total_memory / 2**30,
        }  # fmt: skip
    try:
        import vllm  # type: ignore[import-not-found]

        out["vllm"] = vllm.__version__
    except ImportError:
        out["vllm"] = None
    return out


def bf16_learns(size: dict[str, Any], device: torch.device, tokenizer: Any) -> dict[str, Any]:
    """One GRPO step at lr 1e-6 with bf16 weights: the fraction of master elements moved."""
    from algorithms.trainer.optim import master_weights_by_name

    policy = build(size["learn_shape"], torch.bfloat16, device, tokenizer)
    before = {k: v.detach().clone() for k, v in policy.model.state_dict().items()}
    algo = algorithm(policy, size["update_rows"], size["update_tokens"])
    algo.learn_from(episodes(size["update_rows"], size["update_tokens"], _vocab(policy)))
    masters = master_weights_by_name(algo.optimizer, policy.model)
    moved = sum(int((masters[k] != before[k].float()).sum()) for k in masters)
    total = sum(masters[k].numel() for k in masters)
    result = {"masters_moved_fraction": moved / max(total, 1), "lr": 1e-6}
    result["passed"] = result["masters_moved_fraction"] > 0.99
    return result


def parity(size: dict[str, Any], device: torch.device, tokenizer: Any) -> dict[str, Any]:
    """One update of the same model and batch on the CPU (float32) and on ``device`` (in
    float32 and bf16): per-token log-probs before it, then its loss and grad norm."""
    from algorithms.buffer import collate
    from algorithms.scoring import score_batch

    shape, rows, tokens = size["parity_shape"], size["update_rows"], size["update_tokens"]
    runs: dict[str, dict[str, Any]] = {}
    for name, dev, dtype in (("cpu", torch.device("cpu"), torch.float32),
                             ("float32", device, torch.float32),
                             ("bfloat16", device, torch.bfloat16)):  # fmt: skip
        policy = build(shape, dtype, dev, tokenizer)
        batch_episodes = episodes(rows, tokens, _vocab(policy))
        batch = collate(batch_episodes, tokenizer.pad_token_id, device=dev)
        logprobs = score_batch(policy.model, batch).logprobs.float().cpu()
        off = {"trainer.autocast_dtype": "float32"}  # float32 means float32 (no autocast)
        metrics = algorithm(policy, rows, tokens, lr=1e-4, **off).learn_from(batch_episodes)
        runs[name] = {"logprobs": logprobs, "loss": metrics["train/loss"],
                      "grad_norm": metrics["train/grad_norm"]}  # fmt: skip
    reference = runs["cpu"]
    out: dict[str, Any] = {}
    for name in ("float32", "bfloat16"):
        run = runs[name]
        out[name] = {
            "logprob_max_abs_diff": float((run["logprobs"] - reference["logprobs"]).abs().max()),
            "loss": run["loss"], "loss_cpu": reference["loss"],
            "grad_norm": run["grad_norm"], "grad_norm_cpu": reference["grad_norm"],
        }  # fmt: skip
    return out


def decode_speed(size: dict[str, Any], device: torch.device, tokenizer: Any) -> dict[str, Any]:
    """Tokens/s of our decoder and of HF ``generate``, bf16, every row generating exactly
    ``new_tokens`` (no EOS), at the decode shape (a 150k vocabulary at the gpu size)."""
    from algorithms.rollout.decoder import generate

    policy = build(size["decode_shape"], torch.bfloat16, device, tokenizer)
    rows, width, new = size["decode_rows"], size["prompt_tokens"], size["new_tokens"]
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(100, _vocab(policy), (rows, width), generator=g)
    out: dict[str, Any] = {"rows": rows, "prompt_tokens": width, "new_tokens": new}

    def ours() -> None:
        generate(policy.model, prompts.tolist(), max_new_tokens=new, eos_token_ids=(),
                 generator=torch.Generator().manual_seed(1))  # fmt: skip

    def hf() -> None:
        ids = prompts.to(device)
        with torch.inference_mode():
            policy.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                  do_sample=True, top_k=0, top_p=1.0, max_new_tokens=new,
                                  min_new_tokens=new, pad_token_id=tokenizer.pad_token_id)  # fmt: skip

    for name, run in (("ours", ours), ("hf_generate", hf)):
        seconds = _timed(run, device)
        out[f"{name}_tokens_per_s"] = rows * new / seconds
    return out


def update_speed(size: dict[str, Any], device: torch.device, tokenizer: Any) -> dict[str, Any]:
    """Update tokens/s of a GRPO step with bf16 weights (fp32 masters), fp32 weights, and
    fp32 weights under bf16 autocast (the CUDA default for fp32 weights)."""
    out: dict[str, Any] = {}
    rows, tokens = size["update_rows"], size["update_tokens"]
    runs = (("bfloat16", torch.bfloat16, "float32"), ("float32", torch.float32, "float32"),
            ("float32_autocast_bf16", torch.float32, "bfloat16"))  # fmt: skip
    for name, dtype, autocast in runs:
        policy = build(size["update_shape"], dtype, device, tokenizer)
        algo = algorithm(policy, rows, tokens, **{"trainer.autocast_dtype": autocast})
        batch = episodes(rows, tokens, _vocab(policy))
        algo.learn_from(batch)  # warm-up: kernels, optimizer state
        out[f"{name}_tokens_per_s"] = algo.learn_from(batch)["perf/update_tokens_per_s"]
        del algo, policy
        _empty(device)
    return out


def planner_vs_measured(size: dict[str, Any], device: torch.device, tokenizer: Any) -> dict:
    """The planner's update phase against the measured peak of two GRPO steps, bf16 weights
    with gradient checkpointing, per shape (``max_memory_allocated`` on CUDA; live tensor
    storage on a CPU)."""
    from algorithms.planner import plan
    from benchmarks.plan_check import LiveTensorBytes

    out: dict[str, Any] = {}
    rows, tokens = size["update_rows"], size["update_tokens"]
    for shape in size["plan_shapes"]:
        _empty(device)
        tracker = LiveTensorBytes()
        with tracker.mode if device.type == "cpu" else _nothing():
            policy = build(shape, torch.bfloat16, device, tokenizer)
            from algorithms.policy import set_gradient_checkpointing

            set_gradient_checkpointing(policy.model, True)
            algo = algorithm(policy, rows, tokens, **{"model.gradient_checkpointing": True})
            batch = episodes(rows, tokens, _vocab(policy))
            for _ in range(2):
                algo.learn_from(batch)
        if device.type == "cuda":
            measured = torch.cuda.max_memory_allocated(device)
        else:
            measured = tracker.peak
        planned = plan(algo.config, hf_config=hf_config(shape), device=device.type)
        out[shape] = {
            "planned_update_gib": planned.update_phase / 2**30,
            "measured_peak_gib": measured / 2**30,
            "error_pct": 100 * (planned.update_phase - measured) / measured,
        }
        del algo, policy
    return out


def _vocab(policy: Any) -> int:
    return int(policy.model.config.vocab_size)


def _timed(run: Any, device: torch.device) -> float:
    run()  # warm-up
    _sync(device)
    start = time.perf_counter()
    run()
    _sync(device)
    return max(time.perf_counter() - start, 1e-9)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _empty(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


SECTIONS = {
    "bf16_learning": bf16_learns,
    "parity": parity,
    "decode": decode_speed,
    "update": update_speed,
    "planner": planner_vs_measured,
}


def run_all(size_name: str, device: torch.device, tokenizer: Any) -> dict[str, Any]:
    """Every section; a section that fails records its error and the others still run."""
    size = SIZES[size_name]
    figures: dict[str, Any] = {"size": size_name, "versions": versions(device)}
    for name, section in SECTIONS.items():
        start = time.perf_counter()
        try:
            figures[name] = section(size, device, tokenizer)
        except Exception as err:  # one JSON with every section's outcome
            figures[name] = {"error": f"{type(err).__name__}: {err}"}
        figures[name]["seconds"] = time.perf_counter() - start
        _empty(device)
    figures["passed"] = all("error" not in figures[name] for name in SECTIONS) and bool(
        figures["bf16_learning"].get("passed")
    )
    return figures
