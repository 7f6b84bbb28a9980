"""The rollout engine: a language model plays many search episodes at once.

Per turn, every live episode is decoded in one batch (each stops at ``</search>``,
``</answer>``, EOS or its token budget), then all their queries go to the retriever in
one call, then each observation is tokenized on its own and appended to its sequence,
whose KV cache is kept: only the new observation tokens are encoded before the next
turn. Token ids are kept exactly as sampled; the prompt is rendered (and, for chat
prompts, run through the chat template) once, never again.

    engine = RolloutEngine(policy, {"split": "train"})
    trajectories = engine.collect([3, 17], group_size=4)   # 8 episodes, 2 groups
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from algorithms.buffer import Trajectory
from algorithms.decoding import DecodeState, SamplingParams, rollout_copy
from research_env.env import MultiHopSearchEnv, batch_search
from research_env.protocol import STOP_STRINGS

PromptFormat = Literal["auto", "text", "chat"]


@dataclass(frozen=True)
class SamplingSettings:
    """Sampling and budgets of one rollout.

    Attributes:
        temperature, top_p, top_k, greedy: how tokens are drawn (greedy for evaluation).
        max_turn_tokens: tokens one assistant turn may generate.
        max_total_tokens: tokens a whole response may hold (turns plus observations); an
            episode that would exceed it is truncated with reason ``token_budget``.
        seed: seeds sampling and the envs' resets, so a rollout is reproducible.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    greedy: bool = False
    max_turn_tokens: int = 256
    max_total_tokens: int = 2048
    seed: int | None = None

    def params(self) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, greedy=self.greedy
        )


class RolloutEngine:
    """Plays ``MultiHopSearchEnv`` episodes with a policy, in batches.

    Args:
        policy: an :class:`algorithms.policy.Policy` (model + tokenizer).
        env_kwargs: ``MultiHopSearchEnv`` arguments (dataset, split, retriever, top_k,
            max_turns, reward, template, ...). All episodes share one dataset and retriever.
        sampling: default :class:`SamplingSettings`.
        envs: ready-made envs to use instead of building them from ``env_kwargs``.
        prompt_format: ``"text"`` renders the template as plain text (the default
            template's worked example and prefill work best for small models);
            ``"chat"`` applies the tokenizer's chat template to the template's messages and
            then the prefill; ``"auto"`` picks text when the template has a worked example
            or the tokenizer has no chat template.
        rollout_dtype: decode with a frozen copy of the model in this dtype (``"bfloat16"``
            roughly halves decode time on CPU; the trainer then recomputes log-probs in the
            training dtype) or ``None`` to decode with the policy's own weights.
        pack_weights: let the rollout copy pre-pack its linear layers for oneDNN (CPU).
        fused: let the rollout copy use :mod:`algorithms.fused_llama` where it applies.
    """

    def __init__(
        self,
        policy: Any,
        env_kwargs: dict[str, Any] | None = None,
        *,
        sampling: SamplingSettings | None = None,
        envs: Sequence[Any] | None = None,
        prompt_format: PromptFormat = "auto",
        rollout_dtype: str | None = None,
        pack_weights: bool = False,
        fused: bool = True,
    ) -> None:
        if prompt_format not in ("auto", "text", "chat"):
            raise ValueError(f"prompt_format must be auto, text or chat, got {prompt_format!r}")
        self.policy = policy
        self.tokenizer = policy.tokenizer
        self.sampling = sampling or SamplingSettings()
        self.prompt_format = prompt_format
        self.rollout_dtype = getattr(torch, rollout_dtype) if rollout_dtype else None
        self.pack_weights = pack_weights
        self.fused = fused
        self.env_kwargs = dict(env_kwargs or {})
        self.envs: list[MultiHopSearchEnv] = [e.unwrapped for e in envs] if envs else []
        if not self.envs:
            self.envs.append(MultiHopSearchEnv(**self.env_kwargs))

    @property
    def num_questions(self) -> int:
        return len(self.envs[0].samples)

    def _env_pool(self, n: int) -> list[MultiHopSearchEnv]:
        """``n`` envs sharing the first one's samples and retriever (one index in memory)."""
        first = self.envs[0]
        shared = {**self.env_kwargs, "dataset": first.samples, "retriever": first.retriever}
        while len(self.envs) < n:
            self.envs.append(MultiHopSearchEnv(**shared))
        return self.envs[:n]

    def _use_chat(self, env: MultiHopSearchEnv) -> bool:
        if self.prompt_format != "auto":
            return self.prompt_format == "chat"
        has_chat = bool(getattr(self.tokenizer, "chat_template", None))
        return has_chat and env.template.example is None

    def encode_prompt(self, env: MultiHopSearchEnv, prompt: str, info: dict[str, Any]) -> list[int]:
        """Token ids of an episode's prompt, rendered once."""
        if self._use_chat(env):
            text = self.tokenizer.apply_chat_template(
                info["messages"], tokenize=False, add_generation_prompt=True
            )
            text += info.get("prefill", "")
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def _decode_model(self) -> Any:
        model = self.policy.model
        if self.rollout_dtype is None and not self.pack_weights:
            return model
        return rollout_copy(
            model, self.rollout_dtype, pack_weights=self.pack_weights, fused=self.fused
        )

    def collect(
        self,
        question_indices: Sequence[int],
        group_size: int = 1,
        *,
        sampling: SamplingSettings | None = None,
    ) -> list[Trajectory]:
        """Play each question ``group_size`` times; trajectory ``g * group_size + j`` is
        sample ``j`` of ``question_indices[g]`` and has ``group == g``."""
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        s = sampling or self.sampling
        n = len(question_indices) * group_size
        if n == 0:
            return []
        envs = self._env_pool(n)
        trajectories: list[Trajectory] = []
        prompts: list[list[int]] = []
        for i, env in enumerate(envs):
            group = i // group_size
            seed = None if s.seed is None else s.seed + i
            prompt, info = env.reset(seed=seed, options={"index": int(question_indices[group])})
            ids = self.encode_prompt(env, prompt, info)
            prompts.append(ids)
            trajectories.append(Trajectory(prompt_ids=ids, group=group))

        generator = None
        if s.seed is not None and not s.greedy:
            generator = torch.Generator().manual_seed(s.seed)
        model = self._decode_model()
        state = DecodeState(model, prompts, capacity=max(map(len, prompts)) + s.max_turn_tokens)
        used = [0] * n
        live = list(range(n))
        while live:
            outputs = self._decode_turn(state, live, used, s, generator)
            texts = {
                i: self.tokenizer.decode(out.token_ids, skip_special_tokens=True)
                for i, out in outputs.items()
            }
            for i, out in outputs.items():
                trajectories[i].add_model_tokens(out.token_ids, out.logprobs)
                used[i] += len(out.token_ids)
            batch_search([envs[i] for i in live], [texts[i] for i in live])
            finished, observations = [], {}
            for i in live:
                result = envs[i].step(texts[i])
                reason = None
                if result[2] or result[3]:
                    reason = result[4]["termination"]
                elif outputs[i].finish_reason == "eos":
                    result, reason = envs[i].truncate("eos"), "eos"
                else:
                    obs_ids = self.tokenizer(result[0], add_special_tokens=False)["input_ids"]
                    if used[i] + len(obs_ids) >= s.max_total_tokens:
                        result, reason = envs[i].truncate("token_budget"), "token_budget"
                    else:
                        observations[i] = obs_ids
                if reason is not None:
                    trajectories[i].reward = float(result[1])
                    trajectories[i].info = result[4]
                    trajectories[i].finish_reason = reason
                    finished.append(i)
            for i, obs_ids in observations.items():
                trajectories[i].add_observation_tokens(obs_ids)
                used[i] += len(obs_ids)
            if observations:
                state.append(observations)
            live = [i for i in live if i not in set(finished)]
            if finished and live:
                state.release(finished)
        return trajectories

    def _decode_turn(
        self,
        state: DecodeState,
        live: list[int],
        used: list[int],
        s: SamplingSettings,
        generator: torch.Generator | None,
    ) -> dict[int, Any]:
        """One turn for every live episode; episodes near the total budget get less."""
        budgets = {i: max(1, min(s.max_turn_tokens, s.max_total_tokens - used[i])) for i in live}
        outputs = state.decode(
            max_new_tokens=budgets,
            seq_indices=live,
            sampling=s.params(),
            stop_strings=STOP_STRINGS,
            tokenizer=self.tokenizer,
            generator=generator,
        )
        return outputs
