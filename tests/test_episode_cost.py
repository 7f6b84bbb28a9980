"""The episode-cost levers (issue 15): ``precision "auto"``, the compact template, the
per-document cap, ``trainer.train_layers``, and a run with all of them that still learns."""

from __future__ import annotations

import logging

import pytest
import torch
from test_algorithms import config, two_groups
from test_checkpoint import _assert_same_optimizer, _assert_same_weights
from test_trainer import mean_gain

from algorithms import precision
from algorithms.config import TrainConfig
from algorithms.grpo import GRPO
from algorithms.policy import LoraSettings, load_policy
from algorithms.trainer.freeze import train_top_layers
from benchmarks.learning_margin import THRESHOLD
from research_env import MultiHopSearchEnv
from research_env.data.types import Document
from research_env.fingerprint import differing_fields, fingerprint
from research_env.retrievers.base import SearchHit
from research_env.templates import get_template

# --------------------------------------------------------------------------------------
# precision "auto"
# --------------------------------------------------------------------------------------


def test_auto_precision_falls_back_to_float32_on_a_cpu_without_native_bf16(monkeypatch, caplog):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    precision._note_fallback.cache_clear()
    with caplog.at_level(logging.WARNING, logger="algorithms.precision"):
        assert precision.resolve_precision("auto", "cpu") is None
        assert precision.resolve_precision("auto", torch.device("cpu")) is None
    assert len(caplog.records) == 1  # one note per process, not one per call
    assert "no native bfloat16" in caplog.records[0].getMessage()
    # Never on CUDA, and an explicit choice is kept as asked.
    assert precision.resolve_precision("auto", "cuda:0") == "bfloat16"
    assert precision.resolve_precision("bfloat16", "cpu") == "bfloat16"
    assert precision.resolve_precision(None, "cpu") is None


def test_auto_precision_keeps_bf16_on_a_cpu_with_native_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.resolve_precision("auto", "cpu") == "bfloat16"


@pytest.mark.numeric
def test_native_bf16_check_reads_the_cpu_flags(monkeypatch):
    for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    precision.cpu_has_native_bf16.cache_clear()
    capabilities = torch.cpu.get_capabilities()
    expected = any(capabilities.get(f, False) for f in ("avx512_bf16", "amx_bf16", "bf16"))
    assert precision.cpu_has_native_bf16() is expected
    precision.cpu_has_native_bf16.cache_clear()  # the next caller reads its own environment


@pytest.mark.numeric
@pytest.mark.parametrize(
    "name,value,native",
    [
        ("ATEN_CPU_CAPABILITY", "avx2", False),
        ("ATEN_CPU_CAPABILITY", "default", False),
        ("ONEDNN_MAX_CPU_ISA", "AVX2", False),
        ("ONEDNN_MAX_CPU_ISA", "avx512_core", False),  # AVX-512 without its bf16 extension
        ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX", None),  # allows bf16: the flags decide
    ],
)
def test_an_instruction_set_limit_without_bf16_makes_auto_choose_float32(
    monkeypatch, name, value, native
):
    """`make test-avx2` limits the kernels to AVX2; "auto" must then choose what an AVX2-only
    CPU would (float32), or that run would test bf16 paths no such CPU takes."""
    for other in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"):
        monkeypatch.delenv(other, raising=False)
    precision.cpu_has_native_bf16.cache_clear()
    flags = precision.cpu_has_native_bf16()
    monkeypatch.setenv(name, value)
    precision.cpu_has_native_bf16.cache_clear()
    assert precision.cpu_has_native_bf16() is (flags if native is None else native)
    precision.cpu_has_native_bf16.cache_clear()


def test_auto_autocast_is_off_and_auto_rollout_copy_is_float32_without_native_bf16(
    monkeypatch, tmp_path
):
    from algorithms.rollout import RolloutEngine
    from algorithms.scoring import autocast

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    policy = load_policy("tiny-random", device="cpu")
    with autocast(policy.model, "auto"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast(policy.model, "bfloat16"):
        assert torch.is_autocast_enabled("cpu")
    engine = RolloutEngine(policy, {"max_turns": 1}, rollout_dtype="auto")
    assert engine.rollout_dtype is None
    cfg = config("grpo", tmp_path, **{"trainer.autocast_dtype": "auto"})
    assert cfg.trainer.autocast_dtype == "auto"


# --------------------------------------------------------------------------------------
# The compact template and the per-document cap
# --------------------------------------------------------------------------------------


def test_compact_template_states_the_protocol_without_the_worked_example():
    compact, full = get_template("research-compact"), get_template("research")
    prompt = compact.render_text("Who founded Drellow Works?")
    assert compact.example is None and prompt.endswith(
        "Question: Who founded Drellow Works?\n<think>"
    )
    for tag in ("<think>", "<search>", "<result>", "<answer>", "\\boxed{...}"):
        assert tag in prompt
    assert len(prompt) * 4 < len(full.render_text("Who founded Drellow Works?"))


def _hit(text: str, title: str = "T") -> SearchHit:
    return SearchHit(Document(id=title, contents=f"{title}\n{text}"), 1.0)


def test_doc_cap_keeps_the_first_words_and_marks_the_cut():
    template = get_template("research")
    long, short = _hit("one two  three\nfour five", "A"), _hit(" six seven ", "B")
    observation = template.format_documents([long, short], max_words=3)
    assert observation == (
        "\n<result>\nDoc 1 (Title: A) one two three ...\nDoc 2 (Title: B) six seven\n</result>\n"
    )
    # Exactly at the cap: nothing cut, no marker; no cap: the text as it was.
    assert "three four five\n" in template.format_documents([_hit("three four five")], 3)
    assert "one two  three\nfour five" in template.format_documents([long])


class LongDocs:
    def search(self, queries, k):
        words = " ".join(f"w{i}" for i in range(50))
        return [[_hit(words, f"D{j}") for j in range(k)] for _ in queries]


def test_env_caps_documents_and_the_fingerprint_records_the_cap(small_env):
    samples = small_env.samples
    capped = MultiHopSearchEnv(dataset=samples, retriever=LongDocs(), top_k=2, max_doc_words=5)
    capped.reset(options={"index": 0})
    observation, *_ = capped.step("<think>x</think><search>q</search>")
    assert observation.count("w0 w1 w2 w3 w4 ...") == 2 and "w5" not in observation
    whole = MultiHopSearchEnv(dataset=samples, retriever=LongDocs(), top_k=2)
    whole.reset(options={"index": 0})
    assert "w49" in whole.step("<think>x</think><search>q</search>")[0]
    # A run without a cap fingerprints as before the rule existed; a cap is a difference.
    assert "max_doc_words" not in fingerprint(whole)["rules"]
    assert differing_fields(fingerprint(whole), fingerprint(capped)) == ["rules.max_doc_words"]


@pytest.mark.parametrize("bad", [0, -1, 2.5, "5", True])
def test_a_bad_doc_cap_is_refused_with_what_to_pass(small_env, bad):
    with pytest.raises(ValueError, match="max_doc_words must be an integer >= 1 or None"):
        MultiHopSearchEnv(dataset=small_env.samples, retriever=LongDocs(), max_doc_words=bad)


def test_config_checks_the_new_settings_before_any_work():
    with pytest.raises(ValueError, match=r"env\.max_doc_words must be >= 1"):
        TrainConfig().with_overrides({"env.max_doc_words": 0}).validate()
    with pytest.raises(ValueError, match=r"trainer\.train_layers must be >= 1"):
        TrainConfig().with_overrides({"trainer.train_layers": 0}).validate()
    with pytest.raises(ValueError, match="set one of them to null"):
        TrainConfig().with_overrides({"trainer.train_layers": 2, "model.lora": {"r": 4}}).validate()
    assert (
        TrainConfig().with_overrides({"env.max_doc_words": 64}).env.to_env_kwargs()["max_doc_words"]
        == 64
    )


# --------------------------------------------------------------------------------------
# trainer.train_layers
# --------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_train_top_layers_trains_the_top_block_and_final_norm_and_stops_backward():
    policy = load_policy("tiny-random", device="cpu")  # 2 blocks, LM head tied
    model = policy.model
    count = train_top_layers(model, 1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("model.layers.1.", "model.norm.")) for n in trainable)
    assert count == sum(p.numel() for n, p in model.named_parameters() if n in trainable)
    reached = []
    model.model.layers[0].register_full_backward_hook(lambda *a: reached.append(0))
    model.model.layers[1].register_full_backward_hook(lambda *a: reached.append(1))
    model(torch.tensor([[5, 6, 7, 8]])).logits.sum().backward()
    assert reached == [1]  # autograd never entered the frozen lower block
    assert model.model.layers[0].self_attn.q_proj.weight.grad is None
    assert model.model.layers[1].self_attn.q_proj.weight.grad is not None


@pytest.mark.parametrize("n", [0, 3, -1])
def test_train_layers_outside_the_model_says_the_valid_range(n):
    policy = load_policy("tiny-random", device="cpu")
    with pytest.raises(ValueError, match="from 1 to 2"):
        train_top_layers(policy.model, n)


def test_train_layers_refuses_a_lora_model():
    policy = load_policy("tiny-random", device="cpu", lora=LoraSettings(r=4))
    with pytest.raises(ValueError, match="LoRA"):
        train_top_layers(policy.model, 1)


def test_train_layers_checkpoint_saves_frozen_weights_and_resumes_exactly(tmp_path):
    cfg = config("grpo", tmp_path, **{"trainer.train_layers": 1, "optim.warmup_steps": 2})
    policy = load_policy("tiny-random", device="cpu")
    lower = policy.model.model.layers[0].mlp.up_proj.weight.detach().clone()
    algo = GRPO(policy, None, cfg)
    algo.learn_from(two_groups())
    assert torch.equal(policy.model.model.layers[0].mlp.up_proj.weight, lower)  # frozen
    algo.save(tmp_path / "ckpt")

    loaded = GRPO.load(tmp_path / "ckpt")
    _assert_same_weights(algo, loaded)  # the frozen block was saved and restored too
    _assert_same_optimizer(algo, loaded)
    frozen = [n for n, p in loaded.policy.model.named_parameters() if not p.requires_grad]
    assert any(n.startswith("model.layers.0.") for n in frozen)
    algo.learn_from(two_groups())
    loaded.learn_from(two_groups())
    _assert_same_weights(algo, loaded)


# --------------------------------------------------------------------------------------
# All levers at once still learn
# --------------------------------------------------------------------------------------


@pytest.mark.numeric
def test_grpo_with_the_cheap_rl_levers_still_learns(tmp_path, monkeypatch):
    """test_trainer's spaces task with every lever on (benchmarks.learning_margin.LEVERS):
    the compact template, a doc cap, only the top block training (the tied head frozen),
    precision "auto", and groups of 8 sharing one prompt each. "auto" is pinned to what it
    resolves to on a CPU without bf16 (float32), so every machine runs the same recipe; the
    mean gain over three seeds must clear the learning tests' THRESHOLD."""
    import algorithms.precision

    monkeypatch.setattr(algorithms.precision, "cpu_has_native_bf16", lambda: False)
    gain, runs = mean_gain("grpo-levers", tmp_path)
    assert gain > THRESHOLD, runs


def test_the_cheap_rl_config_holds_the_levers_and_validates():
    from pathlib import Path

    path = Path(__file__).parents[1] / "configs" / "demo-cheap-rl.yaml"
    cheap = TrainConfig.from_yaml(path).validate(check_device=False)
    assert (cheap.env.template, cheap.env.top_k, cheap.trainer.train_layers) == (
        "research-compact",
        2,
        6,
    )
    assert (cheap.rollout.questions_per_step, cheap.rollout.group_size) == (2, 4)
    assert cheap.trainer.micro_batch_size >= cheap.rollout.group_size  # one prompt per group
    assert (cheap.rollout.rollout_dtype, cheap.trainer.autocast_dtype) == ("auto", "auto")
