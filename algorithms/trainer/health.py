"""Reasoning-health monitors: warnings that fire *before* an RL run's score collapses.

Users of search-RL systems report GRPO collapsing the same way (Search-R1 #88/#89/#186,
ZeroSearch #23, the blog "Search-R1, Re-examined"): the ``<think>`` text degenerates
first, the policy settles at one search per episode, groups turn flat (every sample gets
the same reward, so there is no gradient), and only then does the score drop. Each
:class:`Threshold` below watches one per-step metric of :func:`episode_metrics
<algorithms.trainer.metrics.episode_metrics>` or of the update, and
:class:`HealthMonitor` prints **one** warning line when a metric crosses its threshold
(and again only after it has recovered and crossed once more).

The thresholds (:data:`THRESHOLDS`), and why:

=================================  ==========================================================
``train/entropy`` < 0.1            mean token entropy (nats) of the sampled responses; below
                                   it the policy is near-deterministic and stops exploring.
``episode/think_chars`` drops 50%  ``<think>`` characters per model turn, against the mean
                                   of the run's first 5 steps: the degeneration that comes
                                   before the score drops. Logged only when the trainer
                                   passes its tokenizer to ``episode_metrics``.
``response/generated_tokens``      the same 50% drop rule on generated tokens per episode.
``episode/searches`` < 1.05        searches per episode, for 10 steps in a row: the policy
                                   settled at one search (or none) on multi-hop questions.
``episode/supporting_recall``      the same 50% drop rule on supporting-document recall:
                                   the searches stopped finding the evidence.
``health/flat_group_fraction``     above 0.8: more than 80% of the step's groups had equal
                                   rewards; the update learns from a few episodes or none.
``train/kl`` > 0.5                 KL (nats/token, the run's estimator) to the reference,
                                   which is the start policy (a frozen copy made when the
                                   algorithm is built; with LoRA the base model). With a KL
                                   coefficient of 0 there is no reference pass, so no
                                   ``train/kl``: this monitor is then silent by design.
``train/clipfrac`` > 0.3           fraction of tokens whose ratio was clipped: updates too
                                   large for the trust region (lower the learning rate).
=================================  ==========================================================

Change them by passing other :class:`Threshold` objects to :class:`HealthMonitor`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Threshold:
    """One documented alarm on one metric.

    Attributes:
        key: the per-step metric, e.g. ``"train/entropy"``.
        kind: ``"below"`` / ``"above"`` compare with ``value``; ``"drop"`` fires when the
            metric falls below ``(1 - value)`` times its mean over the first
            ``baseline_steps`` steps that logged it.
        value: the bound (for ``"drop"``, the fraction lost, e.g. 0.5).
        patience: consecutive steps past the bound before the warning.
        baseline_steps: the steps averaged into the reference of a ``"drop"``.
        advice: what the warning line says to look at.
    """

    key: str
    kind: Literal["below", "above", "drop"]
    value: float
    patience: int = 1
    baseline_steps: int = 5
    advice: str = ""

    def describe(self) -> str:
        if self.kind == "drop":
            return f"fell {self.value:.0%} below its first-{self.baseline_steps}-step mean"
        steps = f" for {self.patience} steps" if self.patience > 1 else ""
        return f"{self.kind} {self.value:g}{steps}"


THRESHOLDS: tuple[Threshold, ...] = (
    Threshold("train/entropy", "below", 0.1, advice="the policy stopped exploring; add "
              "an entropy bonus, raise the temperature or lower the learning rate"),
    Threshold("episode/think_chars", "drop", 0.5, advice="the <think> text is degenerating, "
              "which precedes reward collapse; consider PPO/REINFORCE, a KL term or a lower lr"),
    Threshold("response/generated_tokens", "drop", 0.5, advice="responses are shrinking"),
    Threshold("episode/searches", "below", 1.05, patience=10, advice="the policy settled at "
              "one search per episode; multi-hop questions need more"),
    Threshold("episode/supporting_recall", "drop", 0.5, advice="searches stopped finding "
              "the supporting documents"),
    Threshold("health/flat_group_fraction", "above", 0.8, advice="most groups had equal "
              "rewards: no learning signal (raise group_size or the temperature)"),
    Threshold("train/kl", "above", 0.5, advice="the policy drifted far from the start "
              "policy; raise kl_coef or lower the learning rate"),
    Threshold("train/clipfrac", "above", 0.3, advice="updates overshoot the clip range; "
              "lower the learning rate or the epochs"),
)  # fmt: skip

# The per-step metrics worth plotting next to reward and EM (the ablation's curves).
HEALTH_KEYS: tuple[str, ...] = tuple(t.key for t in THRESHOLDS)


@dataclass
class _State:
    baseline: list[float] = field(default_factory=list)
    run: int = 0  # consecutive steps past the bound
    alarmed: bool = False


class HealthMonitor:
    """Feed it each step's metrics; it returns the warning lines of new crossings.

    >>> monitor = HealthMonitor()
    >>> monitor.update(1, {"train/entropy": 0.02})[0].startswith("warning: [health step 1]")
    True
    >>> monitor.update(2, {"train/entropy": 0.01})  # still low: warned once already
    []
    """

    def __init__(self, thresholds: Iterable[Threshold] = THRESHOLDS) -> None:
        self.thresholds = tuple(thresholds)
        self._states = {t: _State() for t in self.thresholds}

    def update(self, step: int, metrics: Mapping[str, float]) -> list[str]:
        warnings = []
        for threshold in self.thresholds:
            value = metrics.get(threshold.key)
            if value is None or not math.isfinite(float(value)):
                continue
            state = self._states[threshold]
            past = self._past(threshold, state, float(value))
            state.run = state.run + 1 if past else 0
            if state.run >= threshold.patience and not state.alarmed:
                state.alarmed = True
                warnings.append(
                    f"warning: [health step {step}] {threshold.key}={float(value):.4g} "
                    f"{threshold.describe()}: {threshold.advice}"
                )
            elif not past:
                state.alarmed = False
        return warnings

    @staticmethod
    def _past(threshold: Threshold, state: _State, value: float) -> bool:
        if threshold.kind == "below":
            return value < threshold.value
        if threshold.kind == "above":
            return value > threshold.value
        if len(state.baseline) < threshold.baseline_steps:
            state.baseline.append(value)
            return False
        reference = sum(state.baseline) / len(state.baseline)
        return reference > 0 and value < (1.0 - threshold.value) * reference
