"""The language model behind ``retriever="simulated"``, and its noise curriculum.

:class:`LMPassageWriter` writes search-result passages with a local causal LM (default the
offline ``smollm2-135m``; tests use ``tiny-random``): all prompts of one search call are
decoded together by the rollout decoder (:func:`algorithms.rollout.decoder.generate`,
ragged prompts, one batch), so one env step costs one generation call. ``import algorithms``
registers it as the simulated search engine's ``"lm"`` writer
(:mod:`research_env.retrievers.simulated`), so this works::

    env = gym.make("ReSearch-MultiHop-v0", retriever="simulated",
                   retriever_kwargs={"model": "tiny-random", "noise_rate": 0.5})

Deterministic: a batch's sampling generator is seeded with ``seed`` and the batch's
prompts, so the same prompts under the same seed give the same passages (and the engine's
passage cache answers a prompt already written without asking again).

:class:`NoiseCurriculum` is a training callback that moves the engine's curriculum to the
trainer's step after every update.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch

from algorithms.rollout.decoder import _eos_ids, generate
from research_env.retrievers.simulated import SimulatedSearchEngine

__all__ = ["LMPassageWriter", "NoiseCurriculum", "simulated_engines"]


class LMPassageWriter:
    """Writes one passage per prompt with a causal LM, one batched decode per call.

    Arguments:
        model: an offline name (``smollm2-135m``, ``tiny-random``), a model directory, or
            an already loaded :class:`~algorithms.policy.Policy`.
        seed: seeds sampling (with the batch's prompts).
        max_new_tokens: the longest passage, in tokens.
        temperature: sampling temperature; 0 decodes greedily.
        device, dtype: where and how a named model is loaded.

    ``calls`` counts generation calls (one per :meth:`write`).
    """

    def __init__(
        self,
        model: Any = "smollm2-135m",
        *,
        seed: int = 0,
        max_new_tokens: int = 96,
        temperature: float = 0.7,
        device: str = "auto",
        dtype: str = "float32",
    ) -> None:
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if not isinstance(temperature, (int, float)) or temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature!r}")
        if isinstance(model, str):
            from algorithms.policy import load_policy

            model = load_policy(model, dtype=dtype, device=device)
        self.policy = model
        self.seed = int(seed)
        self.max_new_tokens = max_new_tokens
        self.temperature = float(temperature)
        self.calls = 0
        tokenizer = self.policy.tokenizer
        self._chat = bool(getattr(tokenizer, "chat_template", None))
        self._eos = _eos_ids(self.policy.model, tokenizer)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "model": str(self.policy.name),
            "seed": self.seed,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
        }

    def _encode(self, prompt: str) -> list[int]:
        tokenizer = self.policy.tokenizer
        if self._chat:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        else:
            text = prompt
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    def write(self, prompts: Sequence[str]) -> list[str]:
        """One passage per prompt, decoded as one batch."""
        if not prompts:
            return []
        digest = hashlib.sha256("\0".join([str(self.seed), *prompts]).encode()).digest()
        generator = torch.Generator(device=self.policy.device)
        generator.manual_seed(int.from_bytes(digest[:8]) & (2**63 - 1))
        result = generate(
            self.policy.model,
            [self._encode(p) for p in prompts],
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature or 1.0,
            greedy=self.temperature == 0,
            eos_token_ids=self._eos,
            tokenizer=self.policy.tokenizer,
            generator=generator,
        )
        self.calls += 1
        decode = self.policy.tokenizer.decode
        return [decode(ids, skip_special_tokens=True).strip() for ids in result.token_ids]

    def __repr__(self) -> str:
        return f"LMPassageWriter({self.policy.name!r}, seed={self.seed})"


def simulated_engines(env: Any) -> list[SimulatedSearchEngine]:
    """The simulated search engines behind ``env`` (an env, a vector env, or anything with
    ``envs`` / ``retriever``), each once."""
    found: dict[int, SimulatedSearchEngine] = {}
    for sub in getattr(env, "envs", None) or [env]:
        retriever = getattr(getattr(sub, "unwrapped", sub), "retriever", None)
        if isinstance(retriever, SimulatedSearchEngine):
            found[id(retriever)] = retriever
    return list(found.values())


class NoiseCurriculum:
    """A ``learn(callback=NoiseCurriculum())`` callback: after every training step, sets
    each simulated search engine of the training envs (``algo.engine.vector_env``) to the
    trainer's step, so a ``noise_rate`` curriculum
    (:func:`research_env.retrievers.simulated.noise_curriculum`) advances with training.
    Never stops training; a trainer whose envs have no simulated engine is an error."""

    def __call__(self, algo: Any, metrics: dict[str, float]) -> None:
        engines = simulated_engines(algo.engine.vector_env)
        if not engines:
            raise ValueError(
                "NoiseCurriculum: the training env has no simulated search engine "
                "(train with env retriever='simulated')"
            )
        for engine in engines:
            engine.set_step(int(algo.step))
