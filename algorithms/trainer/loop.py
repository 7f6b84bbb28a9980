"""The shared on-policy loop every algorithm runs (after Stable-Baselines3's ``OnPolicyAlgorithm``).

One training step, end to end::

    trajectories = collect_rollouts(step)        # rollout engine over the vector env
    kept = filter_trajectories(trajectories)     # drop flat groups (optional)
    batch = collate(kept, device=policy.device)  # algorithms.buffer
    data = prepare_update(batch)                 # no-grad: pi_old, reference, critic values
    data.advantages = compute_advantages(...)    # the algorithm's registered estimator
    run_update(data, objective)                  # minibatches of policy_objective (update.py)
    scheduler.step(); log; evaluate; checkpoint

An algorithm (``grpo.py``, ``ppo.py``, ``reinforce.py``, ``sft.py``) only *declares*: its
advantage estimator and parameters (:meth:`advantage_spec`), the weights of the
objective's terms (:meth:`objective_terms`), whether the KL sits in the reward, and, for
PPO, how its critic is built. Everything else lives here and in ``update.py``.

Verbs: ``algo.learn(total_steps, callback=...)``, ``algo.save(dir)``, ``Algo.load(dir)``,
``algo.predict(observation)`` and ``algo.evaluate()``.

Why one file of ~500 lines: it is one idea, the algorithm object's lifecycle (build,
declare, roll out, step, learn, evaluate, save and load), and its verbs read best side by
side; the update, metrics, optimizer and checkpoint files hold the machinery it calls.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from algorithms.buffer import Trajectory, UpdateBatch, collate
from algorithms.config import TrainConfig
from algorithms.objectives import AdvantageInputs, ObjectiveTerms, compute_advantages
from algorithms.objectives.losses import kl_penalty
from algorithms.objectives.objective import policy_objective
from algorithms.objectives.ops import masked_mean
from algorithms.policy import VALUE_HEAD_FILE, Policy
from algorithms.scoring import TokenScores
from algorithms.trainer import checkpoint as ckpt
from algorithms.trainer import distributed, fsdp
from algorithms.trainer.freeze import train_top_layers
from algorithms.trainer.metrics import MetricsLogger, episode_metrics, is_truncated, progress_bar
from algorithms.trainer.optim import lr_factor, make_optimizer, master_weights_by_name
from algorithms.trainer.update import Models, prepare_update, run_update

Callback = Callable[["OnPolicyAlgorithm", dict[str, float]], bool | None]
# A step's metrics that count a rank's own share: summed over data-parallel ranks, not
# averaged. (Skipped steps and updates are decided on all-reduced values, the same on
# every rank, so their mean is the count.)
RANK_COUNTS = frozenset({
    "filter/zero_variance_groups", "filter/kept_episodes", "filter/truncated_episodes",
    "perf/update_tokens", "perf/update_tokens_per_s", "perf/rollout_tokens_per_s",
})  # fmt: skip


class OnPolicyAlgorithm:
    """Base class of GRPO, PPO, REINFORCE and the SFT warm start.

    Args:
        policy: the policy to train (``algorithms.policy.load_policy``).
        env_kwargs: ``MultiHopSearchEnv`` arguments for training rollouts; default
            ``config.env``. May hold objects YAML cannot (a dataset list, a reward callable).
        config: the run's :class:`~algorithms.config.TrainConfig` (defaults if omitted). The
            algorithm's own hyperparameters are its section (``config.grpo`` ...).
        eval_env_kwargs: env arguments for evaluation; default ``env_kwargs`` with
            ``split = config.eval.split``.
        reference_model: frozen KL reference for full fine-tuning (default: a copy of the
            policy's model at construction; never built when the KL coefficient is 0 and
            never needed with LoRA, whose base model is the reference).
        critic: a separate critic policy (PPO only).
    """

    name: ClassVar[str] = ""

    def __init__(
        self,
        policy: Policy,
        env_kwargs: dict[str, Any] | None = None,
        config: TrainConfig | None = None,
        *,
        eval_env_kwargs: dict[str, Any] | None = None,
        reference_model: Any = None,
        critic: Policy | None = None,
    ) -> None:
        self.config = copy.deepcopy(config) if config is not None else TrainConfig()
        self.config.algo = self.name
        # Every value checked before any heavy work (names only when the env comes from
        # the config: env_kwargs may hold objects, a dataset list or a reward callable).
        self.config.validate(check_names=env_kwargs is None)
        self.policy = policy
        _sync_model_config(self.config, policy)
        self.env_kwargs = (
            dict(env_kwargs) if env_kwargs is not None else self.config.env.to_env_kwargs()
        )
        if eval_env_kwargs is None:
            eval_env_kwargs = {**self.env_kwargs, "split": self.config.eval.split}
        self.eval_env_kwargs = eval_env_kwargs
        self.step = 0
        self._transcripts_started = False  # the first save trims a resumed run's replayed steps
        if distributed.is_distributed() and self.config.trainer.minibatch_size is not None:
            raise ValueError(
                "data-parallel training takes one optimizer step per epoch over each rank's "
                "rows: set trainer.minibatch_size to null (and epochs for more steps)"
            )
        # Seed before any parameter is created (a value head, a critic): same seed, same run.
        seed_everything(self.config.trainer.seed)
        self.critic = self._build_critic(critic)
        self.reference_model = None
        if self.kl_coef != 0.0 and self.policy.lora is None:
            self.reference_model = reference_model or _frozen_copy(self.policy.model)
        # FSDP (trainer/fsdp.py): shard before the optimizer sees the parameters; the
        # twin is where rollouts, evaluation and checkpoints get the full weights.
        self._twin: fsdp.UnshardedTwin | None = None
        if self.config.trainer.sharding == "fsdp":
            self._twin = fsdp.UnshardedTwin(self.policy.model)
            for model in (self.policy.model, self.reference_model):
                if model is not None:
                    fsdp.shard_model(model)

        if self.config.trainer.train_layers is not None:  # before the optimizer takes params
            train_top_layers(self.policy.model, self.config.trainer.train_layers)
        actor = [p for p in self.policy.model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(actor, self._critic_parameters(), self.config.optim)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: lr_factor(step, self.config.optim, self.config.trainer.steps),
        )
        self._engine: Any = None
        self._eval_engine: Any = None
        self._num_questions: int | None = None
        self._logger: MetricsLogger | None = None

    # ----------------------------------------------------------------------------------
    # What an algorithm declares
    # ----------------------------------------------------------------------------------

    @property
    def hparams(self) -> Any:
        """This algorithm's section of the config (``config.grpo`` for GRPO, ...)."""
        return getattr(self.config, self.name)

    @property
    def kl_coef(self) -> float:
        """Weight of the KL to the reference policy (0 = no reference pass at all)."""
        return float(getattr(self.hparams, "kl_coef", 0.0))

    @property
    def kl_in_reward(self) -> bool:
        """True when the KL penalty is part of the reward (PPO, REINFORCE), which needs
        pi_old's log-probs before the advantages are computed."""
        return False

    def advantage_spec(self) -> tuple[str, dict[str, Any]] | None:
        """The advantage estimator's registry name and parameters (None: no advantages)."""
        raise NotImplementedError

    def objective_terms(self) -> ObjectiveTerms:
        """The weights of :func:`~algorithms.objectives.policy_objective`'s terms."""
        raise NotImplementedError

    def _build_critic(self, critic: Policy | None) -> Policy | None:
        """Build the critic, if the algorithm has one (PPO). Called after seeding."""
        return None

    def _critic_parameters(self) -> list[torch.nn.Parameter]:
        params: list[torch.nn.Parameter] = []
        if self.policy.value_head is not None:
            params += list(self.policy.value_head.parameters())
        if self.critic is not None:
            params += self.critic.trainable_parameters()
        return params

    # ----------------------------------------------------------------------------------
    # Rollouts
    # ----------------------------------------------------------------------------------

    @property
    def engine(self) -> Any:
        """The rollout engine for training episodes (built on first use)."""
        if self._engine is None:
            self._engine = self._make_engine(self.env_kwargs)
        return self._engine

    def _make_engine(self, env_kwargs: dict[str, Any]) -> Any:
        from algorithms.rollout import RolloutEngine

        r = self.config.rollout
        backend = getattr(self, "_vllm_backend", None)  # one vLLM engine for train and eval
        if r.backend == "vllm" and backend is None:
            from algorithms.rollout.vllm_backend import VLLMBackend

            backend = self._vllm_backend = VLLMBackend.create(
                r.vllm_model or self.policy.model.config._name_or_path,
                gpu_memory_utilization=r.vllm_gpu_memory_utilization,
                max_model_len=r.vllm_max_model_len,
                seed=self.config.trainer.seed,
                sleep=r.vllm_sleep,
            )
        return RolloutEngine(
            self.policy,
            env_kwargs,
            sampling=r.sampling(),
            prompt_format=r.prompt_format,
            rollout_dtype=r.rollout_dtype,
            pack_weights=r.pack_weights,
            fused=r.fused,
            backend=backend,
        )

    @property
    def num_questions(self) -> int:
        if self._num_questions is None:
            self._num_questions = self.engine.num_questions
        return self._num_questions

    def question_indices(self, step: int) -> list[int]:
        """The questions of training step ``step``: consecutive slices of a seeded shuffle of
        the split, reshuffled each pass. A pure function of (seed, step), so a resumed run
        draws exactly the questions the uninterrupted run would have."""
        n, q = self.num_questions, self.config.rollout.questions_per_step
        seed = self.config.trainer.seed
        indices = []
        for position in range(step * q, (step + 1) * q):
            epoch, offset = divmod(position, n)
            order = np.random.default_rng([seed, epoch]).permutation(n)
            indices.append(int(order[offset]))
        return indices

    def collect_rollouts(self, step: int) -> list[Trajectory]:
        """This step's episodes. Seeding per step makes sampling a function of (weights,
        seed, step) alone."""
        sampling = self.config.rollout.sampling(seed=self.config.trainer.seed * 1_000_003 + step)
        questions = distributed.shard(self.question_indices(step))  # all of them on one rank
        with self._full_model() as model:
            return self.engine.collect(
                questions, self.config.rollout.group_size, sampling=sampling, model=model
            )

    @contextlib.contextmanager
    def _full_model(self, *, rank0_only: bool = False) -> Iterator[Any]:
        """The policy's model with all its weights: the model itself or, under FSDP, its
        twin with the shards gathered in (a collective: every rank must enter; with
        ``rank0_only`` the other ranks get ``None``)."""
        if self._twin is None:
            yield self.policy.model
            return
        with self._twin.gathered(self.policy.model, rank0_only=rank0_only) as model:
            yield model

    @contextlib.contextmanager
    def _full_policy(self, *, rank0_only: bool = False) -> Iterator[Policy | None]:
        """:meth:`_full_model` as a :class:`Policy` (what saving and exporting take)."""
        with self._full_model(rank0_only=rank0_only) as model:
            yield None if model is None else replace(self.policy, model=model)

    # ----------------------------------------------------------------------------------
    # One training step
    # ----------------------------------------------------------------------------------

    def train_step(self) -> dict[str, float]:
        """Roll out, compute advantages and update once; return this step's metrics."""
        t0 = time.perf_counter()
        trajectories = self.collect_rollouts(self.step)
        t1 = time.perf_counter()
        metrics = episode_metrics(trajectories, self.policy.tokenizer)
        metrics["time/rollout"] = t1 - t0
        metrics["perf/rollout_tokens_per_s"] = (
            metrics.get("response/generated_tokens", 0.0) * len(trajectories) / max(t1 - t0, 1e-9)
        )
        metrics |= self.learn_from(trajectories)
        metrics["time/step"] = time.perf_counter() - t0
        return distributed.mean_over_ranks(metrics, summed=RANK_COUNTS)

    def learn_from(self, trajectories: Sequence[Trajectory]) -> dict[str, float]:
        """The update half of a step, on given trajectories (what tests drive directly)."""
        t0 = time.perf_counter()
        kept, metrics = self.filter_trajectories(trajectories)
        if self._twin is not None:
            counts = distributed.gather_objects(len(kept))
            if len(set(counts)) > 1:
                raise RuntimeError(
                    "under FSDP every rank must update on as many episodes as the others "
                    f"(each pass over a sharded block is a collective); the ranks kept {counts}"
                )
        # Every rank must agree on whether there is an update at all (its collectives).
        anywhere = distributed.all_reduce_sum(float(len(kept)), self.policy.device)
        data: UpdateBatch | None = None
        if kept:
            batch = collate(kept, self.policy.tokenizer.pad_token_id, device=self.policy.device)
            data = prepare_update(
                batch,
                self._models(),
                self.config,
                recompute_old=self._recompute_old(len(kept)),
                with_reference=self.kl_coef != 0.0,
            )
            stats = self.compute_advantages(data)
            metrics |= self._mask_truncated(data, kept)
            t1 = time.perf_counter()
            metrics["time/prepare"] = t1 - t0
            metrics |= self._run_update(data)
            metrics |= {k: float(v) for k, v in stats.items()}  # read after the update
            metrics["time/update"] = time.perf_counter() - t1
            metrics["perf/update_tokens_per_s"] = metrics["perf/update_tokens"] / max(
                metrics["time/update"], 1e-9
            )
        elif anywhere:  # only other ranks kept episodes: join their update with no rows
            metrics |= self._run_update(None)
        else:
            metrics["train/skipped_steps"] = 1.0
        self._save_transcripts(trajectories, kept, data)
        with warnings.catch_warnings():
            # A step whose update was skipped still advances the schedule; torch warns then.
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            self.scheduler.step()
        self.step += 1
        metrics["train/lr"] = self.optimizer.param_groups[0]["lr"]
        return metrics

    def _save_transcripts(
        self,
        trajectories: Sequence[Trajectory],
        kept: Sequence[Trajectory],
        data: UpdateBatch | None,
    ) -> None:
        """``logging.save_transcripts`` episodes of this step as the loss saw them (the mask
        after truncation filtering, the advantages; dropped groups marked), for
        ``research-env view``."""
        count = self.config.logging.save_transcripts
        if count and distributed.is_main_process():
            from algorithms.transcripts import SUFFIX, save_step

            path = Path(self.config.output_dir) / "transcripts" / f"train{SUFFIX}"
            if not self._transcripts_started:
                # A resumed run plays the steps after its checkpoint again: their old
                # records go, so the view shows each step once.
                from algorithms.trainer.metrics import drop_jsonl_records

                drop_jsonl_records(path, lambda r: r["step"] > self.step)
                self._transcripts_started = True
            mask, advantages = (None, None) if data is None else (data.mask, data.advantages)
            save_step(path, trajectories, self.policy.tokenizer, kept=kept, loss_mask=mask,
                      advantages=advantages, step=self.step + 1, limit=count,
                      source=f"{self.name} training")  # fmt: skip

    def _run_update(self, data: UpdateBatch | None) -> dict[str, float]:
        terms = self.objective_terms()
        return run_update(
            data,
            self._models(),
            self.optimizer,
            self.config,
            self.objective,
            loss_agg=terms.loss_agg,
            entropy_grad=terms.entropy_coef != 0.0,
        )

    def objective(self, data: UpdateBatch, scores: TokenScores, denominator: float):
        """The loss of one micro-batch: the shared policy objective with this algorithm's
        terms (and the run's truncated-importance-sampling cap, ``trainer.tis_cap``)."""
        terms = replace(self.objective_terms(), tis_cap=self.config.trainer.tis_cap)
        return policy_objective(scores, data, terms, denominator)

    def compute_advantages(self, data: UpdateBatch) -> dict[str, Tensor]:
        """Fill ``data.advantages`` (and ``data.returns``) with the declared estimator."""
        spec = self.advantage_spec()
        if spec is None:
            return {}
        name, params = spec
        mask, stats = data.mask, {}
        kl = None
        if self.kl_in_reward:
            assert data.old_logprobs is not None and data.ref_logprobs is not None
            kl = kl_penalty(data.old_logprobs, data.ref_logprobs, self.hparams.kl_estimator, mask)
            stats["train/kl"] = masked_mean(kl, mask)
        batch = data.batch
        # The episode's return: the final reward plus the turns' step rewards (shaping).
        returns = batch.rewards
        if batch.step_rewards is not None:
            returns = returns + batch.step_rewards.sum(dim=-1)
        inputs = AdvantageInputs(
            returns,
            mask,
            batch.group_ids,
            kl,
            self.kl_coef,
            values=data.old_values,
            step_rewards=batch.step_rewards,
        )
        result = compute_advantages(name, inputs, **params)
        data.advantages, data.returns = result.advantages, result.returns
        stats["train/advantage_abs"] = masked_mean(result.advantages.abs(), mask)
        if data.old_values is not None:
            stats["train/value_mean"] = masked_mean(data.old_values, mask)
        if result.returns is not None:
            stats["train/return_mean"] = masked_mean(result.returns, mask)
        return stats

    def filter_trajectories(
        self, trajectories: Sequence[Trajectory]
    ) -> tuple[list[Trajectory], dict[str, float]]:
        """Drop groups whose rewards are all equal, if configured (counted in the metrics).
        Only meaningful for algorithms with advantages: a flat group has no signal."""
        kept = list(trajectories)
        stats = {"filter/zero_variance_groups": 0.0, "filter/kept_episodes": float(len(kept))}
        if self.config.trainer.filter_zero_variance_groups and self.advantage_spec() is not None:
            rewards: dict[int, list[float]] = defaultdict(list)
            for t in trajectories:
                rewards[t.group].append(t.episode_return)
            flat = {g for g, r in rewards.items() if max(r) - min(r) == 0.0}
            kept = [t for t in trajectories if t.group not in flat]
            stats["filter/zero_variance_groups"] = float(len(flat))
            stats["filter/kept_episodes"] = float(len(kept))
        return kept, stats

    def _mask_truncated(self, data: UpdateBatch, kept: Sequence[Trajectory]) -> dict[str, float]:
        """Zero the loss mask of truncated episodes after they served as baselines."""
        truncated = [i for i, t in enumerate(kept) if is_truncated(t)]
        masked = self.config.trainer.filter_truncated and bool(truncated)
        if masked:
            data.batch.loss_mask[torch.tensor(truncated, device=data.mask.device)] = 0.0
        return {"filter/truncated_episodes": float(len(truncated) if masked else 0)}

    def _recompute_old(self, n_rows: int) -> bool:
        """Whether pi_old needs its own no-grad pass (``trainer.old_logprobs``)."""
        cfg = self.config.trainer
        if cfg.old_logprobs != "auto":
            return cfg.old_logprobs == "recompute"
        single = cfg.epochs == 1 and (cfg.minibatch_size is None or cfg.minibatch_size >= n_rows)
        return not single or self.kl_in_reward

    def _models(self) -> Models:
        return Models(self.policy, self.critic, self.reference_model)

    # ----------------------------------------------------------------------------------
    # learn / evaluate / predict
    # ----------------------------------------------------------------------------------

    def learn(
        self,
        total_steps: int | None = None,
        callback: Callback | Sequence[Callback] | None = None,
    ) -> OnPolicyAlgorithm:
        """Train until ``self.step == total_steps`` (default ``config.trainer.steps``).

        ``total_steps`` is absolute, so a resumed run called with the same number continues
        where it stopped. Each callback gets ``(algo, metrics)`` after every step; returning
        ``False`` stops training. Checkpoints, evaluation and logging follow the config.
        """
        total = self.config.trainer.steps if total_steps is None else total_steps
        self.config.trainer.steps = total  # the LR schedule's horizon
        callbacks = [] if callback is None else [callback] if callable(callback) else callback
        out = Path(self.config.output_dir)
        main = distributed.is_main_process()  # rank 0 alone logs, evaluates and saves
        logger = self.logger if main else None
        every_ckpt, every_eval = self.config.checkpoint.every, self.config.eval.every
        if not main and self._twin is None:  # under FSDP every rank joins the gather
            every_eval = 0
        bar = progress_bar(self.step, total, self.config.logging.progress_bar and main)
        stop = False
        threads = torch.get_num_threads()
        if self.config.trainer.num_threads:
            torch.set_num_threads(self.config.trainer.num_threads)
        try:
            while self.step < total and not stop:
                metrics = self.train_step()
                if every_eval and self.step % every_eval == 0:
                    metrics |= self.evaluate()
                if logger is not None:
                    logger.log(self.step, metrics)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(reward=f"{metrics.get('episode/reward', float('nan')):.3f}")
                if every_ckpt and self.step % every_ckpt == 0:
                    self._save_step(out)
                stop = any(cb(self, metrics) is False for cb in callbacks)
        finally:
            torch.set_num_threads(threads)
            if bar is not None:
                bar.close()
        if not stop:
            if every_eval and self.step % every_eval != 0:
                final_eval = self.evaluate()
                if logger is not None:
                    logger.log(self.step, final_eval)
            if not every_ckpt or self.step % every_ckpt != 0:  # every 0: only at the end
                self._save_step(out)
            if self.config.checkpoint.export_final and (main or self._twin is not None):
                with self._full_policy(rank0_only=True) as policy:
                    if policy is not None and main:
                        masters = master_weights_by_name(self.optimizer, policy.model)
                        ckpt.export_pretrained(
                            policy, out / "final", config=self.config, step=self.step,
                            weights=masters,
                        )  # fmt: skip
            distributed.barrier()
        return self

    def _save_step(self, out: Path) -> None:
        """Rank 0 writes the step's checkpoint (the state is the same on every rank;
        under FSDP every rank takes part in gathering it)."""
        main = distributed.is_main_process()
        if main or self._twin is not None:
            self.save(ckpt.step_dir(out, self.step))
        if main:
            ckpt.prune_checkpoints(out, self.config.checkpoint.keep_last)
        distributed.barrier()

    def close(self) -> None:
        """Finish the metrics logger (and its wandb run), if one was started, and leave the
        process group of a data-parallel run."""
        if self._logger is not None:
            self._logger.close()
        distributed.shutdown()

    @property
    def logger(self) -> MetricsLogger:
        if self._logger is None:
            self._logger = MetricsLogger(self.config)
        return self._logger

    def evaluate(self, questions: int | None = None) -> dict[str, float]:
        """Score the policy on the first ``questions`` of the held-out split."""
        cfg = self.config.eval
        if self._eval_engine is None:
            self._eval_engine = self._make_engine(self.eval_env_kwargs)
        count = min(self._eval_engine.num_questions, questions or cfg.questions)
        greedy = cfg.temperature <= 0
        sampling = self.config.rollout.sampling(
            greedy=greedy,
            temperature=None if greedy else cfg.temperature,
            seed=self.config.trainer.seed,
        )
        # Evaluation must not perturb the training RNG streams.
        with torch.random.fork_rng(devices=[]), self._full_model(rank0_only=True) as model:
            if model is None:  # under FSDP, a rank that only helped gather the weights
                return {}
            trajectories = self._eval_engine.collect(
                list(range(count)), 1, sampling=sampling, model=model
            )
        return {f"eval/{k.split('/', 1)[1]}": v for k, v in episode_metrics(trajectories).items()}

    def predict(self, observation: str, *, max_new_tokens: int | None = None) -> str:
        """The policy's greedy next turn for a prompt (or a whole conversation so far)."""
        from algorithms.rollout import generate

        tokenizer = self.policy.tokenizer
        ids = tokenizer(observation, add_special_tokens=False)["input_ids"]
        with self._full_model() as model:  # under FSDP a collective: every rank calls it
            result = generate(
                model,
                [ids],
                max_new_tokens=max_new_tokens or self.config.rollout.max_turn_tokens,
                greedy=True,
                stop_strings=self.engine.stop_strings,  # the template's (tags or tool calls)
                tokenizer=tokenizer,
            )
        return tokenizer.decode(result.token_ids[0], skip_special_tokens=True)

    # ----------------------------------------------------------------------------------
    # save / load
    # ----------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> Path:
        """A complete, resumable checkpoint (written atomically).

        ``directory`` is a checkpoint, not a model directory: ``from_pretrained(directory)``
        fails; the model is ``directory/policy`` (``AutoModelForCausalLM``, or
        ``peft.AutoPeftModelForCausalLM`` with LoRA), and ``<out>/final`` is the export.

        Under FSDP every rank must call it: the weights and optimizer moments are gathered
        whole (the same checkpoint as without FSDP) and rank 0 writes them.
        """
        optimizer_state = None
        if self._twin is not None:
            optimizer_state = fsdp.full_optimizer_state(self.optimizer)
        with self._full_policy(rank0_only=True) as policy:
            if policy is not None:
                ckpt.save_checkpoint(
                    directory,
                    policy=policy,
                    config=self.config,
                    step=self.step,
                    optimizer=self.optimizer,
                    optimizer_state=optimizer_state,
                    scheduler=self.scheduler,
                    critic=self.critic,
                )
        if self._twin is not None:
            distributed.barrier()  # written when any rank returns
        return Path(directory)

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        env_kwargs: dict[str, Any] | None = None,
        *,
        eval_env_kwargs: dict[str, Any] | None = None,
        config_overrides: list[str] | dict[str, Any] | None = None,
    ) -> OnPolicyAlgorithm:
        """Rebuild an algorithm from :meth:`save` output, ready to continue training:
        same weights, optimizer moments, LR schedule position, RNG states and step."""
        state = ckpt.load_checkpoint(directory)
        config = state.config
        if config_overrides:
            config = config.with_overrides(config_overrides)
        base = config.model.name
        policy_dir = Path(directory) / "policy"
        policy = ckpt.load_policy_weights(
            policy_dir, config, base_name=base, value_head=(policy_dir / VALUE_HEAD_FILE).exists()
        )
        policy.name = base
        critic = None
        if (Path(directory) / "critic").exists():
            critic_base = getattr(getattr(config, cls.name, None), "critic_model", None) or base
            critic = ckpt.load_policy_weights(
                Path(directory) / "critic", config, base_name=critic_base, value_head=True
            )
        reference = None
        section = getattr(config, cls.name, None)
        if config.model.lora is None and float(getattr(section, "kl_coef", 0.0)):
            from algorithms.policy import load_policy

            # The reference is the *initial* model, not the checkpoint's weights.
            reference = _frozen_copy(
                load_policy(base, dtype=config.model.dtype, device=config.model.device).model
            )
        algo = cls(
            policy,
            env_kwargs,
            config,
            eval_env_kwargs=eval_env_kwargs,
            reference_model=reference,
            critic=critic,
        )
        algo.step = state.step
        if state.optimizer is not None:
            optimizer_state = state.optimizer
            if algo._twin is not None:  # a full state, cut to this rank's shards
                optimizer_state = fsdp.shard_optimizer_state(algo.optimizer, optimizer_state)
            algo.optimizer.load_state_dict(optimizer_state)
        if state.scheduler is not None:
            algo.scheduler.load_state_dict(state.scheduler)
        ckpt.restore_rng_state(state.rng)
        return algo


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _frozen_copy(model: Any) -> Any:
    reference = copy.deepcopy(model)
    reference.eval().requires_grad_(False)
    return reference


def _sync_model_config(config: TrainConfig, policy: Policy) -> None:
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
