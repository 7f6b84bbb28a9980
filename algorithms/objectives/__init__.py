"""The math of training: tensor ops, advantage estimators, loss terms and the one objective.

* :mod:`~algorithms.objectives.ops`: masked and group statistics, log-probs, entropy.
* :mod:`~algorithms.objectives.advantages`: the advantage-estimator registry.
* :mod:`~algorithms.objectives.losses`: loss aggregations, the clipped surrogate, KL, value.
* :mod:`~algorithms.objectives.objective`: :func:`policy_objective` and its :class:`Stat`.
"""

from algorithms.objectives.advantages import (
    ADVANTAGE_ESTIMATORS,
    AdvantageInputs,
    Advantages,
    compute_advantages,
    register_advantage,
)
from algorithms.objectives.losses import KL_ESTIMATORS, LOSS_AGGREGATIONS, aggregate_loss
from algorithms.objectives.objective import ObjectiveTerms, Stat, policy_objective

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "KL_ESTIMATORS",
    "LOSS_AGGREGATIONS",
    "AdvantageInputs",
    "Advantages",
    "ObjectiveTerms",
    "Stat",
    "aggregate_loss",
    "compute_advantages",
    "policy_objective",
    "register_advantage",
]
