"""Typed training configuration: dataclasses with documented defaults, read from and written to YAML.

One :class:`TrainConfig` describes a whole run, in sections that mirror the YAML files in
``configs/``::

    algo: grpo                 # which algorithm trains (grpo | ppo | reinforce | sft)
    model:    {name: smollm2-135m, dtype: float32, lora: {r: 16}}
    env:      {dataset: synthetic, top_k: 5, max_turns: 5, reward: research}
    rollout:  {questions_per_step: 4, group_size: 5, temperature: 1.0}
    optim:    {lr: 1.0e-6, warmup_steps: 0, max_grad_norm: 1.0}
    trainer:  {steps: 200, epochs: 1, micro_batch_size: 4}
    eval:     {every: 50, questions: 64}
    logging:  {wandb: true}
    checkpoint: {every: 50}
    grpo:     {kl_coef: 0.001, clip_low: 0.2}
    ppo:      {gamma: 1.0, lam: 1.0}
    reinforce: {baseline: rloo}
    sft:      {demonstrations: oracle}

The sections from ``grpo`` down are not written here: each is the settings dataclass that
its algorithm's own module declares (``GRPOSettings`` in ``grpo.py`` ...), found through
the registry, so a plugin algorithm gets a section of its name the same way. Every
registered algorithm's section is always present (with defaults), so an ablation is one
flag: ``--algo ppo`` with a GRPO YAML trains PPO with that file's model, env and optimizer
and PPO's own defaults. A key that is not a field is an error naming the valid keys, so a
typo never silently falls back to a default.

The shared sections (``model`` to ``checkpoint``), each documenting its fields, are in
``config_sections.py`` (and exported here); this file holds the whole run and its YAML
conversion. The value checks of :meth:`TrainConfig.validate` live in
``config_checks.py`` and in each algorithm's settings (``validate``).
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from algorithms.config_sections import (
    CheckpointConfig,
    EnvConfig,
    EvalConfig,
    LoggingConfig,
    LoraConfig,
    ModelConfig,
    OptimConfig,
    RolloutConfig,
    TrainerConfig,
)

__all__ = [
    "CheckpointConfig",
    "EnvConfig",
    "EvalConfig",
    "LoggingConfig",
    "LoraConfig",
    "ModelConfig",
    "OptimConfig",
    "RolloutConfig",
    "TrainConfig",
    "TrainerConfig",
    "parse_overrides",
]


@dataclass
class TrainConfig:
    """A whole training run. See the module docstring for the YAML shape.

    Attributes:
        algo: the algorithm that trains (a name in ``algorithms.registry``).
        output_dir: where metrics, checkpoints and the final model go (``--out``).
        sections: every registered algorithm's own settings, by name, each the settings
            dataclass its module declares (``grpo.py``'s ``GRPOSettings`` ...). Read one
            as ``config.grpo`` or :meth:`settings`; in YAML and :meth:`to_dict` each is a
            top-level section of its name.
    """

    algo: str = "grpo"
    output_dir: str = "runs/default"
    model: ModelConfig = field(default_factory=ModelConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    sections: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, kind in _algorithm_settings().items():
            self.sections.setdefault(name, kind())

    def __getattr__(self, name: str) -> Any:
        # Only reached when ordinary lookup fails: an algorithm's section by its name. An
        # algorithm registered after this config was built gets its defaults here.
        sections = self.__dict__.get("sections")
        if sections is not None and not name.startswith("__"):
            if name not in sections and name in _algorithm_settings():
                sections[name] = _algorithm_settings()[name]()
            if name in sections:
                return sections[name]
        raise AttributeError(f"{type(self).__name__!r} has no attribute or section {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        sections = self.__dict__.get("sections")
        if sections is not None and name in sections:
            sections[name] = value
        else:
            super().__setattr__(name, value)

    def settings(self, name: str | None = None) -> Any:
        """The settings section of algorithm ``name`` (default: ``algo``, the one that trains)."""
        return getattr(self, self.algo if name is None else name)

    # -- conversions ------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from nested dicts; unknown keys and ill-typed values raise ``ValueError``."""
        if not isinstance(data, dict):
            raise ValueError(f"config must be a mapping, got {data!r}")
        kinds = _algorithm_settings()
        fixed = [f.name for f in dataclasses.fields(cls) if f.name != "sections"]
        valid = fixed + list(kinds)
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ValueError(
                f"unknown key(s) {', '.join(map(repr, unknown))} in config; "
                f"valid keys: {', '.join(valid)}"
            )
        config = _build(cls, {k: v for k, v in data.items() if k in fixed}, "")
        for name, kind in kinds.items():
            if name in data:
                value = data[name]
                config.sections[name] = _build(kind, {} if value is None else value, name)
        return config

    def to_dict(self) -> dict[str, Any]:
        """Nested dicts, each algorithm's section at the top level under its name."""
        data = dataclasses.asdict(self)
        data.update(data.pop("sections"))
        return data

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        text = Path(path).read_text()
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            line = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ValueError(f"{path}: invalid YAML{line}: {problem}") from None
        if not isinstance(data, dict):
            raise ValueError(
                f"{path}: a config file must hold a mapping, got {type(data).__name__}"
            )
        try:
            return cls.from_dict(data)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The config as YAML text (also written to ``path`` when given)."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    def validate(self, *, check_names: bool = True, check_device: bool = True) -> TrainConfig:
        """Check every value before any heavy work (loading a model, building an index).

        Ranges (steps >= 1, group_size >= 2 for GRPO, token budgets >= 1, ...) are always
        checked; ``check_names`` also resolves the env's names (reward, template, dataset
        and split, retriever, algorithm) through research_env's registries, which is cheap;
        ``check_device`` checks that ``model.device`` exists on this machine and that a
        ``trainer.sharding: fsdp`` run is one of several ranks (off for a plan). Raises one
        ``ValueError`` listing every problem; returns ``self`` when all is well.
        """
        from algorithms.config_checks import (
            bound_problems,
            device_problems,
            name_problems,
            precision_problems,
            range_problems,
            sharding_problems,
        )

        problems = range_problems(self)
        for name, section in self.sections.items():
            problems += section.validate(self, selected=name == self.algo, check_names=check_names)
        problems += bound_problems(self, problems) + sharding_problems(self, check_device)
        problems += precision_problems(self)
        if check_names:
            problems += name_problems(self)
        if check_device:
            problems += device_problems(self.model.device)
        if problems:
            raise ValueError("invalid config: " + "; ".join(problems))
        return self

    def with_overrides(self, assignments: list[str] | dict[str, Any]) -> TrainConfig:
        """A copy with dotted-key overrides, e.g. ``["grpo.kl_coef=0", "optim.lr=1e-5"]``.

        String values are parsed as YAML scalars (``1e-5`` -> float, ``null`` -> None).
        """
        pairs = (
            assignments.items() if isinstance(assignments, dict) else parse_overrides(assignments)
        )
        data = self.to_dict()
        for key, value in pairs:
            node = data
            *parents, leaf = key.split(".")
            for i, part in enumerate(parents):
                child = node.get(part)
                if child is None and part in node:  # an optional section set to null
                    child = node[part] = {}
                if not isinstance(child, dict):
                    raise ValueError(
                        f"cannot set {key!r}: {'.'.join(parents[: i + 1])!r} is not a section"
                    )
                node = child
            node[leaf] = value
        return TrainConfig.from_dict(data)


def _algorithm_settings() -> dict[str, type]:
    """Name -> settings dataclass of every registered algorithm (imports their modules)."""
    from algorithms.registry import algorithm_settings

    return algorithm_settings()


def parse_overrides(assignments: list[str]) -> list[tuple[str, Any]]:
    """``["a.b=1", "c=x"]`` -> ``[("a.b", 1), ("c", "x")]`` (values parsed as YAML)."""
    pairs = []
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like section.key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ValueError(
                f"override {item!r}: the value {raw!r} is not valid YAML ({problem}); "
                "quote a string that holds brackets or colons, e.g. --set 'key=\"[1\"'"
            ) from None
        pairs.append((key.strip(), value))
    return pairs


# --------------------------------------------------------------------------------------
# Dict -> dataclass with validation
# --------------------------------------------------------------------------------------


def _build(cls: type, data: Any, path: str) -> Any:
    where = path or "config"
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping, got {data!r}")
    hints = get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(map(repr, unknown))} in {where}; "
            f"valid keys: {', '.join(valid)}"
        )
    kwargs = {
        name: _convert(hints[name], value, f"{path}.{name}" if path else name)
        for name, value in data.items()
    }
    return cls(**kwargs)


def _convert(hint: Any, value: Any, path: str) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None:
            if type(None) in options:
                return None
            raise ValueError(f"{path} may not be null")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, path)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0] if len(errors) == 1 else f"{path}: {'; '.join(errors)}")
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise ValueError(f"{path} must be one of {list(choices)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{path} must be a list, got {value!r}")
        (item,) = get_args(hint)[:1] or (Any,)
        return [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
            raise ValueError(f"{path} must be a mapping with string keys, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(hint):
        return _build(hint, {} if value is None else value, path)  # type: ignore[arg-type]
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{path} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{path} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-6" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{path} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{path} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint!r} at {path}")
