"""``research-env ablate``: train several algorithms (or config variants) from one starting
model with the same budget and several seeds, score every run on one fixed dev subset, and
write a table with 95% intervals across seeds plus training curves with a band.

    research-env ablate --from runs/warm/final --algos grpo ppo reinforce --seeds 3 \\
        --budget-episodes 400 --eval-questions 200 --out runs/ablation

Layout of ``--out``::

    subset.json                 the dev questions every run is scored on (seeded draw)
    baseline/eval.json          the starting model, scored once
    <variant>/seed-<k>/         one run: metrics.jsonl, eval.json, done.json (last written)
    table.md, table.json        mean and 95% interval across seeds, overall and per hop count
    curves.png                  per-step curves, mean over seeds with a min-max band

Every run is scored with the shared env settings (``--config``, ``--set``): a variant's
``env.*`` overrides change its training episodes, not the evaluation, so all rows are
measured the same way. Each run's step metrics carry ``episode/think_chars`` and the
other health metrics of :mod:`algorithms.trainer.health`.

A run counts as done when its ``done.json`` exists; a later call with the same settings
skips it, so a table can be filled over several sittings or machines (copy the run
directories into one ``--out``) and ``--table-only`` rebuilds it from what is there. A
run directory without ``done.json`` was interrupted: it is trained again from the start.

Several processes may run the same command on one ``--out`` at once (one per core, or per
machine on a shared disk): each run is claimed with a ``<run>.lock`` file
(:mod:`research_app.claims`), a process skips runs that another live process holds, and
the last one to finish writes the complete table.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from research_app import claims
from research_env.storage import atomic_file

EPILOG = """\
examples:
  research-env ablate --from runs/warm/final --algos grpo ppo reinforce --seeds 3 \\
      --budget-episodes 400 --eval-questions 200 --out runs/ablation
  research-env ablate --from runs/warm/final --algos grpo --seeds 3 --budget-minutes 30 \\
      --variant em-reward:algo=grpo,env.reward=em --variant no-kl:grpo.kl_coef=0 \\
      --out runs/ablation-rewards
  research-env ablate --model tiny-random --algos grpo reinforce --seeds 2 \\
      --budget-episodes 4 --eval-questions 4 --set rollout.max_turn_tokens=16 --out runs/abl

Every run starts from the same --from model, with --config, then --set, then the variant's
own overrides. Runs already done under --out (a done.json) are skipped. Start the same
command twice on one --out (e.g. one per core, with trainer.num_threads=1) and the two
processes split the runs.
"""
BASELINE = "baseline"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass
class Variant:
    """One row of the table: an algorithm plus config overrides."""

    name: str
    algo: str
    overrides: dict[str, Any] = field(default_factory=dict)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ablate",
        help="train algorithms/variants from one start with equal budgets and seeds; one table",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--from",
        "--model",
        dest="start",
        required=True,
        help="starting model: an HF directory (e.g. runs/warm/final) or an offline name",
    )
    parser.add_argument(
        "--algos", nargs="*", default=None, help="one variant per algorithm (default: grpo ppo "
        "reinforce, unless --variant is given)"
    )  # fmt: skip
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE,...",
        help="a named variant with config overrides (algo=... picks its algorithm, default "
        "grpo), e.g. em:env.reward=em,grpo.kl_coef=0 (repeatable)",
    )
    parser.add_argument("--seeds", type=int, default=3, help="runs per variant: seeds 0..N-1")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--budget-episodes",
        type=int,
        default=None,
        help="training episodes per run (default 400; steps = ceil(N / (questions_per_step * "
        "group_size)))",
    )
    budget.add_argument(
        "--budget-minutes",
        type=float,
        default=None,
        help="wall-clock minutes of training per run (the LR schedule's horizon is "
        "--max-steps: prefer a constant schedule)",
    )
    parser.add_argument(
        "--max-steps", type=int, default=100_000, help="step cap with --budget-minutes"
    )
    parser.add_argument(
        "--eval-questions", type=int, default=200, help="size of the fixed dev subset (200)"
    )
    parser.add_argument("--eval-seed", type=int, default=0, help="seed of the subset's draw")
    parser.add_argument("--config", type=Path, default=None, help="YAML config (see configs/)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value for every run, e.g. --set optim.lr=1e-6 (repeatable)",
    )
    parser.add_argument("--out", type=Path, required=True, help="ablation directory")
    parser.add_argument(
        "--keep-models", action="store_true", help="export each run's model to <run>/final"
    )
    parser.add_argument(
        "--table-only", action="store_true", help="train nothing: rebuild the table and curves"
    )
    parser.set_defaults(handler=run)


def parse_variant(text: str) -> Variant:
    """``"NAME:key=value,key=value"`` -> :class:`Variant` (values parsed as YAML; a comma
    starts a new assignment only when ``key=`` follows it, so ``[0.9,0.99]`` survives)."""
    from algorithms.config import parse_overrides

    name, sep, body = text.partition(":")
    if not sep or not _NAME.match(name):
        raise ValueError(f"--variant {text!r} must look like NAME:key=value,... (NAME: letters, "
                         "digits, _.+-)")  # fmt: skip
    items = [s for s in re.split(r",(?=\s*[\w.]+=)", body) if s.strip()] if body else []
    overrides = dict(parse_overrides(items))
    algo = str(overrides.pop("algo", "grpo"))
    return Variant(name, algo, overrides)


def variants_of(args: argparse.Namespace) -> list[Variant]:
    algos = args.algos if args.algos is not None else ([] if args.variant else
                                                        ["grpo", "ppo", "reinforce"])  # fmt: skip
    variants = [Variant(a, a) for a in algos] + [parse_variant(v) for v in args.variant]
    names = [v.name for v in variants]
    if len(set(names)) != len(names) or BASELINE in names:
        raise ValueError(f"variant names must be distinct and not {BASELINE!r}: {names}")
    if not variants:
        raise ValueError("nothing to ablate: give --algos or --variant")
    return variants


def base_config(args: argparse.Namespace) -> Any:
    """The settings every run shares: --config, the harness's own, then --set."""
    from algorithms.config import TrainConfig

    config = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    config = config.with_overrides(
        {
            "model.name": args.start,
            "eval.every": 0,
            "checkpoint.every": 0,
            "checkpoint.export_final": False,
            "logging.wandb": False,
            "logging.progress_bar": False,
        }
    )
    return config.with_overrides(args.set)


def run_config(base: Any, variant: Variant, seed: int, run_dir: Path, steps: int) -> Any:
    """One run's config, checked; names (dataset, reward, retriever...) once per variant,
    since seeds differ only in the seed and the directory."""
    config = base.with_overrides(variant.overrides).with_overrides(
        {"algo": variant.algo, "trainer.seed": seed, "trainer.steps": steps,
         "output_dir": str(run_dir)}
    )  # fmt: skip
    return config.validate(check_names=seed == 0)


def steps_for(config: Any, args: argparse.Namespace) -> int:
    if args.budget_minutes is not None:
        return args.max_steps
    episodes = args.budget_episodes or 400
    per_step = config.rollout.questions_per_step * config.rollout.group_size
    return max(1, math.ceil(episodes / per_step))


def run(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from research_app.ablate_report import write_curves, write_table

    variants = variants_of(args)
    base = base_config(args)
    plan = []  # every config checked before any heavy work
    # Seed-major: every variant's seed 0 first, so a table half-way through compares all
    # variants, and two processes sharing --out split the variants of a seed.
    for seed in range(args.seeds):
        for v in variants:
            run_dir = args.out / v.name / f"seed-{seed}"
            config = run_config(base, v, seed, run_dir, steps_for(base.with_overrides(
                v.overrides), args))  # fmt: skip
            plan.append((v, seed, run_dir, config))
    args.out.mkdir(parents=True, exist_ok=True)
    evaluator = Evaluator(base, args)
    held: dict[str, Path] = {}  # runs other processes held when this one reached them
    if not args.table_only:
        if base.trainer.num_threads:  # evaluations too, not only `learn`
            import torch

            torch.set_num_threads(base.trainer.num_threads)
        baseline_dir = args.out / BASELINE
        done = baseline_dir / "done.json"
        started = json.loads(done.read_text(encoding="utf-8"))["start"] if done.exists() else None
        if started is not None and started != str(args.start):
            raise ValueError(f"{args.out} ablates from {started}, not {args.start}")
        if started is None:
            if claims.claim(baseline_dir):
                try:
                    print(f"[ablate] evaluating the starting model {args.start}", file=sys.stderr)
                    evaluator.evaluate_start(baseline_dir)
                finally:
                    claims.release(baseline_dir)
            else:
                held[BASELINE] = baseline_dir
        for v, seed, run_dir, config in plan:
            fingerprint = run_fingerprint(args, v, config)
            if is_done(run_dir, fingerprint):
                print(f"[ablate] {v.name} seed {seed}: done, skipped", file=sys.stderr)
                continue
            if not claims.claim(run_dir):
                print(f"[ablate] {v.name} seed {seed}: {claims.describe(run_dir)}, skipped",
                      file=sys.stderr)  # fmt: skip
                held[f"{v.name}/seed-{seed}"] = run_dir
                continue
            try:
                print(f"[ablate] {v.name} seed {seed}: training {v.algo}", file=sys.stderr)
                train_run(config, run_dir, args, evaluator, fingerprint)
            finally:
                claims.release(run_dir)
    table = write_table(args.out, variants, args.seeds, evaluator.subset_info())
    write_curves(args.out, variants, args.seeds)
    print((args.out / "table.md").read_text(encoding="utf-8"))
    print(f"table: {args.out / 'table.md'} (and table.json); curves: {args.out / 'curves.png'}")
    missing = table.get("missing_runs", [])
    if missing:
        print(f"[ablate] {len(missing)} runs not done yet: {', '.join(missing)}", file=sys.stderr)
    waiting = [f"{name} ({claims.describe(path)})" for name, path in held.items()
               if not (path / "done.json").exists()]  # fmt: skip
    if waiting:
        print(f"[ablate] left to the processes that hold them: {'; '.join(waiting)}; run this "
              "command again when they have finished to rebuild the table", file=sys.stderr)  # fmt: skip
    return 0


def run_fingerprint(args: argparse.Namespace, variant: Variant, config: Any) -> dict[str, Any]:
    """What makes two runs the same run: a done run with another fingerprint is an error."""
    return {
        "start": str(args.start),
        "algo": variant.algo,
        "overrides": {k: variant.overrides[k] for k in sorted(variant.overrides)},
        "set": list(args.set),
        "seed": config.trainer.seed,
        "budget_episodes": args.budget_episodes if args.budget_minutes is None else None,
        "budget_minutes": args.budget_minutes,
    }


def is_done(run_dir: Path, fingerprint: dict[str, Any]) -> bool:
    done = run_dir / "done.json"
    if not done.exists():
        return False
    recorded = json.loads(done.read_text(encoding="utf-8")).get("fingerprint")
    if recorded != fingerprint:
        raise ValueError(
            f"{run_dir} is done with other settings ({recorded} != {fingerprint}); use "
            "another --out or remove that run"
        )
    return True


def train_run(
    config: Any, run_dir: Path, args: argparse.Namespace, evaluator: Evaluator,
    fingerprint: dict[str, Any],
) -> None:  # fmt: skip
    """Train one (variant, seed) from the start model, score it, then write done.json."""
    from algorithms.policy import policy_from_config
    from algorithms.registry import algorithm_class
    from algorithms.trainer import checkpoint as ckpt

    if run_dir.exists():
        shutil.rmtree(run_dir)  # an interrupted run: start over
    policy = policy_from_config(config)
    algo = algorithm_class(config.algo)(policy, None, config)
    steps = config.trainer.steps
    deadline = None if args.budget_minutes is None else time.monotonic() + 60 * args.budget_minutes

    def within_budget(algo: Any, metrics: dict[str, float]) -> bool:
        # Stopping from the callback at the last step also skips the loop's final
        # checkpoint (optimizer state included), which an ablation does not need.
        over_time = deadline is not None and time.monotonic() >= deadline
        return not (over_time or algo.step >= steps)

    start = time.perf_counter()
    try:
        algo.learn(steps, callback=within_budget)
    finally:
        algo.close()
    minutes = (time.perf_counter() - start) / 60
    if args.keep_models:
        ckpt.export_pretrained(algo.policy, run_dir / "final", config=algo.config, step=algo.step)
    evaluator.evaluate(algo.policy, run_dir / "eval.json", name=run_dir.parent.name)
    per_step = config.rollout.questions_per_step * config.rollout.group_size
    _write_json(
        run_dir / "done.json",
        {"variant": run_dir.parent.name, "algo": config.algo, "seed": config.trainer.seed,
         "steps": algo.step, "episodes": algo.step * per_step, "minutes": round(minutes, 3),
         "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
         "fingerprint": fingerprint},
    )  # fmt: skip


class Evaluator:
    """Scores policies on one fixed, seeded subset of the dev split (``subset.json``)."""

    def __init__(self, base: Any, args: argparse.Namespace) -> None:
        self.base = base
        self.out: Path = args.out
        self.env_kwargs = base.env.to_env_kwargs(split=base.eval.split)
        self._env: Any = None
        self.subset = self._subset(args.eval_questions, args.eval_seed)

    @property
    def env(self) -> Any:
        if self._env is None:
            from research_env.env import MultiHopSearchEnv

            self._env = MultiHopSearchEnv(**self.env_kwargs)
        return self._env

    def _subset(self, count: int, seed: int) -> dict[str, Any]:
        """The question indices, drawn once and kept: a later call must ask for the same."""
        import numpy as np

        path = self.out / "subset.json"
        wanted = {"dataset": str(self.env_kwargs["dataset"]), "split": self.env_kwargs["split"],
                  "questions": count, "seed": seed}  # fmt: skip
        if path.exists():
            saved = json.loads(path.read_text(encoding="utf-8"))
            if {k: saved.get(k) for k in wanted} != wanted:
                raise ValueError(
                    f"{path} holds another dev subset ({ {k: saved.get(k) for k in wanted} }); "
                    f"this call asks for {wanted}: use the same --eval-questions/--eval-seed "
                    "and env, or another --out"
                )
            return saved
        n = len(self.env.samples)
        rng = np.random.default_rng(seed)
        indices = sorted(int(i) for i in rng.choice(n, size=min(count, n), replace=False))
        subset = {**wanted, "of": n, "indices": indices,
                  "question_ids": [self.env.samples[i].id for i in indices]}  # fmt: skip
        self.out.mkdir(parents=True, exist_ok=True)
        _write_json(path, subset)
        return subset

    def subset_info(self) -> dict[str, Any]:
        return {k: v for k, v in self.subset.items() if k not in ("indices", "question_ids")}

    def evaluate(self, policy: Any, path: Path, name: str) -> dict[str, Any]:
        """Greedy episodes on the subset with the shared token budgets; writes ``path``."""
        from research_app.harness import evaluate_model

        r = self.base.rollout
        result = evaluate_model(
            policy,
            self.env_kwargs,
            question_indices=self.subset["indices"],
            sampling=r.sampling(greedy=True, seed=self.subset["seed"]),
            prompt_format=r.prompt_format,
            rollout_dtype=r.rollout_dtype,
            pack_weights=r.pack_weights,
            fused=r.fused,
            name=name,
            show_progress=False,
            base_env=self.env,
        )
        data = result.to_json(with_episodes=False)
        keep = ("question_id", "hops", "em", "f1", "searches", "supporting_recall", "reward")
        data["episodes"] = [{k: e.get(k) for k in keep} for e in result.episodes]
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_json(path, data)
        o = result.overall
        print(f"[ablate]   {name}: EM {o.get('em', 0):.3f} F1 {o.get('f1', 0):.3f} searches "
              f"{o.get('searches', 0):.2f} on {int(o.get('n', 0))} questions", file=sys.stderr)  # fmt: skip
        return data

    def evaluate_start(self, directory: Path) -> None:
        from algorithms.policy import load_policy

        cfg = self.base.model
        policy = load_policy(cfg.name, dtype=cfg.dtype, device=cfg.device)
        self.evaluate(policy, directory / "eval.json", name=BASELINE)
        _write_json(directory / "done.json", {"start": cfg.name, "subset": self.subset_info()})


def _write_json(path: Path, data: Any) -> None:
    """Written whole or not at all (a killed run leaves no half-written done.json)."""
    with atomic_file(path) as staging:
        staging.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
