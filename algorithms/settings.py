"""What every algorithm's own settings have in common (torch-free).

An algorithm module declares its settings as a dataclass that subclasses
:class:`AlgorithmSettings` and names it on its class (``settings_class``); the registry
(:mod:`algorithms.registry`) maps the algorithm's name to the class, and so to the
settings. :class:`~algorithms.config.TrainConfig` gives every registered algorithm a
section of its name built from those settings, so a plugin algorithm registered from
outside this package gets ``plugin: {...}`` in YAML, ``--set plugin.x=...`` and its own
checks in :meth:`~algorithms.config.TrainConfig.validate`, exactly like a built-in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from algorithms.config import TrainConfig

# The loss aggregation modes and KL estimators a section may name (see
# algorithms/objectives/losses.py for what each computes).
LossAggregation = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
KLEstimatorName = Literal["k1", "k2", "k3", "low_var_kl"]


class AlgorithmSettings:
    """Base of an algorithm's settings dataclass.

    Subclasses are ``@dataclass`` classes whose fields have documented defaults (the
    YAML section's keys); they override :meth:`validate` for their value checks.
    """

    def validate(
        self, config: TrainConfig, *, selected: bool, check_names: bool = True
    ) -> list[str]:
        """The problems with these settings, each one message naming its key.

        Every section is checked on every run (a typo in an unused section is still an
        error); ``selected`` is true when this algorithm is the one that trains
        (``config.algo``), for the checks that involve the rest of the config.
        ``check_names``: also resolve names and paths (cheap, but off when the env comes
        from Python objects rather than the config).
        """
        return []


def need(problems: list[str], ok: bool, message: str) -> None:
    """Append ``message`` to ``problems`` unless ``ok`` (the checks' one-line form)."""
    if not ok:
        problems.append(message)


def clip_problems(section: str, clip_low: float, clip_high: float | None) -> list[str]:
    """A clipped surrogate's range checks (GRPO's and PPO's sections)."""
    problems: list[str] = []
    need(problems, clip_low >= 0, f"{section}.clip_low must be >= 0, got {clip_low}")
    need(
        problems,
        clip_high is None or clip_high >= 0,
        f"{section}.clip_high must be >= 0 or null, got {clip_high}",
    )
    return problems


def group_problems(what: str, group_size: int) -> list[str]:
    """An estimator that compares the episodes of a group needs two of them."""
    if group_size != 1:
        return []
    return [
        f"{what} needs rollout.group_size >= 2 (advantages compare the episodes of a "
        "group; with 1 they are all 0 and nothing is learned)"
    ]
