"""The shared on-policy algorithm object (after Stable-Baselines3's ``OnPolicyAlgorithm``):
what an algorithm declares, and its lifecycle.

One training step, end to end::

    trajectories = collect_rollouts(step)        # rollout engine over the vector env
    result = update_step(trajectories, ...)      # step.py: filter -> collate -> pi_old,
                                                 # reference, values -> advantages -> update
    scheduler.step(); log; evaluate; checkpoint

Three files, one per concern: ``build.py`` (seeds, the rollout engine and its backend,
the frozen reference), ``step.py`` (the step pipeline, plain functions that never call
back here), and this one (the algorithm's declarations and its lifecycle verbs).

An algorithm (``grpo.py``, ``ppo.py``, ``reinforce.py``, ``sft.py``) only *declares*: its
advantage estimator and parameters (:meth:`advantage_spec`), the weights of the
objective's terms (:meth:`objective_terms`), whether the KL sits in the reward, its
settings (``settings_class``) and, for PPO, how its critic is built; :meth:`recipe`
hands those to the step pipeline once per step.

Verbs: ``algo.learn(steps, callback=...)`` (``steps`` more), ``algo.save(dir)``, ``Algo.load(dir)``,
``algo.predict(observation)`` and ``algo.evaluate()``.

Why one file of ~600 lines: it is one idea, the algorithm object's lifecycle (declare,
roll out, learn, evaluate, save and load), and its verbs read best side by side.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
import torch

from algorithms.buffer import Trajectory, UpdateBatch
from algorithms.config import TrainConfig
from algorithms.objectives import ObjectiveTerms
from algorithms.policy import VALUE_HEAD_FILE, Policy
from algorithms.trainer import build, distributed, dynamic_sampling, fsdp
from algorithms.trainer import checkpoint as ckpt
from algorithms.trainer.freeze import train_top_layers
from algorithms.trainer.metrics import MetricsLogger, episode_metrics, progress_bar
from algorithms.trainer.optim import lr_factor, make_optimizer, master_weights_by_name
from algorithms.trainer.step import StepRecipe, update_step
from algorithms.trainer.update import Models, NonFiniteUpdateError
from research_env.retrievers.web import BudgetExhausted

Callback = Callable[["OnPolicyAlgorithm", dict[str, float]], bool | None]
# A step's metrics that count a rank's own share: summed over data-parallel ranks, not
# averaged. (Skipped steps and updates are decided on all-reduced values, the same on
# every rank, so their mean is the count.)
COUNTERS = frozenset({
    "filter/zero_variance_groups", "filter/kept_episodes", "filter/truncated_episodes",
    "perf/update_tokens", "perf/update_tokens_per_s", "perf/rollout_tokens_per_s",
    "sampling/drawn_groups", "sampling/kept_groups", "sampling/drawn_episodes",
    "sampling/short_of_groups",
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
    # The algorithm's own settings dataclass (an ``algorithms.settings.AlgorithmSettings``):
    # its config section, ``hparams``.
    settings_class: ClassVar[type | None] = None

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
        build.sync_model_config(self.config, policy)
        self.env_kwargs = (
            dict(env_kwargs) if env_kwargs is not None else self.config.env.to_env_kwargs()
        )
        if eval_env_kwargs is None:
            # The held-out split is played whole: a training hop filter does not apply.
            held_out = {"split": self.config.eval.split}
            eval_env_kwargs = (
                self.env_kwargs | held_out | ({"hops": None} if "hops" in self.env_kwargs else {})
            )
        self.eval_env_kwargs = eval_env_kwargs
        self.step = 0
        self._transcripts_started = False  # the first save trims a resumed run's replayed steps
        if distributed.is_distributed() and self.config.trainer.minibatch_size is not None:
            raise ValueError(
                "data-parallel training takes one optimizer step per epoch over each rank's "
                "rows: set trainer.minibatch_size to null (and epochs for more steps)"
            )
        # Seed before any parameter is created (a value head, a critic): same seed, same run.
        build.seed_everything(self.config.trainer.seed)
        self.critic = self._build_critic(critic)
        self.reference_model = None
        if self.kl_coef != 0.0 and self.policy.lora is None:
            self.reference_model = reference_model or build.frozen_copy(self.policy.model)
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
        """This algorithm's own settings: its section of the config (``config.grpo`` for
        GRPO, ...), an instance of the class's ``settings_class``."""
        return self.config.settings(self.name)

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
        backend = getattr(self, "_vllm_backend", None)  # one vLLM engine for train and eval
        if self.config.rollout.backend == "vllm" and backend is None:
            backend = self._vllm_backend = build.vllm_backend(self.config, self.policy)
        return build.rollout_engine(self.config, self.policy, env_kwargs, backend)

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
        return self._play(step, distributed.shard(self.question_indices(step)))  # all on one rank

    def _play(self, step: int, questions: list[int], round_: int = 0) -> list[Trajectory]:
        """One group per question of ``questions``; ``round_`` > 0 is an extra round of
        dynamic sampling, seeded apart from the step's first."""
        seed = self.config.trainer.seed * 1_000_003 + step + round_ * 10_000_019
        sampling = self.config.rollout.sampling(seed=seed)
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
        drawn, sampled = trajectories, dict[str, float]()
        if self.config.rollout.dynamic_sampling != "off":
            trajectories, drawn, sampled = self._fill_step(trajectories)
        t1 = time.perf_counter()
        metrics = episode_metrics(drawn, self.policy.tokenizer) | sampled
        metrics["time/rollout"] = t1 - t0
        metrics["perf/rollout_tokens_per_s"] = (
            metrics.get("response/generated_tokens", 0.0) * len(drawn) / max(t1 - t0, 1e-9)
        )
        metrics |= self.learn_from(trajectories)
        metrics["time/step"] = time.perf_counter() - t0
        return distributed.mean_over_ranks(metrics, summed=COUNTERS)

    def _fill_step(
        self, first: list[Trajectory]
    ) -> tuple[list[Trajectory], list[Trajectory], dict[str, float]]:
        """Dynamic sampling (:mod:`algorithms.trainer.dynamic_sampling`): extra rounds of
        fresh questions until the step holds enough informative groups."""
        rollout, step = self.config.rollout, self.step
        questions = distributed.shard(self.question_indices(step))
        seed, rank = self.config.trainer.seed, distributed.rank()

        def draw(round_: int, played: list[int]) -> tuple[list[int], list[Trajectory]]:
            asked = dynamic_sampling.extra_questions(
                seed, step, round_, self.num_questions, len(questions), played, rank=rank
            )
            return asked, self._play(step, asked, round_)

        criterion = cast(dynamic_sampling.Criterion, rollout.dynamic_sampling)
        return dynamic_sampling.fill_step(
            first, draw, questions=questions, want=len(questions),
            criterion=criterion, max_rounds=rollout.max_sampling_rounds,
        )  # fmt: skip

    _nonfinite_skips: int = 0  # optimizer steps skipped so far (trainer.skip_nonfinite_updates)

    def learn_from(self, trajectories: Sequence[Trajectory]) -> dict[str, float]:
        """The update half of a step, on given trajectories (what tests drive directly):
        the step pipeline of ``step.py``, then the schedule and the step count."""
        try:
            result = update_step(
                trajectories,
                Models(self.policy, self.critic, self.reference_model),
                self.optimizer,
                self.config,
                self.recipe(),
                sharded=self._twin is not None,
            )
        except NonFiniteUpdateError as err:
            raise NonFiniteUpdateError(err.loss_finite, err.grad_norm, self.step + 1) from None
        metrics = result.metrics
        skipped = int(metrics.get("train/skipped_updates", 0))
        if skipped:
            self._nonfinite_skips += skipped
            warnings.warn(
                f"step {self.step + 1}: skipped {skipped} optimizer step(s) with a non-finite "
                f"loss or gradient norm ({self._nonfinite_skips} in this run; "
                "trainer.skip_nonfinite_updates=true)",
                RuntimeWarning,
                stacklevel=2,
            )
        self._save_transcripts(trajectories, result.kept, result.data)
        metrics["train/lr"] = self.optimizer.param_groups[0]["lr"]  # the lr this step used
        with warnings.catch_warnings():
            # A step whose update was skipped still advances the schedule; torch warns then.
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            self.scheduler.step()
        self.step += 1
        return metrics

    def recipe(self) -> StepRecipe:
        """What this algorithm declares for its update, gathered for the step pipeline."""
        return StepRecipe(
            advantage=self.advantage_spec(),
            terms=replace(self.objective_terms(), tis_cap=self.config.trainer.tis_cap),
            kl_coef=self.kl_coef,
            kl_in_reward=self.kl_in_reward,
            kl_estimator=getattr(self.hparams, "kl_estimator", None),
        )

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

    # ----------------------------------------------------------------------------------
    # learn / evaluate / predict
    # ----------------------------------------------------------------------------------

    def learn(
        self,
        steps: int | None = None,
        callback: Callback | Sequence[Callback] | None = None,
    ) -> OnPolicyAlgorithm:
        """Train ``steps`` more steps, as Stable-Baselines3's ``learn(N)`` does (a loaded
        step-2 checkpoint's ``learn(2)`` ends at step 4); without ``steps``, continue until
        ``config.trainer.steps`` (what ``research-env train --resume`` does).

        Each callback gets ``(algo, metrics)`` after every step; returning ``False`` stops
        training. Checkpoints, evaluation and logging follow the config. With nothing left
        to train it says so and returns, without evaluating or exporting again.
        """
        if steps is not None and steps < 1:
            raise ValueError(f"learn(steps) trains that many more steps; got steps={steps}")
        total = self.config.trainer.steps if steps is None else self.step + steps
        if total <= self.step:
            print(
                f"nothing to train: the policy is at step {self.step} and trainer.steps is "
                f"{total}; learn(N) trains N more steps",
                file=sys.stderr,
            )
            return self
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
                try:
                    metrics = self.train_step()
                except BudgetExhausted as err:
                    raise self._budget_spent(err, out) from None
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
                        _refuse_non_finite_weights(policy, self.step)
                        masters = master_weights_by_name(self.optimizer, policy.model)
                        ckpt.export_pretrained(
                            policy, out / "final", config=self.config, step=self.step,
                            weights=masters,
                        )  # fmt: skip
            distributed.barrier()
        return self

    def _budget_spent(self, err: BudgetExhausted, out: Path) -> BudgetExhausted:
        """A web search budget spent mid-run ends it cleanly: the last completed step is
        saved (one process; under several, each rank's budget is its own and the last
        periodic checkpoint stands) and the error says where and how to go on. The
        searches already paid for are in the query cache, so a resumed run repeats none."""
        done = ckpt.step_dir(out, self.step)
        if self.step == 0:
            where = "no update was made, so there is nothing to save"
        elif distributed.is_distributed():
            where = "the last periodic checkpoint stands (several processes)"
        else:
            if not done.exists():
                self._save_step(out)
            where = (
                f"step {self.step} is saved in {done}; resume with a larger budget "
                f"(research-env train --out {out} --resume)"
            )
        return BudgetExhausted(
            err.url, f"{err.reason}. Training stopped before step {self.step + 1}: {where}"
        )

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
            reference = build.frozen_copy(
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


def _refuse_non_finite_weights(policy: Policy, step: int) -> None:
    """No final model is exported whose weights hold NaN or infinity (a last update that
    overflowed them passes every check of its own loss and gradient)."""
    for name, param in policy.model.named_parameters():
        if not bool(torch.isfinite(param).all()):
            raise ValueError(
                f"after step {step} the weight {name} holds NaN or infinity: no final model "
                "is exported. Lower optim.lr or set optim.max_grad_norm; the checkpoints "
                "under checkpoints/ hold the steps saved so far"
            )
