"""The shared sections of a run's config (:class:`~algorithms.config.TrainConfig`):
``model``, ``env``, ``rollout``, ``optim``, ``trainer``, ``eval``, ``logging`` and
``checkpoint``, dataclasses whose docstrings document every field and its default. Each
algorithm's own section is declared in its module (``GRPOSettings`` in ``grpo.py`` ...).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from research_env.shaping import SearchShaping


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
        retriever: retriever name (``bm25``, ``dense``, ``serper``...) or a retrieval
            server URL.
        retriever_kwargs: arguments of the retriever's factory (a web search API's
            budget: ``{max_requests: 500, max_cost: 1.0}``; see
            :mod:`research_env.retrievers.web`).
        corpus: corpus jsonl for a named retriever (default: the dataset's own).
        top_k: documents per search.
        max_turns: turn budget per episode.
        reward: reward name (``research``, ``search-r1``, ``em``, ``f1``, ``judge``,
            ``judge+f1``).
        reward_kwargs: arguments of a reward built from them: the LLM judge's
            ``{url: http://host:8000/v1, model: ..., fallback: f1, timeout: 30}`` (see
            :class:`research_env.rewards.JudgeReward`).
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
        hops: train only on the questions with these hop counts (``hops`` metadata), e.g.
            ``[2, 3, 4]`` so every group needs more than one search; ``null``: all. The
            held-out split is always played whole (evaluation ignores it).
    """

    dataset: str = "synthetic"
    split: str = "train"
    retriever: str = "bm25"
    retriever_kwargs: dict[str, Any] = field(default_factory=dict)
    corpus: str | None = None
    top_k: int = 3
    max_turns: int = 5
    reward: str = "research"
    reward_kwargs: dict[str, Any] = field(default_factory=dict)
    template: str = "research"
    on_invalid: Literal["correct", "terminate"] = "correct"
    format_mode: Literal["strict", "loose"] = "strict"
    search_cost: float = 0.0
    require_search: bool = False
    shaping: SearchShaping = field(default_factory=SearchShaping)
    max_doc_words: int | None = None
    hops: list[int] | None = None

    def to_env_kwargs(self, split: str | None = None) -> dict[str, Any]:
        """Keyword arguments for ``MultiHopSearchEnv``. ``split`` names a held-out split to
        play instead of the training one, whole: ``hops`` then does not apply."""
        kwargs = dataclasses.asdict(self)
        if split is not None:
            kwargs["split"] = split
            kwargs["hops"] = None
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
            ``auto`` (bf16 on CUDA or such a CPU, else float32: :mod:`algorithms.precision`),
            ``int8`` (the 8-bit copy of :mod:`algorithms.rollout.int8_copy`: opt-in, faster
            than float32 on a CPU without bf16 but further from the learner; pair it with
            ``trainer.tis_cap``) or ``null`` to decode with the policy itself.
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
            cache); the trainer uses the rest. ``auto`` (the default): what the memory
            planner's training peak leaves, less a margin
            (:class:`algorithms.planner.VLLMShare`), computed before vLLM starts; a run
            that leaves vLLM too little for its weights and one sequence is refused,
            with the numbers.
        vllm_max_model_len: vLLM's context length (``null``: the model's); at least the
            longest prompt plus ``max_total_tokens``.
        vllm_model: the path or hub id vLLM loads the architecture from (``null``: the
            policy's own); the trainer's weights replace its weights before the first
            rollout either way.
        dynamic_sampling: draw more questions until the step holds ``questions_per_step``
            groups that can teach something (DAPO's dynamic sampling,
            :mod:`algorithms.trainer.dynamic_sampling`): ``off`` (the default), ``reward``
            (groups whose returns differ) or ``answer`` (groups holding a right and a
            wrong answer by EM; groups that differ only by format or evidence credit are
            dropped). The extra rounds cost rollout time; ``sampling/*`` counts them.
        max_sampling_rounds: the most rounds of ``questions_per_step`` questions one step
            may draw under ``dynamic_sampling`` (the first included); when they run out
            the step updates on the informative groups it has.
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
    vllm_gpu_memory_utilization: float | Literal["auto"] = "auto"
    vllm_max_model_len: int | None = None
    vllm_model: str | None = None
    vllm_sleep: bool = False
    dynamic_sampling: Literal["off", "reward", "answer"] = "off"
    max_sampling_rounds: int = 4

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
        skip_nonfinite_updates: what an optimizer step with a non-finite loss or gradient
            norm does. ``false`` (default): training stops with an error naming the step,
            before the model is changed, saved or exported. ``true``: the step is skipped
            (the weights stay as they were), counted in ``train/skipped_updates`` and
            warned about on stderr.
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
    skip_nonfinite_updates: bool = False


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
