"""Per-step metrics: what the episodes did (:func:`episode_metrics`) and where the numbers
go (:class:`MetricsLogger`: the console, ``<output_dir>/metrics.jsonl`` and wandb)."""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from algorithms.buffer import Trajectory, flat_groups, group_returns
from algorithms.config import TrainConfig
from algorithms.trainer.health import HealthMonitor
from research_env.storage import atomic_file
from research_env.termination import TRUNCATING


def is_truncated(trajectory: Trajectory) -> bool:
    """An episode that ran out of turns or tokens instead of ending by itself."""
    return trajectory.finish_reason in TRUNCATING


def episode_metrics(trajectories: Sequence[Trajectory], tokenizer: Any = None) -> dict[str, float]:
    """Reward, EM, F1, format rate, searches, supporting-document recall, lengths and
    truncation over a batch, and ``health/flat_group_fraction`` (groups whose rewards are
    all equal, whether or not the trainer drops them). With a ``tokenizer``, also
    ``episode/think_chars`` (:func:`think_metrics`). See :mod:`algorithms.trainer.health`.

    Means come from :func:`research_env.metrics.mean_over`, as the evaluation's do; an
    episode whose info lacks a score counts it as 0 (a truncated or failed episode);
    ``supporting_recall`` averages over the episodes whose dataset knows it.
    """
    from research_env.metrics import mean_over

    if not trajectories:
        return {}
    episodes = [
        {"em": 0.0, "f1": 0.0, "format_valid": False, "searches": 0, **t.info,
         "reward": t.reward, "turns": len(t.turn_spans), "truncated": is_truncated(t),
         "generated_tokens": t.n_generated, "total_tokens": len(t.response_ids)}
        for t in trajectories
    ]  # fmt: skip
    episode_keys = ("em", "f1", "format_valid", "searches", "supporting_recall", "turns",
                    "truncated")  # fmt: skip
    response_keys = ("generated_tokens", "total_tokens")
    means = mean_over(episodes, ("reward", *episode_keys, *response_keys))
    metrics = {
        "episode/reward": means.get("reward"),
        "episode/reward_std": float(np.std([t.reward for t in trajectories])),
        **{f"episode/{k}": means.get(k) for k in episode_keys},
        **{f"response/{k}": means.get(k) for k in response_keys},
        "health/flat_group_fraction": flat_group_fraction(trajectories),
    }
    if any(any(t.turn_rewards) for t in trajectories):  # the env's step rewards (shaping)
        metrics["episode/shaping"] = float(np.mean([sum(t.turn_rewards) for t in trajectories]))
    if tokenizer is not None:
        metrics |= think_metrics(trajectories, tokenizer)
    return {k: v for k, v in metrics.items() if v is not None and not math.isnan(v)}


def flat_group_fraction(trajectories: Sequence[Trajectory]) -> float | None:
    """The fraction of groups (questions sampled twice or more) whose samples all got the
    same return (reward plus any step rewards); None when no group has two samples."""
    groups = [g for g, r in group_returns(trajectories).items() if len(r) > 1]
    flat = flat_groups(trajectories)
    return sum(1 for g in groups if g in flat) / len(groups) if groups else None


_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.S)


def think_chars(text: str) -> int:
    """Characters inside ``<think>...</think>`` in one model turn (an unclosed block runs
    to the end; a turn that closes a block it did not open began inside the prompt's
    ``<think>`` prefill)."""
    close, open_ = text.find("</think>"), text.find("<think>")
    if close != -1 and (open_ == -1 or close < open_):
        text = "<think>" + text
    return sum(len(m.group(1).strip()) for m in _THINK.finditer(text))


def think_metrics(trajectories: Sequence[Trajectory], tokenizer: Any) -> dict[str, float]:
    """``episode/think_chars``: mean ``<think>`` characters per model turn. Decodes the
    model's turns only (the tokens of retrieved documents are never decoded)."""
    per_turn = [
        think_chars(tokenizer.decode(t.response_ids[start:end], skip_special_tokens=True))
        for t in trajectories
        for start, end in t.turn_spans
    ]
    return {"episode/think_chars": float(np.mean(per_turn))} if per_turn else {}


class MetricsLogger:
    """Metrics to the console, ``<output_dir>/metrics.jsonl`` and (if enabled) wandb.

    wandb follows its own login rules (:func:`wandb_mode`: online after ``wandb login`` or
    with ``WANDB_API_KEY``, else offline), quietly (one console line says where the run
    is), and is off with ``WANDB_MODE=disabled`` (what the tests set) or
    ``logging.wandb: false``.
    """

    CONSOLE_KEYS = (
        "episode/reward", "episode/em", "episode/f1", "episode/format_valid",
        "episode/searches", "response/generated_tokens", "train/pg_loss", "train/kl",
        "train/entropy", "train/clipfrac", "train/v_loss", "train/grad_norm",
        "sampling/rounds", "sampling/kept_groups", "time/step", "eval/reward",
    )  # fmt: skip

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.output_dir = Path(config.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.output_dir / "metrics.jsonl"
        print(
            f"output: {self.output_dir.resolve()} (metrics.jsonl, checkpoints/, final/)",
            file=sys.stderr,
            flush=True,
        )
        self._written = False
        self.health = HealthMonitor()
        self.wandb_run: Any = None
        if config.logging.wandb and os.environ.get("WANDB_MODE") != "disabled":
            self.wandb_run = _start_wandb(config)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        if not self._written:
            # A resumed run replays the steps after its checkpoint: drop their old records
            # (and an old record of this very step with the same metrics), not the rest.
            self._drop_records(lambda r: r["step"] > step or (r["step"] == step and bool(
                set(r) & set(metrics))))  # fmt: skip
            self._written = True
        with self.jsonl.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self._warn_if_flat(step, metrics)
        for line in self.health.update(step, metrics):  # one line per threshold crossing
            print(f"{line} [{self.config.algo}]", file=sys.stderr, flush=True)
        if self.wandb_run is not None:
            self.wandb_run.log(metrics, step=step)
        every = self.config.logging.every
        if every and step % every == 0:
            shown = " ".join(
                f"{k.split('/', 1)[1]}={metrics[k]:.4g}" for k in self.CONSOLE_KEYS if k in metrics
            )
            print(f"[{self.config.algo} step {step}] {shown}", file=sys.stderr, flush=True)

    def resume_from(self, step: int) -> int:
        """Drop the records of steps after ``step`` from ``metrics.jsonl`` (and a line cut
        short by a kill): a run resumed from the checkpoint of ``step`` logs them again.
        Returns how many lines were dropped."""
        return self._drop_records(lambda r: r["step"] > step)

    def _drop_records(self, stale_if: Any) -> int:
        return drop_jsonl_records(self.jsonl, stale_if)

    def _warn_if_flat(self, step: int, metrics: dict[str, float]) -> None:
        """A warning line when most of a step's groups were dropped for equal rewards: the
        update then learns from few episodes, or none."""
        flat = metrics.get("filter/zero_variance_groups", 0.0)
        groups = self.config.rollout.questions_per_step
        if flat and flat * 2 > groups:
            skipped = " (update skipped)" if metrics.get("train/skipped_steps") else ""
            print(
                f"warning: [{self.config.algo} step {step}] {int(flat)} of {groups} groups "
                f"had equal rewards and were dropped{skipped}: no learning signal. Raise "
                "rollout.group_size or the temperature, warm-start with --algo sft, or ease the "
                "task (fewer hops, reward: research).",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


def _start_wandb(config: TrainConfig) -> Any:
    try:
        import wandb
    except ImportError:
        return None
    mode = wandb_mode()
    name = config.logging.run_name or Path(config.output_dir).name
    run = wandb.init(
        project=config.logging.wandb_project,
        name=name,
        dir=str(config.output_dir),
        config=config.to_dict(),
        mode=mode,  # type: ignore[arg-type]
        settings=wandb.Settings(silent=True),  # its banner was most of the run's console
    )
    if mode == "online":
        print(f"wandb: {getattr(run, 'url', '')}", file=sys.stderr)
    else:  # the run folder `wandb sync` takes (run.dir is its files/ subfolder)
        folder = Path(getattr(run, "dir", config.output_dir)).parent
        print(f"wandb: {mode} run in {folder} (`wandb sync {folder}` uploads it)", file=sys.stderr)
    return run


def wandb_mode() -> str:
    """wandb's mode by wandb's own login rules: ``WANDB_MODE`` if set; else online when an
    API key is known, from ``WANDB_API_KEY`` or the netrc entry ``wandb login`` writes
    (``NETRC``, else ``~/.netrc`` or ``~/_netrc``, for the host of ``WANDB_BASE_URL``);
    else offline, so a machine without an account still logs locally."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    import netrc
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    paths = [os.environ.get("NETRC"), "~/.netrc", "~/_netrc"]
    for path in (Path(p).expanduser() for p in paths if p):
        if path.is_file():
            try:
                entry = netrc.netrc(str(path)).authenticators(host or "")
            except (netrc.NetrcParseError, OSError):
                return "offline"
            return "online" if entry and entry[2] else "offline"
    return "offline"


def _plain(value: Any) -> Any:
    return float(value) if isinstance(value, (Tensor, np.floating, np.integer)) else value


def progress_bar(initial: int, total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)


def drop_jsonl_records(path: Path, stale_if: Any) -> int:
    """Rewrite the JSONL file ``path`` (atomically) without the records for which
    ``stale_if(record)`` is true, nor a line cut short by a kill. Records carry an integer
    ``"step"``. A resumed run uses it before it logs the steps after its checkpoint again.
    Returns how many lines were dropped (0, and no rewrite, when none or no file)."""
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            record["step"] = int(record["step"])
            stale = bool(stale_if(record))
        except (ValueError, KeyError, TypeError):
            stale = bool(line.strip())  # a partial line from a killed write
        if stale:
            dropped += 1
        elif line.strip():
            kept.append(line)
    if dropped:
        text = "".join(line + "\n" for line in kept)
        with atomic_file(path) as staging:
            staging.write_text(text, encoding="utf-8")
    return dropped
