"""An algorithm registered from outside the package is one class and its settings plus
one registration line, and then it is a built-in's equal: ``--algo NAME`` trains it, its
section is in the config (YAML and ``--set NAME.x=...``), and its own ``validate`` runs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from algorithms import registry
from algorithms.config import TrainConfig
from algorithms.objectives import ObjectiveTerms
from algorithms.registry import register_algorithm
from algorithms.settings import AlgorithmSettings
from algorithms.trainer import OnPolicyAlgorithm
from research_app.cli import main


@dataclass
class DiscountedSettings(AlgorithmSettings):
    """A REINFORCE with a discount and an entropy bonus, and nothing else.

    Attributes:
        gamma: discount over generated tokens.
        entropy_coef: entropy bonus weight.
    """

    gamma: float = 1.0
    entropy_coef: float = 0.0

    def validate(self, config: Any, *, selected: bool, check_names: bool = True) -> list[str]:
        if 0 < self.gamma <= 1:
            return []
        return [f"discounted.gamma must be in (0, 1], got {self.gamma}"]


class Discounted(OnPolicyAlgorithm):
    """Monte-Carlo policy gradient, the episode's discounted return on every token."""

    name = "discounted"
    settings_class = DiscountedSettings

    def advantage_spec(self) -> tuple[str, dict[str, Any]]:
        return "reinforce", {"gamma": self.hparams.gamma}

    def objective_terms(self) -> ObjectiveTerms:
        return ObjectiveTerms(
            entropy_coef=self.hparams.entropy_coef,
            norm_len=self.config.rollout.max_total_tokens,
        )


@pytest.fixture
def discounted():
    register_algorithm("discounted", Discounted)  # the one registration line
    yield
    registry._ALGORITHMS.pop("discounted")


def train(out, *extra):
    return main(["train", "--algo", "discounted", "--model", "tiny-random", "--steps", "1",
                 "--out", str(out), "--no-wandb", *extra])  # fmt: skip


def test_a_registered_algorithm_gets_a_config_section(discounted):
    config = TrainConfig()
    assert config.discounted == DiscountedSettings()
    assert config.with_overrides(["discounted.gamma=0.5"]).discounted.gamma == 0.5
    assert TrainConfig.from_dict({"discounted": {"gamma": 0.9}}).discounted.gamma == 0.9
    with pytest.raises(ValueError, match=r"unknown key.*'typo' in discounted"):
        config.with_overrides(["discounted.typo=1"])
    with pytest.raises(ValueError, match=r"discounted.gamma must be in \(0, 1\], got 2.0"):
        config.with_overrides(["discounted.gamma=2"]).validate(check_device=False)


def test_a_registered_algorithm_trains_by_name_from_the_command_line(discounted, tmp_path):
    out = tmp_path / "run"
    assert train(out, "--set", "discounted.gamma=0.9") == 0
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1]["step"] == 1
    saved = yaml.safe_load((out / "checkpoints" / "step-000001" / "config.yaml").read_text())
    assert saved["algo"] == "discounted" and saved["discounted"]["gamma"] == 0.9


def test_its_validate_runs_before_any_model_loads(discounted, tmp_path, capsys):
    assert train(tmp_path / "bad", "--set", "discounted.gamma=0") == 2
    assert "discounted.gamma must be in (0, 1], got 0.0" in capsys.readouterr().err
