"""Algorithms by name, so an ablation is one argument: ``make_algorithm("ppo", ...)``.

Entries are ``"module:Class"`` strings resolved on first use, so listing the names (for
``--algo`` choices and ``--help``) imports no torch. The built-ins register themselves in
``algorithms/__init__.py``; any class with the verbs of
:class:`~algorithms.trainer.OnPolicyAlgorithm` (``learn``, ``save``, ``load``, ``predict``)
is added the same way::

    register_algorithm("my-grpo", "my_package.my_grpo:MyGRPO")

A name maps to its class and, through the class's ``settings_class`` (a dataclass of
:class:`~algorithms.settings.AlgorithmSettings`), to its settings: the config then has a
section of that name (``my-grpo: {...}`` in YAML, ``--set my-grpo.x=...``), checked by the
settings' own ``validate``.
"""

from __future__ import annotations

import importlib
from typing import Any

# Name -> class or lazy "module:Class", in registration order (the config's section order).
_ALGORITHMS: dict[str, str | type] = {}

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


def settings_class(name: str) -> type | None:
    """The settings dataclass the algorithm ``name`` declares (imports its module), or
    None for a class that declares none (it then has no config section)."""
    return getattr(algorithm_class(name), "settings_class", None)


def algorithm_settings() -> dict[str, type]:
    """Name -> settings dataclass of every registered algorithm that declares one: the
    algorithm sections of :class:`~algorithms.config.TrainConfig`."""
    found = {name: settings_class(name) for name in _ALGORITHMS}
    return {name: kind for name, kind in found.items() if kind is not None}


def make_algorithm(
    name: str,
    policy: Any,
    env_kwargs: dict[str, Any] | None = None,
    config: Any = None,
    **kwargs: Any,
) -> Any:
    """``algorithm_class(name)(policy, env_kwargs, config, **kwargs)``."""
    return algorithm_class(name)(policy, env_kwargs, config, **kwargs)
