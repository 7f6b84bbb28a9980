"""Algorithms by name, so an ablation is one argument: ``make_algorithm("ppo", ...)``.

Entries are ``"module:Class"`` strings resolved on first use, so listing the names (for
``--algo`` choices and ``--help``) imports no torch. Any class with the verbs of
:class:`~algorithms.trainer.OnPolicyAlgorithm` (``learn``, ``save``, ``load``, ``predict``)
can be added with :func:`register_algorithm`::

    register_algorithm("my-grpo", "my_package.my_grpo:MyGRPO")
"""

from __future__ import annotations

import importlib
from typing import Any

_ALGORITHMS: dict[str, str | type] = {
    "grpo": "algorithms.grpo:GRPO",
    "ppo": "algorithms.ppo:PPO",
    "reinforce": "algorithms.reinforce:REINFORCE",
    "sft": "algorithms.sft:SFT",
}

# Stable-Baselines3 algorithms on ReSearch-MultiHop-Structured-v0 (discrete candidate
# operations, feature observations), for ablations in CPU minutes. They train a small MLP,
# not an LLM, so they sit beside the registry above: `research-env train --algo sb3-ppo`
# hands them to :func:`algorithms.sb3.run_cli`.
SB3_ALGORITHMS: dict[str, str] = {
    "sb3-ppo": "stable_baselines3:PPO",
    "sb3-dqn": "stable_baselines3:DQN",
}


def register_algorithm(name: str, target: str | type) -> None:
    """Make ``name`` available to :func:`make_algorithm` and ``research-env train --algo``.

    ``target`` is the class or a lazy ``"package.module:ClassName"`` reference.
    """
    _ALGORITHMS[name] = target


def available_algorithms() -> list[str]:
    return sorted(_ALGORITHMS)


def available_sb3_algorithms() -> list[str]:
    """The ``--algo`` names that train SB3 on the structured env (see :data:`SB3_ALGORITHMS`)."""
    return sorted(SB3_ALGORITHMS)


def algorithm_class(name: str) -> type:
    """The class registered as ``name``."""
    if name not in _ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {available_algorithms()}")
    target = _ALGORITHMS[name]
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
        _ALGORITHMS[name] = target
    return target


def make_algorithm(
    name: str,
    policy: Any,
    env_kwargs: dict[str, Any] | None = None,
    config: Any = None,
    **kwargs: Any,
) -> Any:
    """``algorithm_class(name)(policy, env_kwargs, config, **kwargs)``."""
    return algorithm_class(name)(policy, env_kwargs, config, **kwargs)
