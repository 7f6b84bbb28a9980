"""Typed training configuration: dataclasses with documented defaults, read from and written to YAML.

One :class:`TrainConfig` describes a whole run, in sections that mirror the YAML files in
``configs/``::

    algo: grpo                 # which algorithm trains (grpo | ppo | reinforce | sft)
    model:    {name: smollm2-135m, dtype: float32, lora: {r: 16}}
    env:      {dataset: synthetic, top_k: 5, max_turns: 5, reward: research}
    rollout:  {questions_per_step: 4, group_size: 5, temperature: 1.0}
    optim:    {lr: 1.0e-6, warmup_steps: 0, max_grad_norm: 1.0}
    trainer:  {steps: 200, epochs: 1, micro_batch_size: 4}
    eval:     {every: 50, questions: 64}
    logging:  {wandb: true}
    checkpoint: {every: 50}
    grpo:     {kl_coef: 0.001, clip_low: 0.2}
    ppo:      {gamma: 1.0, lam: 1.0}
    reinforce: {baseline: rloo}
    sft:      {demonstrations: oracle}

Every algorithm's section is always present (with defaults), so an ablation is one flag:
``--algo ppo`` with a GRPO YAML trains PPO with that file's model, env and optimizer and
PPO's own defaults. A key that is not a field is an error naming the valid keys, so a typo
never silently falls back to a default.

Why one file of ~600 lines: it is one idea, the run's schema; each section's docstring
documents its fields (what a user reads), and YAML conversion is the schema's own. The
value checks of :meth:`TrainConfig.validate` live in ``config_checks.py``.
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from research_env.shaping import SearchShaping

# --------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------


@dataclass
class LoraConfig:
    """LoRA adapters (only they train; the frozen base doubles as the KL reference).

    Attributes:
        r: adapter rank.
        alpha: scaling numerator (the update is scaled by ``alpha / r``).
        dropout: dropout on the adapter input.
        target_modules: module names that get adapters; the default is the attention
            projections of Llama-style models.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )


@dataclass
class ModelConfig:
    """Which causal LM is the policy.

    Attributes:
        name: an offline name (``smollm2-135m``, ``tiny-random``), a local Hugging Face model
            directory, or a hub id (needs internet).
        dtype: weight dtype: ``float32`` (safe default on CPU), ``bfloat16`` or ``float16``.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda[:i]``.
        gradient_checkpointing: recompute activations in backward to save memory.
        lora: LoRA settings, or ``null`` to fine-tune all weights.
    """

    name: str = "smollm2-135m"
    dtype: str = "float32"
    device: str = "auto"
    gradient_checkpointing: bool = False
    lora: LoraConfig | None = None


@dataclass
class EnvConfig:
    """The environment (``MultiHopSearchEnv`` arguments; see its docstring for meanings).

    Attributes:
        dataset: dataset name, FlashRAG jsonl file or directory of ``<split>.jsonl``.
        split: training split. ``eval_split`` (in :class:`EvalConfig`) is the held-out one.
        retriever: retriever name (``bm25``, ``dense``...) or a retrieval server URL.
        corpus: corpus jsonl for a named retriever (default: the dataset's own).
        top_k: documents per search.
        max_turns: turn budget per episode.
        reward: reward name (``research``, ``search-r1``, ``em``, ``f1``).
        template: prompt template name.
        on_invalid: ``correct`` (reply with a correction) or ``terminate``.
        format_mode: ``strict`` (ReSearch rules) or ``loose``.
        search_cost: reward subtracted per search.
        require_search: answering without any search counts as malformed.
        shaping: step-level search rewards (``retrieval_gain``, ``redundant_query``,
            ``no_search_multihop``; see :mod:`research_env.shaping`), all 0 = off. The
            episode metrics keep the answer's reward; the advantages see the shaping
            (per turn with ``grpo.credit: turn``).
        max_doc_words: cap on each retrieved document's words in an observation (``null``:
            whole documents); fewer observation tokens per episode to decode over and
            score. Search-R1 caps observations too.
    """

    dataset: str = "synthetic"
    split: str = "train"
    retriever: str = "bm25"
    corpus: str | None = None
    top_k: int = 3
    max_turns: int = 5
    reward: str = "research"
    template: str = "research"
    on_invalid: Literal["correct", "terminate"] = "correct"
    format_mode: Literal["strict", "loose"] = "strict"
    search_cost: float = 0.0
    require_search: bool = False
    shaping: SearchShaping = field(default_factory=SearchShaping)
    max_doc_words: int | None = None

    def to_env_kwargs(self, split: str | None = None) -> dict[str, Any]:
        """Keyword arguments for ``MultiHopSearchEnv`` (``split`` overrides the training one)."""
        kwargs = dataclasses.asdict(self)
        if split is not None:
            kwargs["split"] = split
        return kwargs


@dataclass
class RolloutConfig:
    """How experience is sampled each training step.

    Attributes:
        questions_per_step: distinct questions per step (B); each is played ``group_size``
            times, so a step has ``B * G`` episodes.
        group_size: episodes per question (G). GRPO and RLOO need G >= 2.
        temperature: sampling temperature; training log-probs use the same one, or the
            importance ratios would be off.
        top_p: nucleus sampling mass (1.0 = off).
        top_k: top-k sampling (0 = off).
        max_turn_tokens: token budget of one assistant turn.
        max_total_tokens: token budget of a whole response (turns plus observations); an
            episode that runs out is truncated.
        prompt_format: ``text`` (the template as plain text), ``chat`` (the tokenizer's chat
            template) or ``auto`` (text for templates with a worked example).
        rollout_dtype: decode with a frozen copy in this dtype (``bfloat16`` is faster on
            a CPU with native bf16; pi_old then differs slightly from the training model's),
            ``auto`` (bf16 on CUDA or such a CPU, else float32: :mod:`algorithms.precision`)
            or ``null`` to decode with the policy itself.
        pack_weights: let that rollout copy pre-pack its linear layers for oneDNN (CPU).
        fused: let that rollout copy run the fused forward of
            :mod:`algorithms.rollout.fused_llama` when the model is Llama-family (faster
            than the packed copy on CPU: benchmarks/RESULTS.md); ``false`` keeps the
            transformers forward.
        backend: what generates the turns: ``hf`` (the built-in decoder on the policy
            itself) or ``vllm`` (a colocated ``vllm.LLM``, GPU only; see
            :mod:`algorithms.rollout.vllm_backend`). The ``rollout_dtype``, ``pack_weights``
            and ``fused`` settings apply to ``hf`` only.
        vllm_gpu_memory_utilization: the GPU memory share vLLM may take (weights and KV
            cache); the trainer uses the rest.
        vllm_max_model_len: vLLM's context length (``null``: the model's); at least the
            longest prompt plus ``max_total_tokens``.
        vllm_model: the path or hub id vLLM loads the architecture from (``null``: the
            policy's own); the trainer's weights replace its weights before the first
            rollout either way.
        vllm_sleep: put vLLM to sleep between collects (its weights and KV cache freed,
            ``LLM.sleep(level=2)``) so the update gets that memory back; the next collect
            wakes it and pushes the weights. Needs a vLLM with sleep mode (CUDA).
    """

    questions_per_step: int = 4
    group_size: int = 5
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_turn_tokens: int = 256
    max_total_tokens: int = 2048
    prompt_format: Literal["auto", "text", "chat"] = "auto"
    rollout_dtype: str | None = None
    pack_weights: bool = False
    fused: bool = True
    backend: Literal["hf", "vllm"] = "hf"
    vllm_gpu_memory_utilization: float = 0.3
    vllm_max_model_len: int | None = None
    vllm_model: str | None = None
    vllm_sleep: bool = False

    def sampling(
        self, *, greedy: bool = False, temperature: float | None = None, seed: int | None = None
    ) -> Any:
        """The runtime :class:`algorithms.rollout.Sampling` of this section: its
        temperature (or ``temperature``), top-p, top-k and token budgets; ``greedy`` for
        evaluation; ``seed`` to make the rollout reproducible."""
        from algorithms.rollout.sampling import Sampling

        return Sampling(
            temperature=self.temperature if temperature is None else temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            greedy=greedy,
            max_turn_tokens=self.max_turn_tokens,
            max_total_tokens=self.max_total_tokens,
            seed=seed,
        )


@dataclass
class OptimConfig:
    """AdamW and its learning-rate schedule.

    Attributes:
        lr: peak learning rate.
        critic_lr: learning rate of a PPO critic (value head / separate critic); ``null``
            uses ``lr``. Critics usually want a larger one (Search-R1: 1e-5 vs 1e-6).
        betas, eps, weight_decay: AdamW settings.
        max_grad_norm: clip the global gradient norm to this (``null`` = no clipping).
        warmup_steps: linear warmup from 0, counted in training steps (rollouts).
        schedule: after warmup, ``constant``, ``linear`` decay or ``cosine`` decay to
            ``min_lr_ratio * lr`` at the last training step.
        min_lr_ratio: floor of the decaying schedules, as a fraction of ``lr``.
        master_weights: when the trainable weights are 16-bit (``model.dtype: bfloat16``),
            step float32 master copies of them with float32 moments and write the result
            back rounded (``trainer/optim.py``); 4 + 4 more bytes per trainable parameter.
            ``false`` steps the 16-bit weights directly: steps below a weight's bf16
            spacing (~1e-4 near 0.02, so any lr near 1e-6) round away and nothing learns.
    """

    lr: float = 1e-6
    critic_lr: float | None = None
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    warmup_steps: int = 0
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    min_lr_ratio: float = 0.0
    master_weights: bool = True


@dataclass
class TrainerConfig:
    """The shared training loop.

    Attributes:
        steps: training steps (one rollout + its updates each); ``--steps`` overrides it.
        epochs: passes over each rollout batch (PPO's "update epochs").
        minibatch_size: episodes per optimizer step; ``null`` = the whole rollout batch.
        micro_batch_size: episodes per forward/backward (gradient accumulation inside a
            minibatch); bounds activation memory.
        filter_zero_variance_groups: drop groups whose rewards are all equal before the
            update (they carry no GRPO signal but dilute a token-mean loss).
        filter_truncated: mask the loss of episodes that ran out of turns or tokens (DAPO's
            overlong filtering); they still count in their group's baseline.
        old_logprobs: where pi_old comes from for the importance ratio. ``auto``: when the
            update is a single optimizer step (1 epoch, 1 minibatch) pi_old is the current
            policy (ratio 1, no extra pass), otherwise a no-grad ``recompute`` pass with the
            training model; ``rollout`` uses the sampler's log-probs as they are.
        logprob_chunk_size: response positions per chunk of the LM head and log-softmax.
            In the update each chunk is recomputed in backward rather than its float32
            ``(positions, vocab)`` logits kept (RESULTS.md, "Demo memory"); ``null``:
            one plain pass, which holds them.
        share_prompts: run a prompt shared by several rows (a GRPO group) through the model
            once per micro-batch and let its rows attend to one KV cache; the scores are
            the same, the work is ``unique prompts + responses`` tokens. Not used with
            gradient checkpointing (which drops KV caches in training).
        autocast_dtype: run the model's matmuls in ``bfloat16`` under ``torch.autocast``
            in the update and the no-grad passes (weights, gradients and optimizer stay in
            the model's dtype; the LM head and log-probs stay full precision). Faster on a
            CPU with AVX-512 BF16 (benchmarks/RESULTS.md, "Trainer"), several times slower
            on a CPU without it; ``auto`` = bf16 on CUDA or such a CPU, else off.
            ``null`` (the default): bf16 on a CUDA GPU that supports it and float32 weights,
            off on a CPU (CPU results unchanged); ``float32``: off everywhere.
        train_layers: train only the top N transformer blocks and the final norm (plus the
            LM head when it is not tied to the input embeddings, as it is in SmolLM2);
            everything below is frozen, so backward stops at the lowest trained block:
            less backward work per token (benchmarks/RESULTS.md, "Episode cost"). ``null``:
            train every weight. Not with LoRA (which already chooses what trains).
        tis_cap: truncated importance sampling for a rollout that came from another engine or
            precision than the learner (``rollout.rollout_dtype``, vLLM): each token's
            policy-gradient term is weighted by ``min(pi_old / pi_sampler, tis_cap)``
            (e.g. 2.0). ``null``: off. The mismatch is logged either way
            (``train/sampler_kl``, ``train/sampler_ratio_max``: the mean over optimizer
            steps of each step's maximum).
        seed: seeds Python, NumPy and torch, and the order questions are drawn in.
        num_threads: torch intra-op threads during ``learn`` (``null`` = torch's default).
            On a CPU shared with other busy processes 1 can beat 2: a parallel kernel
            waits at its barrier for a descheduled worker thread (RESULTS.md, "Trainer").
        sharding: ``none`` (every rank holds a full replica) or ``fsdp``: under a
            distributed launch, shard the policy, the KL reference, gradients and optimizer
            state across the ranks (torch FSDP2, :mod:`algorithms.trainer.fsdp`). Needs
            ``share_prompts: false``; checkpoints stay full and load without it.
    """

    steps: int = 100
    epochs: int = 1
    minibatch_size: int | None = None
    micro_batch_size: int = 8
    filter_zero_variance_groups: bool = False
    filter_truncated: bool = False
    old_logprobs: Literal["auto", "recompute", "rollout"] = "auto"
    logprob_chunk_size: int | None = 256
    share_prompts: bool = True
    autocast_dtype: Literal["bfloat16", "float16", "float32", "auto"] | None = None
    train_layers: int | None = None
    tis_cap: float | None = None
    seed: int = 0
    num_threads: int | None = None
    sharding: Literal["none", "fsdp"] = "none"


@dataclass
class EvalConfig:
    """Periodic evaluation on a held-out split (greedy unless ``temperature`` > 0).

    Attributes:
        every: evaluate every this many training steps (0 = never; also at the end if > 0).
        split: the held-out split.
        questions: how many of its questions (the first N, so runs are comparable).
        temperature: 0 = greedy decoding.
    """

    every: int = 0
    split: str = "dev"
    questions: int = 32
    temperature: float = 0.0


@dataclass
class LoggingConfig:
    """Where metrics go (the console, ``<out>/metrics.jsonl`` and wandb).

    Attributes:
        every: print a console line every this many steps.
        wandb: log to Weights & Biases (offline mode without an API key; ``WANDB_MODE=
            disabled`` turns it off).
        wandb_project: wandb project name.
        run_name: run name (default: the output directory's name).
        progress_bar: show a tqdm bar with the running reward.
        save_transcripts: token transcripts of this many trained episodes per step (the
            step's first) to ``<out>/transcripts/train.tokens.jsonl``, with the loss mask
            and advantages the update used, for ``research-env view`` (0 = none).
    """

    every: int = 1
    wandb: bool = True
    wandb_project: str = "research-gym"
    run_name: str | None = None
    progress_bar: bool = True
    save_transcripts: int = 0


@dataclass
class CheckpointConfig:
    """Checkpoints under ``<out>/checkpoints/step-XXXXXX`` (written atomically).

    Attributes:
        every: save every this many steps (0 = only at the end).
        keep_last: how many checkpoints to keep (older ones are deleted).
        export_final: write ``<out>/final``: a plain HF model directory, LoRA merged.
    """

    every: int = 50
    keep_last: int = 2
    export_final: bool = True


LossAggregation = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
KLEstimatorName = Literal["k1", "k2", "k3", "low_var_kl"]


@dataclass
class GRPOConfig:
    """GRPO (Shao et al., 2024) with the DAPO and Dr. GRPO variants.

    Attributes:
        clip_low: PPO clip range below 1 (``ratio >= 1 - clip_low``).
        clip_high: clip range above 1; ``null`` = ``clip_low``. DAPO's clip-higher: 0.28.
        kl_coef: weight of the KL-to-reference loss (ReSearch: 0.001). 0 skips the
            reference model entirely.
        kl_estimator: ``k3`` (= ``low_var_kl``, GRPO's), ``k1`` or ``k2``.
        scale_by_std: divide advantages by the group std; ``false`` is Dr. GRPO.
        loss_agg: ``token-mean`` (DAPO), ``seq-mean-token-mean`` (original GRPO) or
            ``seq-mean-token-sum-norm`` (Dr. GRPO; normalized by ``rollout.max_total_tokens``).
        entropy_coef: entropy bonus weight (0 = off; entropy is still logged).
        credit: ``episode`` (every token gets the episode's advantage) or ``turn`` (each
            turn's tokens get the return from that turn on, estimator ``grpo-turn``: an
            early search the env rewarded keeps its credit when the answer is wrong). The
            same without ``env.shaping``.
    """

    clip_low: float = 0.2
    clip_high: float | None = None
    kl_coef: float = 0.001
    kl_estimator: KLEstimatorName = "k3"
    scale_by_std: bool = True
    loss_agg: LossAggregation = "token-mean"
    entropy_coef: float = 0.0
    credit: Literal["episode", "turn"] = "episode"


@dataclass
class PPOConfig:
    """PPO with a learned critic (as Search-R1 trains it).

    Attributes:
        clip_low, clip_high: policy clip range (``clip_high`` null = symmetric).
        vf_coef: weight of the value loss in the total loss.
        vf_clip: value clipping range around the rollout's values (``null`` = off).
        gamma, lam: GAE discount and lambda over generated tokens (Search-R1: 1 and 1).
        kl_coef: per-token KL penalty folded into the reward (``-kl_coef * kl_t``).
        kl_estimator: estimator for that penalty (``k1``, the unbiased one, by default).
        whiten_advantages: normalize advantages over the batch's generated tokens.
        critic: ``shared`` = a value head on the policy's trunk; ``separate`` = its own
            model (``critic_model``, default the policy's model) with a value head.
        critic_model: model name or directory of a separate critic.
        loss_agg: loss aggregation mode (see :class:`GRPOConfig`).
        entropy_coef: entropy bonus weight.
    """

    clip_low: float = 0.2
    clip_high: float | None = None
    vf_coef: float = 0.5
    vf_clip: float | None = 0.2
    gamma: float = 1.0
    lam: float = 1.0
    kl_coef: float = 0.001
    kl_estimator: KLEstimatorName = "k1"
    whiten_advantages: bool = True
    critic: Literal["shared", "separate"] = "shared"
    critic_model: str | None = None
    loss_agg: LossAggregation = "token-mean"
    entropy_coef: float = 0.0


@dataclass
class ReinforceConfig:
    """REINFORCE with a choice of baseline.

    Attributes:
        baseline: ``none``, ``batch_mean``, ``rloo`` (leave-one-out within a group) or
            ``reinforce++`` (global normalization of the token returns).
        kl_coef: per-token KL penalty folded into the reward.
        kl_estimator: estimator for that penalty.
        gamma: discount over generated tokens.
        loss_agg: loss aggregation mode (see :class:`GRPOConfig`).
        entropy_coef: entropy bonus weight.
    """

    baseline: Literal["none", "batch_mean", "rloo", "reinforce++"] = "rloo"
    kl_coef: float = 0.0
    kl_estimator: KLEstimatorName = "k1"
    gamma: float = 1.0
    loss_agg: LossAggregation = "token-mean"
    entropy_coef: float = 0.0


@dataclass
class SFTConfig:
    """Behaviour cloning (the warm start, ``algo: sft``): masked NLL of demonstrated turns.

    Attributes:
        demonstrations: ``oracle`` (episodes played by the env's oracle on the training
            split) or a path to a jsonl file of text episodes, such as the
            ``transcripts/agent.jsonl`` that ``research-env eval`` writes.
        successful_only: keep only demonstrations whose reward is at least ``min_reward``.
        min_reward: see above.
        loss_agg: loss aggregation mode (see :class:`GRPOConfig`).
    """

    demonstrations: str = "oracle"
    successful_only: bool = True
    min_reward: float = 1.0
    loss_agg: LossAggregation = "token-mean"


@dataclass
class TrainConfig:
    """A whole training run. See the module docstring for the YAML shape.

    Attributes:
        algo: the algorithm that trains (a name in ``algorithms.registry``).
        output_dir: where metrics, checkpoints and the final model go (``--out``).
    """

    algo: str = "grpo"
    output_dir: str = "runs/default"
    model: ModelConfig = field(default_factory=ModelConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    reinforce: ReinforceConfig = field(default_factory=ReinforceConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)

    # -- conversions ------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from nested dicts; unknown keys and ill-typed values raise ``ValueError``."""
        return _build(cls, data, "")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        text = Path(path).read_text()
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            line = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ValueError(f"{path}: invalid YAML{line}: {problem}") from None
        if not isinstance(data, dict):
            raise ValueError(
                f"{path}: a config file must hold a mapping, got {type(data).__name__}"
            )
        try:
            return cls.from_dict(data)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The config as YAML text (also written to ``path`` when given)."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    def validate(self, *, check_names: bool = True, check_device: bool = True) -> TrainConfig:
        """Check every value before any heavy work (loading a model, building an index).

        Ranges (steps >= 1, group_size >= 2 for GRPO, token budgets >= 1, ...) are always
        checked; ``check_names`` also resolves the env's names (reward, template, dataset
        and split, retriever, algorithm) through research_env's registries, which is cheap;
        ``check_device`` checks that ``model.device`` exists on this machine. Raises one
        ``ValueError`` listing every problem; returns ``self`` when all is well.
        """
        from algorithms.config_checks import (
            device_problems,
            name_problems,
            precision_problems,
            range_problems,
            sharding_problems,
        )

        problems = range_problems(self) + sharding_problems(self) + precision_problems(self)
        if check_names:
            problems += name_problems(self)
        if check_device:
            problems += device_problems(self.model.device)
        if problems:
            raise ValueError("invalid config: " + "; ".join(problems))
        return self

    def with_overrides(self, assignments: list[str] | dict[str, Any]) -> TrainConfig:
        """A copy with dotted-key overrides, e.g. ``["grpo.kl_coef=0", "optim.lr=1e-5"]``.

        String values are parsed as YAML scalars (``1e-5`` -> float, ``null`` -> None).
        """
        pairs = (
            assignments.items() if isinstance(assignments, dict) else parse_overrides(assignments)
        )
        data = self.to_dict()
        for key, value in pairs:
            node = data
            *parents, leaf = key.split(".")
            for i, part in enumerate(parents):
                child = node.get(part)
                if child is None and part in node:  # an optional section set to null
                    child = node[part] = {}
                if not isinstance(child, dict):
                    raise ValueError(
                        f"cannot set {key!r}: {'.'.join(parents[: i + 1])!r} is not a section"
                    )
                node = child
            node[leaf] = value
        return TrainConfig.from_dict(data)


def parse_overrides(assignments: list[str]) -> list[tuple[str, Any]]:
    """``["a.b=1", "c=x"]`` -> ``[("a.b", 1), ("c", "x")]`` (values parsed as YAML)."""
    pairs = []
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like section.key=value")
        pairs.append((key.strip(), yaml.safe_load(raw) if raw.strip() else None))
    return pairs


# --------------------------------------------------------------------------------------
# Dict -> dataclass with validation
# --------------------------------------------------------------------------------------


def _build(cls: type, data: Any, path: str) -> Any:
    where = path or "config"
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping, got {data!r}")
    hints = get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(map(repr, unknown))} in {where}; "
            f"valid keys: {', '.join(valid)}"
        )
    kwargs = {
        name: _convert(hints[name], value, f"{path}.{name}" if path else name)
        for name, value in data.items()
    }
    return cls(**kwargs)


def _convert(hint: Any, value: Any, path: str) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None:
            if type(None) in options:
                return None
            raise ValueError(f"{path} may not be null")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, path)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0] if len(errors) == 1 else f"{path}: {'; '.join(errors)}")
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise ValueError(f"{path} must be one of {list(choices)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{path} must be a list, got {value!r}")
        (item,) = get_args(hint)[:1] or (Any,)
        return [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(hint):
        return _build(hint, {} if value is None else value, path)  # type: ignore[arg-type]
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{path} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{path} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-6" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{path} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{path} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint!r} at {path}")
