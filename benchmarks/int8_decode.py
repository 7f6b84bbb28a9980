"""Decode throughput and fidelity of 8-bit rollout copies against float32, on one CPU.

The candidates for ``rollout.rollout_dtype: int8`` side by side with the float32 copies and
``model.generate`` in float32, same prompts, same process, methods interleaved round by
round (as :mod:`benchmarks.decode_speed`, whose prompts and decoders it reuses):

- ``ours-fp32-packed`` / ``ours-fp32-fused``: the float32 rollout copies (packed oneDNN
  linears; and the fused Llama forward), what precision ``auto`` decodes with on a CPU
  without native bf16;
- ``ours-int8``: :mod:`algorithms.rollout.int8_copy` (fbgemm int8 linears, per-token
  activation scales, on the fused forward);
- ``ao-dynamic``: PyTorch's own ``torch.ao.quantization.quantize_dynamic`` on the fused copy
  (fbgemm, one activation scale per tensor, 7-bit activations; deprecated, warns);
- ``torchao-int8-dynamic`` / ``torchao-int8-weight-only``: torchao's
  ``Int8DynamicActivationInt8WeightConfig`` / ``Int8WeightOnlyConfig`` on the fused copy,
  when torchao is installed (rows are skipped otherwise).

Fidelity, per method: the k3 estimate of KL(copy || float32 model) per sampled token (what
the trainer logs as ``train/sampler_kl``; the float32 model's log-probs come from one full
forward pass per row) and how many of the 16 greedy continuations equal float32's.

    python -m benchmarks.int8_decode --avx2       # limits this process to AVX2 first
    python -m benchmarks.int8_decode --avx2 --rounds 3 --new-tokens 128

``--avx2`` re-runs the command with ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
MKL_ENABLE_INSTRUCTIONS=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2``: ATen's, oneDNN's, MKL's and
fbgemm's kernels as on a CPU with AVX2 and no AVX-512 (fbgemm would otherwise use AVX-512
VNNI int8 instructions an AVX2 CPU does not have).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import warnings
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

AVX2_LIMITS = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
}
METHODS = (
    "hf-generate-fp32",
    "ours-fp32-packed",
    "ours-fp32-fused",
    "ours-int8",
    "ao-dynamic",
    "torchao-int8-dynamic",
    "torchao-int8-weight-only",
)


def rerun_under_avx2_limits(module: str, argv: list[str] | None) -> None:
    """Unless this process already runs under :data:`AVX2_LIMITS`, run ``python -m module
    argv`` again with them set (they must be set before torch loads its kernels) and exit
    with its status."""
    if all(os.environ.get(k) == v for k, v in AVX2_LIMITS.items()):
        return
    args = sys.argv[1:] if argv is None else argv
    env = {**os.environ, **AVX2_LIMITS}
    command = [sys.executable, "-m", module, *args]
    raise SystemExit(subprocess.run(command, env=env, check=False).returncode)


def build_copy(model: Any, method: str) -> Any:
    """The weights ``method`` decodes with (``None`` when its library is missing)."""
    from algorithms.rollout import rollout_copy

    if method == "hf-generate-fp32":
        return model
    if method == "ours-fp32-packed":
        return rollout_copy(model, torch.float32, pack_weights=True, fused=False)
    if method == "ours-fp32-fused":
        return rollout_copy(model, torch.float32, pack_weights=True, fused=True)
    if method == "ours-int8":
        return rollout_copy(model, torch.int8)
    fused = rollout_copy(model, torch.float32, pack_weights=False, fused=True)
    if method == "ao-dynamic":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(
                fused, {torch.nn.Linear}, dtype=torch.qint8
            )
    try:
        from torchao.quantization import (
            Int8DynamicActivationInt8WeightConfig,
            Int8WeightOnlyConfig,
            quantize_,
        )
    except ImportError:
        return None
    dynamic = method == "torchao-int8-dynamic"
    quantize_(fused, Int8DynamicActivationInt8WeightConfig() if dynamic else Int8WeightOnlyConfig())
    return fused


def fidelity(
    model: Any, copy: Any, prompts: list[list[int]], new_tokens: int, reference: list[Any]
) -> tuple[float, int]:
    """(mean k3 KL of the copy's sampled tokens against ``model``, greedy rows equal to
    ``reference``, the float32 model's greedy rows)."""
    from algorithms.rollout import generate

    g = torch.Generator().manual_seed(1)
    sampled = generate(copy, prompts, max_new_tokens=new_tokens, eos_token_ids=(), generator=g)
    kls = []
    with torch.no_grad():
        for prompt, tokens, logprobs in zip(
            prompts, sampled.token_ids, sampled.logprobs, strict=True
        ):
            ids = torch.tensor([prompt + list(tokens)])
            full = torch.log_softmax(model(ids).logits[0, len(prompt) - 1 : -1].float(), -1)
            ref = full.gather(1, torch.tensor(list(tokens))[:, None])[:, 0]
            ratio = ref - torch.tensor(list(logprobs))
            kls.append(float((ratio.exp() - 1 - ratio).mean()))
    greedy = generate(copy, prompts, max_new_tokens=new_tokens, eos_token_ids=(), greedy=True)
    same = sum(a == b for a, b in zip(greedy.token_ids, reference, strict=True))
    return statistics.mean(kls), same


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="offline name or HF directory")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--fidelity-tokens", type=int, default=24, help="tokens per row for KL")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--avx2", action="store_true", help="limit the kernels to AVX2 first")
    args = parser.parse_args(argv)
    if args.avx2:
        rerun_under_avx2_limits("benchmarks.int8_decode", argv)

    from algorithms.policy import load_policy
    from benchmarks.decode_speed import build_method, make_prompts

    torch.set_num_threads(args.threads)
    policy = load_policy(args.model, device="cpu")
    model = policy.model.eval()
    prompts = make_prompts(policy.tokenizer, args.batch_size)
    copies, build_seconds = {}, {}
    for name in args.methods:
        start = time.perf_counter()
        built = build_copy(model, name)
        build_seconds[name] = time.perf_counter() - start
        if built is None:
            print(f"{name}: skipped (torchao is not installed)", flush=True)
            continue
        copies[name] = built
    runs = {}
    for name, weights in copies.items():
        decoder = "hf" if name.startswith("hf-") else "ours"
        runs[name] = build_method(decoder, weights, prompts, args.new_tokens, seed=0)
        build_method(decoder, weights, prompts[:2], 4, seed=0)()  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(args.rounds):
        for name, run in runs.items():
            cpu = time.process_time()
            tokens = run()
            rates[name].append(tokens / (time.process_time() - cpu))
            print(f"round {round_index} {name:26s} {rates[name][-1]:7.1f} tok/CPU-s", flush=True)

    capability = torch.backends.cpu.get_cpu_capability()
    limits = " ".join(f"{k}={os.environ[k]}" for k in AVX2_LIMITS if k in os.environ)
    lines = [
        f"model {args.model}, batch {args.batch_size}, {args.new_tokens} new tokens, threads "
        f"{torch.get_num_threads()}, {args.rounds} interleaved rounds (fidelity: "
        f"{args.fidelity_tokens} tokens per row), ATen kernels "
        f"{capability}, limits: {limits or 'none'}; load avg at end {os.getloadavg()[0]:.1f}",
        "",
        "| method | tok per CPU-s (median) | x ours-fp32-fused | x hf-generate-fp32 "
        "| k3 KL to fp32 per token | greedy rows = fp32 | copy built in s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    median = {name: statistics.median(values) for name, values in rates.items()}
    fused, hf = median.get("ours-fp32-fused"), median.get("hf-generate-fp32")
    from algorithms.rollout import generate

    n = args.fidelity_tokens
    reference = generate(model, prompts, max_new_tokens=n, eos_token_ids=(), greedy=True)
    for name in runs:
        if name == "hf-generate-fp32":  # the float32 model itself
            kl, same = 0.0, len(prompts)
        else:
            kl, same = fidelity(model, copies[name], prompts, n, reference.token_ids)
        ratio = f"{median[name] / fused:.2f}" if fused else "-"
        ratio_hf = f"{median[name] / hf:.2f}" if hf else "-"
        lines.append(
            f"| {name} | {median[name]:.1f} | {ratio} | {ratio_hf} | {kl:.4f} "
            f"| {same}/{len(prompts)} | {build_seconds[name]:.1f} |"
        )
        print(lines[-1], flush=True)
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
