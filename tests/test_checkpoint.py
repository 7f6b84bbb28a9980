"""Checkpoints: exact continuation after a reload, atomic writes, LoRA adapters, HF export."""

from __future__ import annotations

import re

import pytest
import torch
from test_algorithms import config, two_groups

from algorithms.config import TrainConfig
from algorithms.grpo import GRPO
from algorithms.policy import LoraSettings, load_policy
from algorithms.ppo import PPO
from algorithms.registry import make_algorithm
from algorithms.trainer import checkpoint as ckpt


def _state(algo):
    return {k: v.detach().clone() for k, v in algo.policy.model.state_dict().items()}


def _assert_same_weights(a, b):
    sa, sb = a.policy.model.state_dict(), b.policy.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _assert_same_optimizer(a, b):
    state_a, state_b = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert state_a["param_groups"] == state_b["param_groups"]
    assert state_a["state"].keys() == state_b["state"].keys() and state_a["state"]
    for index, moments in state_a["state"].items():
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(moments[name], state_b["state"][index][name]), (index, name)


@pytest.mark.parametrize("cls,lora", [(GRPO, None), (GRPO, LoraSettings(r=4)), (PPO, None)])
def test_reload_continues_exactly(cls, lora, tmp_path):
    cfg = config(cls.name, tmp_path, **{"optim.warmup_steps": 3, "trainer.epochs": 2})
    policy = load_policy("tiny-random", device="cpu", lora=lora, value_head=cls is PPO)
    algo = cls(policy, None, cfg)
    algo.learn_from(two_groups())
    algo.save(tmp_path / "ckpt")

    loaded = cls.load(tmp_path / "ckpt")
    assert loaded.step == algo.step == 1
    _assert_same_weights(algo, loaded)
    _assert_same_optimizer(algo, loaded)
    assert loaded.scheduler.state_dict() == algo.scheduler.state_dict()
    assert loaded.optimizer.param_groups[0]["lr"] == algo.optimizer.param_groups[0]["lr"]
    # The RNG streams continue where the saved run's were.
    ckpt.restore_rng_state(torch.load(tmp_path / "ckpt" / "trainer.pt", weights_only=True)["rng"])
    expected = torch.rand(3)
    ckpt.restore_rng_state(torch.load(tmp_path / "ckpt" / "trainer.pt", weights_only=True)["rng"])
    assert torch.equal(torch.rand(3), expected)

    # One more identical step on both: still bit-identical (shuffles use the restored RNG).
    ckpt.restore_rng_state(torch.load(tmp_path / "ckpt" / "trainer.pt", weights_only=True)["rng"])
    algo.learn_from(two_groups())
    ckpt.restore_rng_state(torch.load(tmp_path / "ckpt" / "trainer.pt", weights_only=True)["rng"])
    loaded.learn_from(two_groups())
    _assert_same_weights(algo, loaded)
    _assert_same_optimizer(algo, loaded)
    if lora is not None:
        assert not (tmp_path / "ckpt" / "policy" / "model.safetensors").exists()
        assert loaded.reference_model is None


def test_reference_after_reload_is_the_initial_model(tmp_path):
    cfg = config("grpo", tmp_path, **{"grpo.kl_coef": 0.1, "optim.lr": 1e-2})
    algo = GRPO(load_policy("tiny-random", device="cpu"), None, cfg)
    initial = _state(algo)
    algo.learn_from(two_groups())
    algo.save(tmp_path / "ckpt")
    loaded = GRPO.load(tmp_path / "ckpt")
    reference = loaded.reference_model.state_dict()
    assert all(torch.equal(reference[k], initial[k]) for k in initial)
    assert any(not torch.equal(loaded.policy.model.state_dict()[k], initial[k]) for k in initial)


def test_failed_save_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    algo = make_algorithm(
        "grpo", load_policy("tiny-random", device="cpu"), None, config("grpo", tmp_path)
    )
    target = ckpt.step_dir(tmp_path, 1)
    algo.save(target)
    before = sorted(p.name for p in target.rglob("*"))
    real_save = torch.save

    def crash(obj, path, *args, **kwargs):
        if str(path).endswith(ckpt.TRAINER_STATE):
            raise OSError("disk full")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        algo.save(ckpt.step_dir(tmp_path, 2))  # a new checkpoint
    with pytest.raises(OSError, match="disk full"):
        algo.save(target)  # overwriting an old one
    root = tmp_path / ckpt.CHECKPOINTS_DIR
    assert sorted(p.name for p in root.iterdir()) == [target.name]  # no step-2, no temp dirs
    assert sorted(p.name for p in target.rglob("*")) == before
    assert ckpt.latest_checkpoint(tmp_path) == target


def test_latest_and_prune(tmp_path):
    for step in (3, 10, 7):
        d = ckpt.step_dir(tmp_path, step)
        d.mkdir(parents=True)
        (d / ckpt.TRAINER_STATE).write_bytes(b"")
    (tmp_path / ckpt.CHECKPOINTS_DIR / ".step-000012.tmp-x").mkdir()  # an interrupted write
    assert ckpt.latest_checkpoint(tmp_path).name == "step-000010"
    ckpt.prune_checkpoints(tmp_path, keep_last=2)
    names = sorted(p.name for p in (tmp_path / ckpt.CHECKPOINTS_DIR).iterdir() if p.name[0] != ".")
    assert names == ["step-000007", "step-000010"]


@pytest.mark.numeric
def test_export_is_a_plain_hf_model_with_lora_merged(tmp_path):
    from transformers import AutoModelForCausalLM

    policy = load_policy("tiny-random", device="cpu", lora=LoraSettings(r=4))
    algo = GRPO(policy, None, config("grpo", tmp_path, **{"optim.lr": 1e-2}))
    algo.learn_from(two_groups())
    out = ckpt.export_pretrained(algo.policy, tmp_path / "final")
    assert not (out / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.tensor([[5, 60, 700, 8000, 90]])
    with torch.no_grad():
        expected = algo.policy.model(ids).logits
        got = model(ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # The live model keeps its separate adapters (the merge happened on a copy).
    assert hasattr(algo.policy.model, "disable_adapter")


def test_checkpoint_config_is_the_run_config(tmp_path):
    algo = GRPO(load_policy("tiny-random", device="cpu"), None, config("grpo", tmp_path))
    algo.save(tmp_path / "c")
    saved = TrainConfig.from_yaml(tmp_path / "c" / "config.yaml")
    assert saved == algo.config
    assert saved.model.name == "tiny-random" and saved.algo == "grpo"


def test_separate_critic_round_trips_next_to_a_lora_policy(tmp_path):
    cfg = config("ppo", tmp_path, **{"ppo.critic": "separate"})
    policy = load_policy("tiny-random", device="cpu", lora=LoraSettings(r=4))
    algo = PPO(policy, None, cfg)
    algo.learn_from(two_groups())
    algo.save(tmp_path / "ckpt")
    loaded = PPO.load(tmp_path / "ckpt")
    assert loaded.critic is not None and not hasattr(loaded.critic.model, "disable_adapter")
    for name, tensor in algo.critic.model.state_dict().items():
        assert torch.equal(tensor, loaded.critic.model.state_dict()[name]), name
    head_a, head_b = algo.critic.value_head.state_dict(), loaded.critic.value_head.state_dict()
    assert all(torch.equal(head_a[k], head_b[k]) for k in head_a)
    _assert_same_optimizer(algo, loaded)


# --------------------------------------------------------------------------------------
# Hostile and damaged checkpoints (issue 13)
# --------------------------------------------------------------------------------------


class _RunsCode:
    """Unpickling this calls ``Path.write_text``: what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.write_text, (pathlib.Path(self.marker), "ran"))


def _saved(tmp_path, name="ckpt"):
    algo = GRPO(load_policy("tiny-random", device="cpu"), None, config("grpo", tmp_path))
    return algo, algo.save(tmp_path / name)


def test_a_crafted_trainer_state_is_refused_without_running_it(tmp_path):
    _, path = _saved(tmp_path)
    marker = tmp_path / "marker"
    state = torch.load(path / ckpt.TRAINER_STATE, weights_only=True)
    state["extra"] = {"payload": _RunsCode(marker)}
    torch.save(state, path / ckpt.TRAINER_STATE)
    with pytest.raises(ckpt.CorruptCheckpointError, match="could run code"):
        ckpt.load_checkpoint(path)
    with pytest.raises(ValueError, match=r"trainer\.pt"):
        GRPO.load(path)
    assert not marker.exists()


def test_rng_states_round_trip_exactly_through_a_weights_only_file(tmp_path):
    import random

    import numpy as np

    random.seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in Python's state
    np.random.seed(4)
    np.random.standard_normal()  # and in NumPy's
    state = ckpt.capture_rng_state()
    torch.save({"rng": state}, tmp_path / "rng.pt")
    expected = (random.gauss(0, 1), random.random(), np.random.standard_normal(), torch.rand(2))
    ckpt.restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    got = (random.gauss(0, 1), random.random(), np.random.standard_normal(), torch.rand(2))
    assert got[:3] == expected[:3] and torch.equal(got[3], expected[3])


def test_a_checkpoint_from_before_weights_only_still_loads(tmp_path):
    import random

    import numpy as np

    _, path = _saved(tmp_path)
    (path / ckpt.CHECKSUMS).unlink()  # earlier versions kept no checksums either
    state = torch.load(path / ckpt.TRAINER_STATE, weights_only=True)
    state["rng"] = {  # what earlier versions wrote: NumPy arrays, Python tuples
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    torch.save(state, path / ckpt.TRAINER_STATE)
    expected = (random.random(), np.random.random())
    loaded = GRPO.load(path)
    assert (random.random(), np.random.random()) == expected
    assert loaded.step == 0


@pytest.mark.parametrize(
    "damage,bad_file",
    [
        ("truncate-trainer", "trainer.pt"),
        ("garble-weights", "model.safetensors"),
        ("invalid-config", "config.yaml"),
        ("flip-weights", "model.safetensors"),
        ("broken-tokenizer", "tokenizer.json"),
        ("garbage-bin-weights", "pytorch_model.bin"),
    ],
)
def test_a_damaged_latest_checkpoint_is_named_and_skipped(tmp_path, damage, bad_file):
    algo, _ = _saved(tmp_path, "unused")
    good = algo.save(ckpt.step_dir(tmp_path, 1))
    bad = algo.save(ckpt.step_dir(tmp_path, 2))
    if damage == "truncate-trainer":
        data = (bad / "trainer.pt").read_bytes()
        (bad / "trainer.pt").write_bytes(data[: len(data) // 2])
    elif damage == "garble-weights":
        weights = bad / "policy" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "flip-weights":  # 4 bytes inside the tensor data: the header still reads
        weights = bad / "policy" / "model.safetensors"
        data = bytearray(weights.read_bytes())
        data[-100:-96] = bytes(b ^ 0xFF for b in data[-100:-96])
        weights.write_bytes(bytes(data))
    elif damage == "broken-tokenizer":
        tokenizer = bad / "policy" / "tokenizer.json"
        tokenizer.write_text(tokenizer.read_text()[:500])
    elif damage == "garbage-bin-weights":  # a .bin policy in place of the safetensors
        (bad / "policy" / "model.safetensors").unlink()
        (bad / "policy" / "pytorch_model.bin").write_bytes(b"not a torch file" * 10)
    else:
        (bad / "config.yaml").write_text("trainer: {steps: [unclosed\n")
    with pytest.raises(ckpt.CorruptCheckpointError, match=re.escape(bad_file)):
        GRPO.load(bad)
    path, skipped = ckpt.latest_intact_checkpoint(tmp_path)
    assert path == good
    assert len(skipped) == 1 and bad_file in skipped[0] and "step-000002" in skipped[0]


def test_a_checkpoint_lists_the_sha256_of_every_file_it_holds(tmp_path):
    import json

    from research_env.storage import file_sha256

    _, path = _saved(tmp_path)
    sums = json.loads((path / ckpt.CHECKSUMS).read_text())["sha256"]
    files = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    assert set(sums) == files - {ckpt.CHECKSUMS}
    assert {"trainer.pt", "config.yaml", "policy/model.safetensors"} <= set(sums)
    assert sums["trainer.pt"] == file_sha256(path / "trainer.pt")


def test_stale_staging_directories_are_removed(tmp_path):
    algo, _ = _saved(tmp_path, "unused")
    algo.save(ckpt.step_dir(tmp_path, 1))
    root = tmp_path / ckpt.CHECKPOINTS_DIR
    (root / ".step-000002.abc123.tmp").mkdir()  # a save killed half-way
    (root / ".step-000002.abc123.tmp" / "trainer.pt").write_bytes(b"x")
    ckpt.prune_checkpoints(tmp_path, keep_last=2)
    assert sorted(p.name for p in root.iterdir()) == ["step-000001"]


# --------------------------------------------------------------------------------------
# LoRA adapters and exports that reload with standard tools
# --------------------------------------------------------------------------------------


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("from_directory", [False, True])
def test_a_lora_checkpoint_reloads_with_auto_peft(tmp_path, monkeypatch, from_directory):
    from peft import AutoPeftModelForCausalLM

    name = "tiny-random"
    if from_directory:  # a local model directory given by a relative path
        load_policy("tiny-random", device="cpu").model.save_pretrained(tmp_path / "base")
        load_policy("tiny-random", device="cpu").tokenizer.save_pretrained(tmp_path / "base")
        monkeypatch.chdir(tmp_path)
        name = "base"
    policy = load_policy(name, device="cpu", lora=LoraSettings(r=4))
    algo = GRPO(policy, None, config("grpo", tmp_path, **{"optim.lr": 1e-2}))
    algo.learn_from(two_groups())
    path = algo.save(tmp_path / "ckpt")
    monkeypatch.chdir("/")  # the adapter must not depend on the working directory
    reloaded = AutoPeftModelForCausalLM.from_pretrained(path / "policy")
    ids = torch.tensor([[5, 60, 700, 8000, 90]])
    torch.testing.assert_close(_logits(reloaded, ids), _logits(algo.policy.model, ids))


def test_a_lora_export_has_the_adapter_and_a_model_card(tmp_path):
    from peft import AutoPeftModelForCausalLM

    policy = load_policy("tiny-random", device="cpu", lora=LoraSettings(r=4))
    algo = GRPO(policy, None, config("grpo", tmp_path, **{"optim.lr": 1e-2}))
    algo.learn_from(two_groups())
    out = ckpt.export_pretrained(algo.policy, tmp_path / "final", config=algo.config, step=1)
    adapter = AutoPeftModelForCausalLM.from_pretrained(out / ckpt.ADAPTER_DIR)
    ids = torch.tensor([[5, 60, 700, 8000, 90]])
    torch.testing.assert_close(_logits(adapter, ids), _logits(algo.policy.model, ids))
    card = (out / "README.md").read_text()
    assert "tiny-random" in card and "grpo" in card and "AutoModelForCausalLM" in card
    assert "adapter/" in card


def test_a_full_model_export_has_a_model_card(tmp_path):
    algo = GRPO(load_policy("tiny-random", device="cpu"), None, config("grpo", tmp_path))
    out = ckpt.export_pretrained(algo.policy, tmp_path / "final")
    assert "from_pretrained" in (out / "README.md").read_text()
    assert not (out / ckpt.ADAPTER_DIR).exists()


def test_the_model_card_names_its_base_its_evaluation_and_its_prompt(tmp_path):
    """The card of ``final/``: the hub model an offline name stands for, the run's last
    held-out evaluation, and the prompt format it was trained on."""
    import json

    algo = GRPO(load_policy("tiny-random", device="cpu"), None, config("grpo", tmp_path))
    algo.policy.name = "smollm2-135m"  # what an offline SmolLM2 run records
    record = {"step": 3, "eval/em": 0.25, "eval/f1": 0.5, "eval/searches": 1.5}
    (tmp_path / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    algo.config.output_dir = str(tmp_path)
    out = ckpt.export_pretrained(algo.policy, tmp_path / "final", config=algo.config, step=3)
    card = (out / "README.md").read_text()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card
    assert "## Evaluation" in card and "step 3: em 0.250, f1 0.500, searches 1.500" in card
    assert "## Prompt format" in card and "<the question>" in card and "<search>" in card
