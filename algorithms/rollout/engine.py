"""The rollout engine: a language model plays many search episodes at once.

One straight path per collect:

1. the vector env's ``reset`` gives one prompt per episode; each is tokenized once (and,
   for chat prompts, run through the chat template once, never again);
2. per turn, every live episode is decoded in one batch on a KV cache kept across turns
   (each row stops at ``</search>``, ``</answer>``, EOS or its token budget);
3. the vector env steps all of them (:meth:`~research_env.vector.SearchVectorEnv.step_turns`:
   one retriever call for every search); the engine parses nothing itself;
4. each observation is tokenized on its own and appended with loss mask 0; only those new
   tokens are encoded before the next turn (a reply the env gives as a chat message, with
   the ``tool-call`` template, is first rendered as its chat template places it between two
   turns: :class:`~algorithms.rollout.chat_turns.ChatReplies`);
5. episodes that emitted EOS, or whose next observation would overflow the token budget,
   are ended through the vector env (:meth:`~research_env.vector.SearchVectorEnv.end_early`)
   with ``Termination.EOS`` / ``Termination.TOKEN_BUDGET``, and rewarded as usual.

    engine = RolloutEngine(policy, {"split": "train"})
    trajectories = engine.collect([3, 17], group_size=4)   # 8 episodes, 2 groups
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from gymnasium.vector import AutoresetMode

from algorithms.buffer import Trajectory
from algorithms.precision import AUTO, resolve_precision, rollout_torch_dtype
from algorithms.rollout.chat_turns import ChatReplies
from algorithms.rollout.decoder import DecodeState
from algorithms.rollout.inference_copy import rollout_copy
from algorithms.rollout.sampling import Sampling
from algorithms.rollout.turns import RolloutBackend, TurnDecoder, TurnOutput
from research_env.episode import TurnOutcome
from research_env.termination import Termination
from research_env.vector import SearchVectorEnv

PromptFormat = Literal["auto", "text", "chat"]


class RolloutEngine:
    """Plays ``ReSearch-MultiHop-v0`` episodes with a policy, in batches.

    Args:
        policy: an :class:`algorithms.policy.Policy` (model + tokenizer).
        env_kwargs: ``MultiHopSearchEnv`` arguments (dataset, split, retriever, top_k,
            max_turns, reward, template, ...) for the engine's vector env.
        vector_env: a ready :class:`~research_env.vector.SearchVectorEnv` to play in
            instead (e.g. with another sub-env class); not with ``env_kwargs``.
        sampling: default :class:`~algorithms.rollout.Sampling` of :meth:`collect`.
        prompt_format: ``"text"`` renders the template as plain text (the default
            template's worked example and prefill work best for small models);
            ``"chat"`` applies the tokenizer's chat template to the template's messages and
            then the prefill; ``"auto"`` picks text when the template has a worked example
            or the tokenizer has no chat template.
        rollout_dtype: decode with a frozen copy of the model in this dtype (``"bfloat16"``
            roughly halves decode time on CPU; the trainer then recomputes log-probs in the
            training dtype; ``"int8"``: the 8-bit copy of
            :mod:`algorithms.rollout.int8_copy`) or ``None`` to decode with the policy's own
            weights.
        pack_weights: let the rollout copy pre-pack its linear layers for oneDNN (CPU).
        fused: let the rollout copy use :mod:`algorithms.rollout.fused_llama` where it applies.
        backend: what generates the turns: ``None`` (default) decodes with the HF model on
            :class:`~algorithms.rollout.DecodeState`; a
            :class:`~algorithms.rollout.vllm_backend.VLLMBackend` generates them with vLLM
            (it gets the policy's weights before each collect where they changed).

    ``engine.stop_strings`` are where a turn stops: the template's action format's
    (``</search>``, ``</answer>``; ``</tool_call>`` for the ``tool-call`` template).

    ``engine.vector_env`` is the vector env it plays in (resized to each collect's number
    of episodes); ``engine.vector_env.envs[0]`` is an ordinary ``MultiHopSearchEnv`` over
    the same dataset and retriever, for code that plays one episode at a time (SFT
    demonstrations).
    """

    def __init__(
        self,
        policy: Any,
        env_kwargs: dict[str, Any] | None = None,
        *,
        vector_env: SearchVectorEnv | None = None,
        sampling: Sampling | None = None,
        prompt_format: PromptFormat = "auto",
        rollout_dtype: str | None = None,
        pack_weights: bool = False,
        fused: bool = True,
        backend: RolloutBackend | None = None,
    ) -> None:
        if prompt_format not in ("auto", "text", "chat"):
            raise ValueError(f"prompt_format must be auto, text or chat, got {prompt_format!r}")
        if vector_env is not None and env_kwargs:
            raise ValueError("pass env_kwargs or a ready vector_env, not both")
        self.policy = policy
        self.tokenizer = policy.tokenizer
        self.sampling = sampling or Sampling()
        self.prompt_format = prompt_format
        if rollout_dtype == AUTO:  # bf16 where the hardware does it (algorithms.precision)
            rollout_dtype = resolve_precision(AUTO, next(policy.model.parameters()).device)
        self.rollout_dtype = rollout_torch_dtype(rollout_dtype)
        self.pack_weights = pack_weights
        self.fused = fused
        self.backend = backend
        self.vector_env = vector_env or SearchVectorEnv(
            1, autoreset_mode=AutoresetMode.DISABLED, **(env_kwargs or {})
        )
        actions = self.vector_env.template.actions
        self.stop_strings: tuple[str, ...] = actions.stop_strings
        # Tool-call replies rendered by the chat template (checked now, before any decoding).
        self.chat_replies = (
            ChatReplies(self.tokenizer, actions.tools)
            if actions.tools and self._use_chat()
            else None
        )

    @property
    def num_questions(self) -> int:
        return self.vector_env.num_questions

    def encode_prompt(self, prompt: str, info: Mapping[str, Any]) -> list[int]:
        """Token ids of an episode's prompt (``reset``'s observation and info), rendered once."""
        if self._use_chat():
            text = self.tokenizer.apply_chat_template(
                info["messages"],
                tools=info.get("tools") or None,
                tokenize=False,
                add_generation_prompt=True,
            )
            text += info.get("prefill", "")
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def _use_chat(self) -> bool:
        if self.prompt_format != "auto":
            return self.prompt_format == "chat"
        has_chat = bool(getattr(self.tokenizer, "chat_template", None))
        return has_chat and self.vector_env.template.example is None

    def _decode_model(self, model: Any = None) -> Any:
        model = self.policy.model if model is None else model
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
        sampling: Sampling | None = None,
        model: Any = None,
    ) -> list[Trajectory]:
        """Play each question ``group_size`` times; trajectory ``g * group_size + j`` is
        sample ``j`` of ``question_indices[g]`` and has ``group == g``. ``model``: decode
        with these weights instead of ``policy.model``'s (an FSDP run's gathered copy)."""
        s = sampling or self.sampling
        model = self.policy.model if model is None else model
        questions = episode_questions(question_indices, group_size)
        n = len(questions)
        if n == 0:
            return []
        if self.vector_env.num_envs != n:
            self.vector_env = self.vector_env.resized(n)
        envs = self.vector_env
        prompts, infos = envs.reset(seed=s.seed, options={"indices": questions})
        trajectories: list[Trajectory] = []
        for i in range(n):
            ids = self.encode_prompt(prompts[i], _info_at(infos, i))
            trajectories.append(Trajectory(prompt_ids=ids, group=i // group_size))

        generator = None
        if s.seed is not None and not s.greedy:
            # On the policy's device: sampling draws its uniforms where the logits are.
            generator = torch.Generator(device=self.policy.device).manual_seed(s.seed)
        prompt_ids = [t.prompt_ids for t in trajectories]
        if self.backend is None:
            decoder = self._decode_model(model)
            capacity = max(map(len, prompt_ids)) + s.max_turn_tokens
            state: TurnDecoder = DecodeState(decoder, prompt_ids, capacity=capacity)
        else:
            state = self.backend.start(prompt_ids, model)
        used = [0] * n  # response tokens so far, per episode
        live = list(range(n))
        while live:
            outputs = self._decode_turn(state, live, used, s, generator)
            for i, out in outputs.items():
                trajectories[i].add_model_tokens(out.token_ids, out.logprobs)
                used[i] += len(out.token_ids)
            texts = {
                i: self.tokenizer.decode(out.token_ids, skip_special_tokens=True)
                for i, out in outputs.items()
            }
            outcomes = envs.step_turns(texts)
            for i, outcome in outcomes.items():  # each turn's shaping, before any early end
                trajectories[i].turn_rewards.append(outcome.shaping)
            observations, to_end = self._observations(outcomes, outputs, used, s)
            for reason, indices in to_end.items():
                outcomes |= envs.end_early(indices, reason)
            finished = [i for i in live if outcomes[i].done]
            for i in finished:
                _finish(trajectories[i], outcomes[i])
            for i, obs_ids in observations.items():
                trajectories[i].add_observation_tokens(obs_ids)
                used[i] += len(obs_ids)
            if observations:
                state.append(observations)
            live = [i for i in live if not outcomes[i].done]
            if finished and live:
                state.release(finished)
        finish = getattr(self.backend, "finish", None)
        if finish is not None:
            finish()  # a vLLM engine in sleep mode frees its GPU memory for the update
        return trajectories

    def _observations(
        self,
        outcomes: Mapping[int, TurnOutcome],
        outputs: Mapping[int, TurnOutput],
        used: Sequence[int],
        s: Sampling,
    ) -> tuple[dict[int, list[int]], dict[Termination, list[int]]]:
        """The observation tokens of the episodes that go on, and the episodes the env did
        not end that must end now, by reason: the model emitted EOS (it stopped writing),
        or the observation would overflow the response's token budget."""
        observations: dict[int, list[int]] = {}
        to_end: dict[Termination, list[int]] = {}
        for i, outcome in outcomes.items():
            if outcome.done:
                continue
            if outputs[i].finish_reason == Termination.EOS:
                to_end.setdefault(Termination.EOS, []).append(i)
                continue
            text = outcome.observation
            if self.chat_replies is not None and "message" in outcome.info:
                text = self.chat_replies.reply(outcome.info["message"])
            obs_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if used[i] + len(obs_ids) >= s.max_total_tokens:
                to_end.setdefault(Termination.TOKEN_BUDGET, []).append(i)
            else:
                observations[i] = obs_ids
        return observations, to_end

    def _decode_turn(
        self,
        state: TurnDecoder,
        live: list[int],
        used: list[int],
        s: Sampling,
        generator: torch.Generator | None,
    ) -> dict[int, TurnOutput]:
        """One turn for every live episode; episodes near the total budget get less."""
        budgets = {i: max(1, min(s.max_turn_tokens, s.max_total_tokens - used[i])) for i in live}
        return state.decode(
            max_new_tokens=budgets,
            seq_indices=live,
            sampling=s,
            stop_strings=self.stop_strings,
            tokenizer=self.tokenizer,
            generator=generator,
        )


def episode_questions(question_indices: Sequence[int], group_size: int) -> list[int]:
    """The question each episode plays: question ``g``'s ``group_size`` samples are
    episodes ``g * group_size`` to ``(g + 1) * group_size - 1``."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    return [int(q) for q in question_indices for _ in range(group_size)]


def _finish(trajectory: Trajectory, outcome: TurnOutcome) -> None:
    # The answer's own reward: the last turn's shaping is already in turn_rewards.
    trajectory.reward = outcome.answer_reward
    trajectory.info = outcome.info
    trajectory.finish_reason = outcome.termination


def _info_at(infos: Mapping[str, Any], i: int) -> dict[str, Any]:
    """Sub-env ``i``'s info out of Gymnasium's dict of arrays."""
    return {k: v[i] for k, v in infos.items() if not k.startswith("_") and infos[f"_{k}"][i]}
