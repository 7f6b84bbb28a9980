"""``research-env train``: train a policy with GRPO, PPO or REINFORCE.

Listed in :data:`research_app.cli.COMMANDS`; ``register`` only adds arguments,
and torch is imported inside the handler, so ``research-env --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

EPILOG = """\
examples:
  research-env train --config configs/cpu-small.yaml --steps 20 --out runs/try
  research-env train --algo ppo --config configs/cpu-small.yaml --out runs/try-ppo
  research-env train --model tiny-random --steps 2 --set rollout.max_turn_tokens=16
  research-env train --out runs/try --resume            # continue the latest checkpoint
  research-env train --algo sft --from oracle --steps 12 --out runs/warm   # warm start
  research-env train --algo sft --from runs/eval-X/transcripts/agent.jsonl --split dev
  research-env train --algo sb3-ppo --steps 20000 --retriever empty --out runs/sb3-empty
      # SB3 on ReSearch-MultiHop-Structured-v0; --set env.reward=em, --set sb3.gamma=0.99

Settings come from --config (YAML, see configs/), then the flags below, then --set.
Output: <out>/metrics.jsonl, <out>/checkpoints/step-N/, <out>/final/ (a plain Hugging Face
model directory, LoRA merged: AutoModelForCausalLM.from_pretrained("<out>/final")), and
<out>/fingerprint.json (what the numbers depend on; research-env compare RUN_A RUN_B).
"""


def register(subparsers: Any) -> None:
    from algorithms.registry import available_algorithms, available_sb3_algorithms

    parser = subparsers.add_parser(
        "train",
        help="train an LLM policy with RL (grpo, ppo, reinforce) or warm-start it (sft)",
        description=(
            "Train a causal LM to answer multi-hop questions with search, by reinforcement "
            "learning against ReSearch-MultiHop-v0, or warm-start it by behaviour cloning "
            "(--algo sft --from oracle|FILE). Retrieved documents are masked out of the loss."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--algo",
        choices=available_algorithms() + available_sb3_algorithms(),
        default=None,
        help="algorithm (default: the config's 'algo', else grpo)",
    )
    parser.add_argument("--config", type=Path, default=None, help="YAML config (see configs/)")
    parser.add_argument(
        "--from",
        dest="demonstrations",
        default=None,
        metavar="oracle|FILE",
        help="--algo sft only: imitate the env's oracle (default) or the episodes in a jsonl "
        "file (our episode format, or the transcripts/*.jsonl that eval writes)",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="policy: offline name (smollm2-135m, tiny-random), HF model dir, or hub id",
    )
    parser.add_argument("--dataset", default=None, help="dataset name or path (default synthetic)")
    parser.add_argument("--split", default=None, help="training split (default train)")
    parser.add_argument("--eval-split", default=None, help="held-out split (default dev)")
    parser.add_argument("--retriever", default=None, help="retriever name or server URL")
    parser.add_argument("--corpus", default=None, help="corpus jsonl for a named retriever")
    parser.add_argument("--steps", type=int, default=None, help="total training steps")
    parser.add_argument(
        "--out", type=Path, default=None, help="output directory (default runs/<algo>-<time>)"
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="CHECKPOINT",
        help="continue from a checkpoint dir (default: the latest under --out)",
    )
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters (r=16)")
    parser.add_argument("--seed", type=int, default=None, help="random seed")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (1 can win on a busy box)"
    )
    parser.add_argument("--no-wandb", action="store_true", help="do not log to wandb")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config value, e.g. --set grpo.kl_coef=0 (repeatable)",
    )
    parser.set_defaults(handler=run)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    flags = {
        "algo": args.algo,
        "model.name": args.model,
        "model.device": args.device,
        "env.dataset": args.dataset,
        "env.split": args.split,
        "env.retriever": args.retriever,
        "env.corpus": args.corpus,
        "eval.split": args.eval_split,
        "trainer.steps": args.steps,
        "trainer.seed": args.seed,
        "trainer.num_threads": args.threads,
        "output_dir": str(args.out) if args.out is not None else None,
        "sft.demonstrations": args.demonstrations,
    }
    overrides = {k: v for k, v in flags.items() if v is not None}
    if args.no_wandb:
        overrides["logging.wandb"] = False
    return overrides


def run(args: argparse.Namespace) -> int:
    if (args.algo or "").startswith("sb3-"):
        from algorithms.sb3 import run_cli

        return run_cli(args)
    from algorithms.config import LoraConfig, TrainConfig, parse_overrides
    from algorithms.trainer import checkpoint as ckpt
    from algorithms.trainer.distributed import init_from_environment, is_main_process

    overrides = _overrides(args)
    # Under torchrun / accelerate launch: join the process group; each rank its own GPU.
    requested = overrides.get("model.device", "auto")
    device = init_from_environment(requested)
    if device != requested:
        overrides["model.device"] = device
    if args.resume is not None:
        path = _checkpoint_to_resume(args)
        saved = ckpt.load_checkpoint(path, mmap=True).config
        algo_name = overrides.pop("algo", saved.algo)
        if algo_name != saved.algo:
            raise ValueError(f"{path} was trained with {saved.algo}, not {algo_name}")
        config_overrides = {**overrides, **dict(parse_overrides(args.set))}
        config = saved.with_overrides(config_overrides).validate()
    else:
        config = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
        config = config.with_overrides(overrides).with_overrides(args.set)
        if args.demonstrations is not None and config.algo != "sft":
            raise ValueError(
                f"--from gives demonstrations to imitate; it needs --algo sft, not {config.algo}"
            )
        if args.lora and config.model.lora is None:
            config.model.lora = LoraConfig()
        config = _tiny_random_defaults(config, args)
        if args.out is None and config.output_dir == DEFAULT_OUTPUT_DIR:
            # Like eval's runs/eval-<time>: a second run never lands in the first's folder.
            config.output_dir = f"runs/{config.algo}-{datetime.now():%Y%m%d-%H%M%S}"
        config.validate()  # every value, before the model loads
        existing = ckpt.latest_checkpoint(config.output_dir)
        if existing is not None:
            raise ValueError(
                f"{config.output_dir} already holds checkpoints ({existing.name}); pass --resume "
                "to continue that run or choose another --out"
            )
    probe_retriever(config.env.retriever, config.env.top_k)
    if is_main_process():
        write_run_fingerprint(config, resuming=args.resume is not None)

    from algorithms.policy import policy_from_config
    from algorithms.registry import algorithm_class, make_algorithm

    check_gpu_memory(config)
    if args.resume is not None:
        algo = algorithm_class(algo_name).load(  # type: ignore[attr-defined]
            path, config_overrides=config_overrides
        )
        print(f"resuming {algo_name} from {path} at step {algo.step}", file=sys.stderr)
        if algo.step >= algo.config.trainer.steps:
            print(
                f"nothing to train: the checkpoint is at step {algo.step} and the run has "
                f"{algo.config.trainer.steps} steps (pass --steps N with N > {algo.step} to "
                "continue); the model is only re-exported",
                file=sys.stderr,
            )
    else:
        policy = policy_from_config(config)
        algo = make_algorithm(config.algo, policy, None, config)
    try:
        algo.learn()  # until trainer.steps: a resumed run continues where it stopped
    finally:
        algo.close()
    if not is_main_process():
        return 0
    out = Path(algo.config.output_dir)
    from algorithms.trainer.curves import write_run_curves

    curves = write_run_curves(out, algo.config.algo)  # the whole run, resumed steps included
    drawn = f", curves in {curves}" if curves is not None else ""
    print(f"done: {algo.step} steps; metrics in {out / 'metrics.jsonl'}{drawn}", file=sys.stderr)
    if algo.config.checkpoint.export_final and (out / "final").is_dir():
        print(f"final model: {out / 'final'}", file=sys.stderr)
    return 0


# TrainConfig's own output_dir: a fresh CLI run without --out gets runs/<algo>-<time> instead.
DEFAULT_OUTPUT_DIR = "runs/default"


def check_gpu_memory(config: Any) -> None:
    """On CUDA, before any weight loads: the memory planner's estimate for this run
    (``research-env plan``) against the GPU's memory; a run that cannot fit is refused with
    the planner's table, one that comes close is warned about."""
    import torch

    from algorithms.policy import resolve_device

    device = resolve_device(config.model.device)
    if device.type != "cuda":
        return
    from algorithms.planner import check_fits
    from algorithms.trainer.distributed import world_size

    check_fits(config, torch.cuda.get_device_properties(device).total_memory, gpus=world_size())


# The tiny random model never emits a stop string, so with the general defaults every turn
# runs its full 256 tokens and a step takes minutes on a CPU. It is for trying the
# machinery, so its step should take seconds: these apply unless the user set the key.
TINY_RANDOM_DEFAULTS: dict[str, int] = {
    "rollout.max_turn_tokens": 32,
    "rollout.questions_per_step": 2,
    "rollout.group_size": 2,
}


def _tiny_random_defaults(config: Any, args: argparse.Namespace) -> Any:
    """``config`` with :data:`TINY_RANDOM_DEFAULTS` as caps for the keys the user did not
    set (in ``--config`` or with ``--set``), when the model is ``tiny-random``; says so on
    one line of stderr."""
    from algorithms.config import parse_overrides

    if config.model.name != "tiny-random" or config.algo == "sft":
        return config
    chosen = {key for key, _ in parse_overrides(args.set)}
    if args.config is not None:
        import yaml

        chosen |= _dotted_keys(yaml.safe_load(Path(args.config).read_text()) or {})
    current = config.to_dict()
    caps = {}
    for key, cap in TINY_RANDOM_DEFAULTS.items():
        section, leaf = key.split(".")
        chosen_by_user = any(key == c or key.startswith(f"{c}.") for c in chosen)
        if not chosen_by_user and current[section][leaf] > cap:
            caps[key] = cap
    if not caps:
        return config
    settings = ", ".join(f"{key}={value}" for key, value in caps.items())
    print(
        f"tiny-random: using {settings} so a step takes seconds (the random model's turns "
        "never stop); --set KEY=VALUE to choose others",
        file=sys.stderr,
    )
    return config.with_overrides(caps)


def _dotted_keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key, value in data.items():
        name = f"{prefix}{key}"
        keys.add(name)
        if isinstance(value, dict):
            keys |= _dotted_keys(value, f"{name}.")
    return keys


def _checkpoint_to_resume(args: argparse.Namespace) -> Path:
    """The checkpoint ``--resume`` names: a directory, or the newest intact one under
    ``--out`` (damaged newer ones are skipped with a warning naming the bad file)."""
    from algorithms.config import TrainConfig
    from algorithms.trainer import checkpoint as ckpt

    if args.resume != "latest":
        path = Path(args.resume)
        try:
            ckpt.load_checkpoint(path, mmap=True)
        except ckpt.CorruptCheckpointError as err:
            intact, _ = ckpt.latest_intact_checkpoint(path.parent.parent)
            hint = f"; the newest intact checkpoint is {intact}" if intact else ""
            raise ValueError(f"cannot resume: {err}{hint}") from None
        return path
    out = args.out or (TrainConfig.from_yaml(args.config).output_dir if args.config else None)
    if out is None:
        raise ValueError("--resume without a path needs --out (or a --config with one)")
    for stale in ckpt.remove_stale_staging(out):
        print(f"removed {stale.name}, left by a save that was killed", file=sys.stderr)
    latest, skipped = ckpt.latest_intact_checkpoint(out)
    for message in skipped:
        print(f"warning: skipping a damaged checkpoint: {message}", file=sys.stderr)
    if latest is None:
        found = "only damaged checkpoints" if skipped else "no checkpoint"
        raise FileNotFoundError(f"{found} under {out}/checkpoints to resume from")
    if skipped:
        print(
            f"warning: resuming from {latest.name}, the newest intact checkpoint", file=sys.stderr
        )
    return latest


def write_run_fingerprint(config: Any, *, resuming: bool = True) -> None:
    """``<output_dir>/fingerprint.json``: the training env's fingerprint (dataset split,
    corpus, retriever, rules, template, reward; :mod:`research_env.fingerprint`), the
    model, and the held-out split's hash. A resumed run whose fingerprint changed says
    which fields did; a fresh run replaces one left by a launch that failed before its
    first checkpoint, silently."""
    from research_env.env import MultiHopSearchEnv
    from research_env.fingerprint import (
        dataset_sha256,
        differing_fields,
        fingerprint,
        read_fingerprint,
        write_fingerprint,
    )
    from research_env.sources import resolve_dataset
    from research_env.storage import cache_root

    env = MultiHopSearchEnv(**config.env.to_env_kwargs())
    held_out, _ = resolve_dataset(config.env.dataset, config.eval.split, cache_root())
    value = fingerprint(
        env,
        model=config.model.name,
        eval_dataset={"n": len(held_out), "sha256": dataset_sha256(held_out)},
        decoding=training_decoding(config),
    )
    old = read_fingerprint(config.output_dir)
    if resuming and old is not None and old.get("hash") != value["hash"]:
        fields = ", ".join(differing_fields(old, value))
        print(f"warning: this run's fingerprint changed ({fields})", file=sys.stderr)
    write_fingerprint(config.output_dir, value)


def training_decoding(config: Any) -> dict[str, Any]:
    """How the run's rollouts decode, as its fingerprint records it (``compare`` refuses to
    mix runs that decoded differently): sampling, the resolved dtype and the token limits."""
    import torch

    from algorithms.precision import resolve_precision

    device = config.model.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    rollout = config.rollout
    return {
        "decoding": rollout.sampling().describe(),
        "decode_dtype": resolve_precision(rollout.rollout_dtype, device) or config.model.dtype,
        "max_turn_tokens": rollout.max_turn_tokens,
        "max_total_tokens": rollout.max_total_tokens,
    }


def probe_retriever(retriever: str, top_k: int, timeout: float = 10.0) -> None:
    """Send one query to a retrieval server before any heavy work, so a wrong URL fails
    now with one line, not at the first search (or never, when every search fails). A
    server that answers with no documents, or with a malformed answer, is an error too.
    Named in-process retrievers are built from files the config check already found."""
    if not retriever.startswith(("http://", "https://")):
        return
    from research_env.retrievers.http import HttpRetriever, RetrievalError

    try:
        hits = HttpRetriever(retriever, timeout=timeout, retries=1).search(
            ["probe query"], max(1, top_k)
        )
    except RetrievalError as err:
        raise ValueError(f"the retriever does not answer a probe query: {err}") from None
    if not hits or not hits[0]:
        raise ValueError(
            f"the retrieval server {retriever} answered a probe query with no documents; "
            "is its index loaded?"
        )
