"""Stable-Baselines3 on ``ReSearch-MultiHop-Structured-v0``: ablations in CPU minutes.

The structured env (:class:`research_env.structured.StructuredSearchEnv`) plays the same
episodes as the LLM env with a ``Discrete`` action over candidate operations and a
``Box`` of features, so SB3's PPO and DQN train on it unchanged::

    from algorithms.sb3 import train, evaluate, random_actor
    model = train("sb3-ppo", {"retriever": "bm25", "reward": "em"}, timesteps=20_000, seed=0)
    print(evaluate(model_actor(model), {"split": "dev"}, questions=100))

or from the command line (``--set env.KEY=VALUE`` for env arguments, ``--set sb3.KEY=VALUE``
for the SB3 algorithm's)::

    research-env train --algo sb3-ppo --steps 20000 --retriever empty --out runs/sb3-empty

The run writes ``<out>/model.zip`` (``stable_baselines3.PPO.load``),
``<out>/metrics.json`` (the trained policy and the random policy evaluated on the same
questions of the held-out split), those two rows as ``results.json`` and the env's
``fingerprint.json`` (so ``research-env compare`` reads it), and refuses an ``<out>`` that
already holds a run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from algorithms.registry import SB3_ALGORITHMS
from research_env.fingerprint import fingerprint, write_fingerprint

# Defaults that learn this small problem in a CPU minute; any can be overridden.
DEFAULT_HPARAMS: dict[str, dict[str, Any]] = {
    "sb3-ppo": {
        "n_steps": 128,  # x 4 envs: an update every 512 steps (~130 episodes)
        "batch_size": 128,
        "n_epochs": 8,
        "learning_rate": 1e-3,
        "ent_coef": 0.01,
        "gamma": 1.0,
        "gae_lambda": 0.95,
    },
    "sb3-dqn": {
        "learning_rate": 5e-4,
        "buffer_size": 50_000,
        "learning_starts": 1_000,
        "batch_size": 128,
        "train_freq": 4,
        "target_update_interval": 500,
        "exploration_fraction": 0.3,
        "exploration_final_eps": 0.05,
        # gamma 1 let bootstrapped Q-values of "search again" run away (it searched until
        # truncated); 0.9 makes an answer now worth more than one later.
        "gamma": 0.9,
    },
}

Actor = Callable[[np.ndarray], int]


def make_env(env_kwargs: Mapping[str, Any] | None = None) -> Any:
    """One :class:`~research_env.structured.StructuredSearchEnv` (``env_kwargs``: its
    arguments, e.g. ``retriever``, ``reward``, ``top_k``, ``max_turns``, ``n_queries``)."""
    from research_env.structured import StructuredSearchEnv

    return StructuredSearchEnv(**dict(env_kwargs or {}))


def make_vec_env(env_kwargs: Mapping[str, Any] | None, n_envs: int, seed: int) -> Any:
    """SB3's ``DummyVecEnv`` of ``n_envs`` monitored structured envs, seeded."""
    from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env

    return sb3_make_vec_env(lambda: make_env(env_kwargs), n_envs=n_envs, seed=seed)


def train(
    algo: str,
    env_kwargs: Mapping[str, Any] | None = None,
    *,
    timesteps: int = 20_000,
    seed: int = 0,
    n_envs: int = 4,
    hparams: Mapping[str, Any] | None = None,
    verbose: int = 0,
    progress_bar: bool = False,
    callback: Any = None,
) -> Any:
    """Train SB3 ``algo`` (``sb3-ppo`` or ``sb3-dqn``) for ``timesteps`` env steps; returns
    the SB3 model. ``hparams`` (any argument of the SB3 class, ``verbose`` and ``device``
    included) override :data:`DEFAULT_HPARAMS` and the arguments here."""
    import importlib
    import importlib.util

    import torch

    if algo not in SB3_ALGORITHMS:
        raise ValueError(f"unknown SB3 algorithm {algo!r}; choose one of {sorted(SB3_ALGORITHMS)}")
    torch.set_num_threads(1)  # a tiny MLP: more threads only add overhead
    module, _, name = SB3_ALGORITHMS[algo].partition(":")
    cls = getattr(importlib.import_module(module), name)
    kwargs = {"seed": seed, "verbose": verbose, "device": "cpu", **DEFAULT_HPARAMS[algo],
              **dict(hparams or {})}  # fmt: skip
    env = make_vec_env(env_kwargs, n_envs if algo == "sb3-ppo" else 1, kwargs["seed"])
    model = cls("MlpPolicy", env, **kwargs)
    if not kwargs.get("tensorboard_log"):
        # SB3's default logger makes an empty /tmp/SB3-<time> folder on every learn().
        from stable_baselines3.common.logger import HumanOutputFormat, Logger

        outputs = [HumanOutputFormat(sys.stdout)] if kwargs["verbose"] else []
        model.set_logger(Logger(None, outputs))  # type: ignore[arg-type]
    # SB3's bar needs tqdm and rich (the train extra); without them, train without one.
    progress_bar = progress_bar and all(map(importlib.util.find_spec, ("tqdm", "rich")))
    model.learn(total_timesteps=timesteps, progress_bar=progress_bar, callback=callback)
    return model


def model_actor(model: Any) -> Actor:
    """The SB3 model's greedy action for an observation."""
    return lambda obs: int(model.predict(obs, deterministic=True)[0])


def random_actor(n_actions: int, seed: int = 0) -> Actor:
    """The uniformly random policy over the candidate operations (the baseline to beat)."""
    rng = np.random.default_rng(seed)
    return lambda obs: int(rng.integers(n_actions))


def evaluate(
    actor: Actor,
    env_kwargs: Mapping[str, Any] | None = None,
    *,
    questions: int = 100,
) -> dict[str, float]:
    """Play the first ``questions`` questions of the env's split once each (a fixed subset,
    so runs compare on the same questions); mean reward, EM, F1, searches and turns."""
    env = make_env(env_kwargs)
    count = min(questions, len(env.text_env.samples))
    rows = []
    for index in range(count):
        obs, _ = env.reset(seed=index, options={"index": index})
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(actor(obs))
            done = terminated or truncated
        rows.append((reward, info["em"], info["f1"], info["searches"], info["turns"]))
    env.close()
    means = np.mean(np.asarray(rows, dtype=np.float64), axis=0)
    return dict(
        zip(("reward", "em", "f1", "searches", "turns"), map(float, means), strict=True)
    ) | {"questions": float(count)}


def episode_recorder(episodes: list[dict[str, float]]) -> Any:
    """An SB3 callback appending each finished training episode's reward, EM, searches and
    the env steps so far to ``episodes`` (the curves' data)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class EpisodeRecorder(BaseCallback):
        def _on_step(self) -> bool:
            infos, dones, rewards = (self.locals[k] for k in ("infos", "dones", "rewards"))
            for info, done, reward in zip(infos, dones, rewards, strict=False):
                if done and "em" in info:
                    episodes.append({"timesteps": float(self.num_timesteps),
                                     "episode/reward": float(reward), "episode/em": info["em"],
                                     "episode/searches": float(info.get("searches", 0)),
                                     "episode/format_valid": float(info.get("format_valid", 1))})  # fmt: skip
            return True

    return EpisodeRecorder()


def write_curves(episodes: list[dict[str, float]], out: Path, algo: str, points: int = 20) -> Any:
    """``out/metrics.jsonl`` (episode means over ``points`` stretches of training, ``step``
    being the env steps so far) and ``out/curves.png``: the LLM runs' curves."""
    from algorithms.trainer.curves import CURVES_FILE, plot_curves

    size = max(1, -(-len(episodes) // points))
    records = []
    for start in range(0, len(episodes), size):
        chunk = episodes[start : start + size]
        means = {k: float(np.mean([e[k] for e in chunk])) for k in chunk[0] if k != "timesteps"}
        records.append({"step": int(chunk[-1]["timesteps"]), **means, "episodes": len(chunk)})
    with (out / "metrics.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return plot_curves(records, out / CURVES_FILE, f"{algo} training ({out.name}; x: env steps)")


# --------------------------------------------------------------------------------------
# research-env train --algo sb3-ppo|sb3-dqn
# --------------------------------------------------------------------------------------


def _parse_sets(items: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--set env.KEY=VALUE`` / ``--set sb3.KEY=VALUE`` (values parsed as YAML)."""
    env: dict[str, Any] = {}
    hparams: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or section not in ("env", "sb3"):
            raise ValueError(
                f"--set {item!r}: SB3 runs take env.KEY=VALUE (structured env arguments) or "
                "sb3.KEY=VALUE (the SB3 algorithm's arguments)"
            )
        (env if section == "env" else hparams)[name] = yaml.safe_load(value)
    return env, hparams


def run_cli(args: argparse.Namespace) -> int:
    """The ``research-env train`` handler for ``--algo sb3-*`` (see the module docstring)."""
    if args.config is not None or args.resume is not None or args.model is not None:
        raise ValueError("--config, --resume and --model are for LLM training, not SB3 runs")
    env_kwargs, hparams = _parse_sets(args.set)
    flags = {
        "dataset": args.dataset,
        "split": args.split,
        "retriever": args.retriever,
        "corpus": args.corpus,
    }
    env_kwargs = {**{k: v for k, v in flags.items() if v is not None}, **env_kwargs}
    seed = 0 if args.seed is None else args.seed
    timesteps = args.steps or 20_000
    out = Path(args.out or f"runs/{args.algo}-{datetime.now():%Y%m%d-%H%M%S}")
    if (out / "model.zip").exists():
        raise ValueError(
            f"{out} already holds an SB3 run (model.zip); choose another --out or remove it"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_fingerprint(out, fingerprint(make_env(env_kwargs).text_env, model=args.algo))
    episodes: list[dict[str, float]] = []
    model = train(args.algo, env_kwargs, timesteps=timesteps, seed=seed, hparams=hparams,
                  progress_bar=True, callback=episode_recorder(episodes))  # fmt: skip
    model.save(out / "model.zip")
    write_curves(episodes, out, args.algo)
    eval_kwargs = {**env_kwargs, "split": args.eval_split or "dev"}
    questions = 200
    trained = evaluate(model_actor(model), eval_kwargs, questions=questions)
    n_actions = int(model.action_space.n)
    baseline = evaluate(random_actor(n_actions, seed), eval_kwargs, questions=questions)
    metrics = {
        "algo": args.algo,
        "timesteps": timesteps,
        "seed": seed,
        "env": env_kwargs,
        "hparams": {**DEFAULT_HPARAMS[args.algo], **hparams},
        "eval_split": eval_kwargs["split"],
        "trained": trained,
        "random": baseline,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    # The rows `research-env compare` reads (an eval run's results.json shape).
    rows = [{"name": name, "overall": {**scores, "n": scores["questions"]}}
            for name, scores in (("trained", trained), ("random", baseline))]  # fmt: skip
    (out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(json.dumps({"trained": trained, "random": baseline}), file=sys.stderr)
    print(f"done: model in {out / 'model.zip'}; metrics in {out / 'metrics.json'}", file=sys.stderr)
    return 0
