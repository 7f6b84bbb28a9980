"""The fused Llama-family forward of rollout copies against the transformers model it was
built from (tiny random models, fp32, so differences are summation order only)."""

from __future__ import annotations

import pytest
import torch

from algorithms.policy import LoraSettings, load_policy
from algorithms.rollout import DecodeState, PackedLinear, Sampling, generate, rollout_copy
from algorithms.rollout.fused_llama import FusedLlama, unsupported_reason

# Verdicts depend on float rounding: `make test` runs them again with AVX2 kernels.
pytestmark = pytest.mark.numeric


def tiny_model(family: str, **overrides):
    """A 2-layer random model of a family, hidden 64, peaked outputs (wide init)."""
    import transformers

    config_class, model_class = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
    }[family]
    settings = dict(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.3,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    settings.update(overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = model_class(config_class(**settings)).eval()
        for name, param in model.named_parameters():  # biases start at 0: make them count
            if name.endswith("bias"):
                param.data.normal_(0, 0.5)
    return model


def multi_turn(model, prompts, observations):
    """Greedy turn 1 with rows ending early (EOS), observations appended (one longer than the
    spare cache room), greedy turn 2; returns every sequence's (tokens, generated, logprobs)."""
    state = DecodeState(model, prompts)
    greedy = Sampling(greedy=True)
    state.decode(max_new_tokens=8, sampling=greedy, eos_token_ids=[17, 45])
    state.append(observations)
    state.decode(max_new_tokens=6, sampling=greedy, eos_token_ids=())
    return [state.trajectory(s) for s in range(len(prompts))]


def assert_same_trajectories(ours, ref):
    for (tokens, generated, logprobs), (ref_tokens, ref_generated, ref_logprobs) in zip(
        ours, ref, strict=True
    ):
        assert tokens == ref_tokens
        assert generated == ref_generated
        assert logprobs == pytest.approx(ref_logprobs, abs=1e-4)


def test_rollout_copy_of_a_llama_is_fused_and_decodes_like_the_model(tiny, prompts):
    copy = rollout_copy(tiny.model, torch.float32)
    assert isinstance(copy, FusedLlama)
    if torch.backends.mkldnn.is_available():
        assert any(isinstance(m, PackedLinear) for m in copy.modules())
    long_observation = tiny.tokenizer.encode("<result> " + "word " * 90 + "</result>")
    observations = {0: long_observation, 2: tiny.tokenizer.encode(" ok"), 3: [5, 6, 7, 8]}
    assert_same_trajectories(
        multi_turn(copy, prompts, observations), multi_turn(tiny.model, prompts, observations)
    )


def test_sampled_tokens_and_logprobs_match_under_the_same_seed(tiny, prompts):
    copy = rollout_copy(tiny.model, torch.float32)
    runs = []
    for model in (copy, tiny.model):
        g = torch.Generator().manual_seed(3)
        runs.append(generate(model, prompts, max_new_tokens=12, eos_token_ids=(), generator=g))
    assert runs[0].token_ids == runs[1].token_ids
    for a, b in zip(runs[0].logprobs, runs[1].logprobs):
        assert a == pytest.approx(b, abs=1e-4)


@pytest.mark.parametrize(
    "family, overrides",
    [
        ("qwen2", {}),  # biases on q/k/v only
        ("llama", {"attention_bias": True, "mlp_bias": True}),  # biases everywhere
        ("llama", {"num_key_value_heads": 4}),  # no grouping
        ("llama", {"num_key_value_heads": 1, "tie_word_embeddings": False}),  # one kv head
        ("mistral", {"sliding_window": None, "head_dim": 32}),  # head_dim != hidden / heads
    ],
)
def test_other_llama_family_layouts_decode_like_their_model(family, overrides):
    model = tiny_model(family, **overrides)
    assert unsupported_reason(model) is None
    copy = rollout_copy(model, torch.float32)
    assert isinstance(copy, FusedLlama)
    prompts = [[5, 17, 99, 3, 8, 120, 7], [44, 45], [60, 61, 62, 63]]
    observations = {0: [9, 10, 11], 1: list(range(100, 190))}
    assert_same_trajectories(
        multi_turn(copy, prompts, observations), multi_turn(model, prompts, observations)
    )


def test_merged_lora_weights_are_what_the_fused_copy_runs():
    policy = load_policy("tiny-random", device="cpu", lora=LoraSettings(r=4))
    with torch.no_grad():
        for name, param in policy.model.named_parameters():
            if "lora_B" in name:  # B starts at 0, which would make the adapter a no-op
                param.normal_(0, 0.5)
    policy.model.eval()
    copy = rollout_copy(policy.model, torch.float32)
    assert isinstance(copy, FusedLlama)
    prompts = [[5, 17, 99, 3], [44, 45, 46]]
    ours = generate(copy, prompts, max_new_tokens=6, greedy=True, eos_token_ids=())
    ref = generate(policy.model, prompts, max_new_tokens=6, greedy=True, eos_token_ids=())
    assert ours.token_ids == ref.token_ids
    for a, b in zip(ours.logprobs, ref.logprobs):
        assert a == pytest.approx(b, abs=1e-4)


def test_architectures_it_does_not_cover_keep_their_own_forward():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    gemma = Gemma3ForCausalLM(
        Gemma3TextConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
        )
    )
    assert "gemma3" in unsupported_reason(gemma)
    assert isinstance(rollout_copy(gemma, torch.float32), Gemma3ForCausalLM)
    assert "gelu" in unsupported_reason(tiny_model("llama", hidden_act="gelu"))
    assert "sliding" in unsupported_reason(tiny_model("mistral", sliding_window=8))
    # And the fused path can be declined even where it applies.
    assert not isinstance(rollout_copy(tiny_model("llama"), torch.float32, fused=False), FusedLlama)


def test_bf16_fused_copy_stays_close_to_the_fp32_model(tiny, prompts):
    copy = rollout_copy(tiny.model, torch.bfloat16)
    assert isinstance(copy, FusedLlama)
    ours = generate(copy, prompts, max_new_tokens=1, greedy=True, eos_token_ids=())
    ref = generate(tiny.model, prompts, max_new_tokens=1, greedy=True, eos_token_ids=())
    assert ours.token_ids == ref.token_ids
    for a, b in zip(ours.logprobs, ref.logprobs):
        assert a == pytest.approx(b, abs=0.1)


def test_a_two_dimensional_mask_is_refused(tiny):
    copy = rollout_copy(tiny.model, torch.float32)
    with pytest.raises(ValueError, match="4-D"):
        copy(
            input_ids=torch.tensor([[5]]),
            attention_mask=torch.ones(1, 1),
            position_ids=torch.tensor([[0]]),
            past_key_values=None,
        )
