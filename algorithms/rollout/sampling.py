"""``Sampling``: how tokens are drawn, and how many, for one rollout, decode or evaluation.

One struct for every place that decodes: the rollout engine (all fields), the decoder
(:meth:`~algorithms.rollout.TurnDecoder.decode` reads the first four) and evaluation
(``research-env eval``). The YAML section it is built from is
:class:`algorithms.config.RolloutConfig` (``config.rollout.sampling(...)``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sampling:
    """Sampling and budgets.

    Attributes:
        temperature: logits are divided by it before sampling (and the sampled tokens'
            log-probs are taken at it, so a trainer recomputes them at the same one).
        top_p: nucleus mass kept (1.0 = off).
        top_k: candidates kept (0 = off).
        greedy: take the argmax instead of sampling (evaluation); log-probs are then at
            temperature 1 and ``temperature``, ``top_p``, ``top_k`` are ignored.
        max_turn_tokens: tokens one assistant turn may generate.
        max_total_tokens: tokens a whole response may hold (turns plus observations); an
            episode that would exceed it ends with ``Termination.TOKEN_BUDGET``.
        seed: seeds sampling and the envs' resets, so a rollout is reproducible
            (``None``: not seeded).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    greedy: bool = False
    max_turn_tokens: int = 256
    max_total_tokens: int = 2048
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.greedy and self.temperature <= 0:
            raise ValueError(
                f"temperature must be > 0, got {self.temperature} (use greedy=True for argmax)"
            )
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.max_turn_tokens < 1 or self.max_total_tokens < 1:
            raise ValueError(
                "max_turn_tokens and max_total_tokens must be >= 1, got "
                f"{self.max_turn_tokens} and {self.max_total_tokens}"
            )

    @property
    def logprob_temperature(self) -> float:
        """The temperature the sampled tokens' log-probs are computed at."""
        return 1.0 if self.greedy else self.temperature

    def describe(self) -> str:
        """``"greedy"`` or e.g. ``"sampled T=0.7, top-p 0.9"``, for reports."""
        if self.greedy:
            return "greedy"
        top_p = f", top-p {self.top_p}" if self.top_p < 1 else ""
        top_k = f", top-k {self.top_k}" if self.top_k else ""
        return f"sampled T={self.temperature}{top_p}{top_k}"
