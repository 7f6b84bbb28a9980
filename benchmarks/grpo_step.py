"""One GRPO training step: ours vs TRL's ``GRPOTrainer`` on this CPU, in the same run.

Same model (SmolLM2-135M, float32), same two prompts (synthetic train questions rendered with
the ``research-chat`` template as plain text), group size 4 (8 completions per step),
exactly 64 generated tokens per completion (EOS and stop strings disabled on both sides so
the work is identical; TRL gets ``min_new_tokens=64``), KL beta 0.001 (k3), learning rate
1e-6, the same reward (token F1 of the completion against the golden answers).

Each side runs in its own process (clean peak memory), ``--steps`` steps; the first step
pays one-off setup (env and index loading, lazy inits) and is reported apart. Per step we
time generation, the log-prob passes (ours: the reference model; TRL: its reference and any
old-policy pass) and the update (forward + backward + optimizer). Achieved FLOP/s of the
update counts ``6 x parameters x tokens`` (the issue's convention) and is compared with a
float32 matmul measured in a separate process with the same thread count.

    python -m benchmarks.grpo_step                      # ours (4 variants) and TRL; 3 steps
    python -m benchmarks.grpo_step --threads 2 --sides ours trl trl-no-ckpt

Sides: ``ours`` decodes with the float32 policy itself; ``ours-packed`` with a float32 copy
whose linears are pre-packed for oneDNN (same numbers, faster kernels); ``ours-bf16-rollout``
with a bfloat16 packed copy (training stays float32; pi_old is then the float32 policy);
``ours-int8-rollout`` with the 8-bit copy (``rollout.rollout_dtype: int8``, for CPUs without
bf16: run the command under the AVX2 limits of ``benchmarks.int8_decode --avx2`` to see
such a CPU);
``ours-lora`` trains LoRA adapters (r=16, attention) in micro-batches of one group;
``trl`` is ``GRPOTrainer`` with its defaults (gradient checkpointing on), ``trl-no-ckpt``
without gradient checkpointing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

QUESTIONS = 2
GROUP = 4
COMPLETION_TOKENS = 64
BETA = 0.001
LR = 1e-6
TEMPLATE = "research-chat"
SIDES = ("ours", "ours-packed", "ours-bf16-rollout", "ours-int8-rollout", "ours-lora", "trl",
         "trl-no-ckpt")  # fmt: skip


# --------------------------------------------------------------------------------------
# Shared task
# --------------------------------------------------------------------------------------


def task_prompts() -> list[tuple[str, tuple[str, ...]]]:
    """(prompt text, golden answers) of the first train questions, as the env renders them."""
    from research_env.env import MultiHopSearchEnv

    env = MultiHopSearchEnv(template=TEMPLATE, max_turns=1)
    out = []
    for index in range(QUESTIONS):
        prompt, _ = env.reset(options={"index": index})
        out.append((prompt, env.samples[index].golden_answers))
    return out


def completion_reward(text: str, golden: tuple[str, ...] | list[str]) -> float:
    from research_env.rewards import f1_score

    return f1_score(text, list(golden))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakRss:
    """Peak resident memory while a block runs, sampled every 5 ms from /proc (Linux)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self.peak = self.current()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Clock:
    """Wall and process-CPU seconds spent in wrapped callables, by phase name.

    With one torch thread, CPU seconds approximate the time on an idle core even while
    neighbours load the machine; wall seconds are what a user waits."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def wrap(self, phase: str, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.wall[phase] = self.wall.get(phase, 0.0) + time.perf_counter() - wall
                self.cpu[phase] = self.cpu.get(phase, 0.0) + time.process_time() - cpu

        return timed

    def take(self) -> tuple[dict[str, float], dict[str, float]]:
        wall, cpu = self.wall, self.cpu
        self.wall, self.cpu = {}, {}
        return wall, cpu


# --------------------------------------------------------------------------------------
# Ours
# --------------------------------------------------------------------------------------


def run_ours(
    steps: int,
    threads: int,
    *,
    lora: bool = False,
    rollout_dtype: str | None = None,
    pack_weights: bool = False,
    micro_batch: int = QUESTIONS * GROUP,
) -> dict[str, Any]:
    import torch

    import algorithms.rollout.decoder as decoding
    from algorithms.config import TrainConfig
    from algorithms.grpo import GRPO
    from algorithms.policy import LoraSettings, load_policy

    torch.set_num_threads(threads)
    # Exactly COMPLETION_TOKENS tokens per completion, as TRL's min_new_tokens gives: no EOS
    # here, no stop strings on the engine below.
    decoding._eos_ids = lambda model, tokenizer: []  # type: ignore[assignment]

    policy = load_policy(
        "smollm2-135m", dtype="float32", device="cpu", lora=LoraSettings() if lora else None
    )
    n_params = sum(p.numel() for p in policy.model.parameters())
    config = TrainConfig().with_overrides(
        {
            "rollout.questions_per_step": QUESTIONS,
            "rollout.group_size": GROUP,
            "rollout.max_turn_tokens": COMPLETION_TOKENS,
            "rollout.max_total_tokens": COMPLETION_TOKENS,
            "rollout.prompt_format": "text",
            "rollout.rollout_dtype": rollout_dtype,
            "rollout.pack_weights": pack_weights,
            "grpo.kl_coef": BETA,
            "grpo.kl_estimator": "k3",
            "optim.lr": LR,
            "trainer.micro_batch_size": micro_batch,
            "trainer.num_threads": threads,
            "output_dir": "/tmp/grpo_step_bench",
            "logging.wandb": False,
            "logging.progress_bar": False,
            "logging.every": 0,
            "checkpoint.every": 0,
            "checkpoint.export_final": False,
        }
    )

    def reward(record) -> float:
        return completion_reward(record.turns[0], record.golden_answers)

    env_kwargs = {"dataset": "synthetic", "split": "train", "template": TEMPLATE}
    env_kwargs |= {"max_turns": 1, "reward": reward}
    algo = GRPO(policy, env_kwargs, config)
    algo.engine.stop_strings = ()
    algo.question_indices = lambda step: list(range(QUESTIONS))  # the same two prompts
    clock = Clock()
    collect = clock.wrap("generation", algo.collect_rollouts)
    executed: list[float] = []

    def collect_rollouts(step: int):
        trajectories = collect(step)
        # Tokens the update really runs: each distinct prompt once, plus every response.
        prompts = {tuple(t.prompt_ids) for t in trajectories}
        executed.append(
            sum(map(len, prompts)) + sum(len(t.response_ids) for t in trajectories)
            if config.trainer.share_prompts
            else sum(len(t.prompt_ids) + len(t.response_ids) for t in trajectories)
        )
        return trajectories

    algo.collect_rollouts = collect_rollouts
    # The no-grad passes and the update are functions the step pipeline calls by name.
    import algorithms.trainer.step as step_pipeline

    step_pipeline.prepare_update = clock.wrap("logprob", step_pipeline.prepare_update)  # type: ignore[assignment]
    step_pipeline.run_update = clock.wrap("update", step_pipeline.run_update)  # type: ignore[assignment]
    train_step = clock.wrap("step", algo.train_step)

    records = []
    for _ in range(steps):
        with PeakRss() as peak:
            metrics = train_step()
        wall, cpu = clock.take()
        records.append(
            {
                **wall,
                **{f"{k}_cpu": v for k, v in cpu.items()},
                "generated_tokens": metrics["response/generated_tokens"] * QUESTIONS * GROUP,
                "update_tokens": metrics["perf/update_tokens"],
                "executed_tokens": executed.pop(),
                "peak_rss_mb": peak.peak / 2**20,
                "reward": metrics["episode/reward"],
            }
        )
    return {"params": n_params, "steps": records, "process_peak_rss_mb": _peak_rss_mb()}


# --------------------------------------------------------------------------------------
# TRL
# --------------------------------------------------------------------------------------


def run_trl(steps: int, threads: int, gradient_checkpointing: bool | None) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from algorithms.model_zoo import cache_dir
    from algorithms.policy import load_policy

    torch.set_num_threads(threads)
    load_policy("smollm2-135m")  # makes sure the plain HF copy exists
    model_dir = cache_dir() / "models" / "smollm2-135m"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    prompts = task_prompts()
    rows = [{"prompt": p, "golden": list(g)} for p, g in prompts]

    def reward(completions, golden, **kwargs):
        return [completion_reward(c, g) for c, g in zip(completions, golden, strict=True)]

    clock = Clock()
    records: list[dict[str, Any]] = []
    model_tokens: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.peak = PeakRss().__enter__()
            self.wall, self.cpu = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            step_wall = time.perf_counter() - self.wall
            step_cpu = time.process_time() - self.cpu
            self.peak.__exit__()
            wall, cpu = clock.take()
            # generate_and_score = generation + the log-prob passes (+ a trivial reward)
            record = {"step": step_wall, "step_cpu": step_cpu}
            for suffix, times, total in (("", wall, step_wall), ("_cpu", cpu, step_cpu)):
                record["generation" + suffix] = times["generation"]
                record["logprob" + suffix] = times["score"] - times["generation"]
                record["update" + suffix] = total - times["score"]
            record["generated_tokens"] = QUESTIONS * GROUP * COMPLETION_TOKENS
            record["update_tokens"] = record["executed_tokens"] = model_tokens.pop()
            record["peak_rss_mb"] = self.peak.peak / 2**20
            records.append(record)

    kwargs: dict[str, Any] = {}
    if gradient_checkpointing is not None:
        kwargs["gradient_checkpointing"] = gradient_checkpointing
    args = GRPOConfig(
        output_dir="/tmp/grpo_step_bench_trl",
        per_device_train_batch_size=QUESTIONS * GROUP,
        num_generations=GROUP,
        max_completion_length=COMPLETION_TOKENS,
        generation_kwargs={"min_new_tokens": COMPLETION_TOKENS},
        beta=BETA,
        learning_rate=LR,
        max_steps=steps,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        dataloader_num_workers=0,
        seed=0,
        **kwargs,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=args,
        # Every batch holds the same two prompts, group 4 each, like ours.
        train_dataset=Dataset.from_list(rows * 64),
        processing_class=tokenizer,
        callbacks=[StepTimer()],
    )
    model.generate = clock.wrap("generation", model.generate)
    score = clock.wrap("score", trainer._generate_and_score_completions)

    def generate_and_score(*a, **k):
        out = score(*a, **k)
        mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
        model_tokens.append(float(mask.sum()))
        return out

    trainer._generate_and_score_completions = generate_and_score
    trainer.train()
    return {
        "params": n_params,
        "steps": records,
        "process_peak_rss_mb": _peak_rss_mb(),
        "gradient_checkpointing": bool(args.gradient_checkpointing),
    }


# --------------------------------------------------------------------------------------
# Matmul reference
# --------------------------------------------------------------------------------------


def run_matmul(threads: int, update_tokens: int) -> dict[str, Any]:
    """Best-of-N float32 matmul FLOP/s: a 2048^2 square and the model's MLP shape."""
    import torch

    torch.set_num_threads(threads)
    results = {}
    shapes = {"square_2048": (2048, 2048, 2048), "mlp_shape": (update_tokens, 576, 1536)}
    for name, (m, k, n) in shapes.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(2):
            a @ b
        best_wall = best_cpu = float("inf")
        for _ in range(5):
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(3):
                a @ b
            best_wall = min(best_wall, (time.perf_counter() - wall) / 3)
            best_cpu = min(best_cpu, (time.process_time() - cpu) / 3)
        results[name] = 2 * m * k * n / best_wall
        results[name + "_cpu"] = 2 * m * k * n / best_cpu
    return results


# --------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------


def child(side: str, steps: int, threads: int, update_tokens: int) -> dict[str, Any]:
    if side == "ours":
        return run_ours(steps, threads)
    if side == "ours-packed":  # float32 decoding copy with oneDNN-packed linears
        return run_ours(steps, threads, pack_weights=True)
    if side == "ours-bf16-rollout":  # bfloat16 packed decoding copy; training stays float32
        return run_ours(steps, threads, rollout_dtype="bfloat16", pack_weights=True)
    if side == "ours-int8-rollout":  # the 8-bit decoding copy; training stays float32
        return run_ours(steps, threads, rollout_dtype="int8", pack_weights=True)
    if side == "ours-lora":  # micro-batches of one group each keep the peak under 3 GB
        return run_ours(steps, threads, lora=True, micro_batch=GROUP)
    if side == "trl":
        return run_trl(steps, threads, gradient_checkpointing=None)
    if side == "trl-no-ckpt":
        return run_trl(steps, threads, gradient_checkpointing=False)
    if side == "matmul":
        return run_matmul(threads, update_tokens)
    raise ValueError(side)


def spawn(side: str, steps: int, threads: int, update_tokens: int = 1024) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.grpo_step", "--child", side]
    command += ["--steps", str(steps), "--threads", str(threads)]
    command += ["--update-tokens", str(update_tokens)]
    print(f"running {side} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parents[1])
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    sys.stderr.write(proc.stderr[-4000:])
    raise RuntimeError(f"{side} failed (exit {proc.returncode})")


def summarize(side: str, result: dict[str, Any], matmul: dict[str, float]) -> dict[str, Any]:
    """Medians over the steps after the first (which pays one-off setup)."""
    steps = result["steps"]
    steady = steps[1:] or steps

    def med(key: str) -> float:
        return statistics.median(s[key] for s in steady)

    row: dict[str, Any] = {"side": side, "first_step_s": steps[0]["step"]}
    for suffix in ("", "_cpu"):
        for phase in ("step", "generation", "logprob", "update"):
            row[phase + suffix] = med(phase + suffix)
        peak = max(v for k, v in matmul.items() if k.endswith("_cpu") == (suffix == "_cpu"))
        nominal = 6 * result["params"] * med("update_tokens") / med("update" + suffix)
        executed = 6 * result["params"] * med("executed_tokens") / med("update" + suffix)
        row["update_gflops" + suffix] = nominal / 1e9
        row["update_vs_matmul" + suffix] = nominal / peak
        row["executed_vs_matmul" + suffix] = executed / peak
    row["tokens_per_s"] = med("generated_tokens") / med("step")
    row["update_tokens"] = med("update_tokens")
    row["executed_tokens"] = med("executed_tokens")
    row["step_peak_rss_mb"] = max(s["peak_rss_mb"] for s in steps)
    row["process_peak_rss_mb"] = result["process_peak_rss_mb"]
    return row


def table(rows: list[dict[str, Any]], suffix: str) -> str:
    """One markdown table; ``suffix`` "" = wall seconds, "_cpu" = process CPU seconds."""
    baseline = next((r for r in rows if r["side"] == "trl"), None)
    head = (
        "| side | step | vs TRL | generation | log-prob | update | update GFLOP/s (6NT) "
        "| 6NT / matmul | executed / matmul | peak RSS MB step / process |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        speedup = f"{baseline['step' + suffix] / r['step' + suffix]:.2f}x" if baseline else "n/a"
        lines.append(
            f"| {r['side']} | {r['step' + suffix]:.1f} | {speedup} | "
            f"{r['generation' + suffix]:.1f} | {r['logprob' + suffix]:.1f} | "
            f"{r['update' + suffix]:.1f} | {r['update_gflops' + suffix]:.1f} | "
            f"{r['update_vs_matmul' + suffix]:.0%} | {r['executed_vs_matmul' + suffix]:.0%} | "
            f"{r['step_peak_rss_mb']:.0f} / {r['process_peak_rss_mb']:.0f} |"
        )
    return head + "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sides",
        nargs="+",
        default=["ours", "ours-packed", "ours-bf16-rollout", "ours-lora", "trl"],
        choices=SIDES,
    )
    parser.add_argument("--steps", type=int, default=3, help="steps per side (first = warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every side")
    parser.add_argument("--json", type=Path, default=None, help="write raw results here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--update-tokens", type=int, default=1024, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = child(args.child, args.steps, args.threads, args.update_tokens)
        print("RESULT " + json.dumps(result), flush=True)
        return

    load = os.getloadavg()
    raw = {side: spawn(side, args.steps, args.threads) for side in args.sides}
    tokens = int(statistics.median(s["update_tokens"] for s in next(iter(raw.values()))["steps"]))
    matmul = spawn("matmul", 0, args.threads, tokens)
    rows = [summarize(side, result, matmul) for side, result in raw.items()]
    end = os.getloadavg()
    print(
        f"threads={args.threads} steps={args.steps} (medians of steps 2..{args.steps}); "
        f"load average {load[0]:.1f} at start, {end[0]:.1f} at end; fp32 matmul GFLOP/s: "
        + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in matmul.items())
    )
    print(f"tokens per update: {rows[0]['update_tokens']:.0f} (6NT counts these)")
    for r in rows:
        print(
            f"  {r['side']}: executed {r['executed_tokens']:.0f}, first step {r['first_step_s']:.1f} s"
        )
    print("\nwall-clock seconds per step\n")
    print(table(rows, ""))
    print("\nprocess CPU seconds per step (1 thread: ~ time on an idle core)\n")
    print(table(rows, "_cpu"))
    if args.json is not None:
        args.json.write_text(json.dumps({"raw": raw, "matmul": matmul, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
