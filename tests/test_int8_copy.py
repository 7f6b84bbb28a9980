"""The 8-bit decoding copy: int8 linears, the copy a rollout decodes with, its settings."""

import pytest
import torch
from world import SAMPLES, KeywordRetriever

from algorithms.rollout import RolloutEngine, Sampling, generate, rollout_copy
from algorithms.rollout.int8_copy import Int8Linear, fbgemm_available

# Kernel-dependent tolerances (fbgemm's int8 kernels differ by instruction set): `make
# test` runs them again under the AVX2 limits.
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.numeric]
KERNELS = [False, *([True] if fbgemm_available() else [])]  # float32 reference, then fbgemm


@pytest.mark.parametrize("use_fbgemm", KERNELS, ids=lambda f: "fbgemm" if f else "reference")
def test_int8_linear_matches_hand_quantized_product(use_fbgemm):
    # Weight rows [1, -2, 0.5, 0] and [0.1, 0.2, 0.3, 0.4] quantize per row to multiples of
    # 2/127 and 0.4/127; the input row [1, 1, 1, 1] to 1/127 steps exactly: 1 * 127. The
    # float products are 1 - 2 + 0.5 = -0.5 and 1.0 (+ bias 0.25, -1).
    linear = torch.nn.Linear(4, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.1, 0.2, 0.3, 0.4]]))
        linear.bias.copy_(torch.tensor([0.25, -1.0]))
    q = Int8Linear(linear, use_fbgemm=use_fbgemm)
    assert q.weight_int8.tolist() == [[64, -127, 32, 0], [32, 64, 95, 127]]
    assert q.weight_scale.tolist() == pytest.approx([2 / 127, 0.4 / 127])
    # Hand-computed: (64 - 127 + 32) * 2/127 + 0.25 and (32 + 64 + 95 + 127) * 0.4/127 - 1.
    expected = [-31 * 2 / 127 + 0.25, 318 * 0.4 / 127 - 1.0]
    out = q(torch.ones(1, 4))
    assert out.shape == (1, 2) and out.dtype == torch.float32
    assert out[0].tolist() == pytest.approx(expected, abs=2e-3)


@pytest.mark.parametrize("use_fbgemm", KERNELS, ids=lambda f: "fbgemm" if f else "reference")
def test_each_row_gets_its_own_activation_scale(use_fbgemm):
    # One row 1000x larger than the other: with one scale for the whole tensor, the small
    # row would round to a few levels; per-token scales keep it within 8-bit error.
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32, bias=False)
    x = torch.randn(2, 64)
    x[0] *= 1000.0
    exact = linear(x).detach()
    out = Int8Linear(linear, use_fbgemm=use_fbgemm)(x)
    for row in range(2):
        error = (out[row] - exact[row]).norm() / exact[row].norm()
        assert error < 0.03, (row, float(error))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_cuda_path_multiplies_in_int8_like_the_reference():
    # On CUDA the products go through torch._int_mm (int32 sums): the same integers as the
    # float32 reference on CPU, so the outputs agree to float rounding.
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    x = torch.randn(5, 64)
    on_cpu = Int8Linear(linear, use_fbgemm=False)(x)
    on_gpu = Int8Linear(linear.cuda(), use_fbgemm=False)(x.cuda())
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-4, rtol=0)


@pytest.mark.parametrize("fused", [True, False], ids=["fused-forward", "transformers-forward"])
def test_int8_copy_replaces_every_linear_and_decodes_close_to_float32(tiny, fused):
    copy = rollout_copy(tiny.model, torch.int8, fused=fused)
    kinds = {type(m).__name__ for m in copy.modules()}
    assert "Int8Linear" in kinds and "Linear" not in kinds and "PackedLinear" not in kinds
    prompts = [[5, 6, 7, 8], [9, 10, 11]]
    ours = generate(copy, prompts, max_new_tokens=6, eos_token_ids=(), greedy=True)
    ref = generate(tiny.model, prompts, max_new_tokens=6, eos_token_ids=(), greedy=True)
    assert [len(t) for t in ours.token_ids] == [6, 6]
    # Greedy over a 49,152-token vocabulary: a broken copy (a scale lost, rows mixed up)
    # would not pick the float32 model's first tokens; this one does, with log-probs near
    # float32's (8-bit rounding of a random model moves them by a few tenths of a nat).
    for row in range(2):
        assert list(ours.token_ids[row][:3]) == list(ref.token_ids[row][:3])
        assert ours.logprobs[row][0] == pytest.approx(ref.logprobs[row][0], abs=0.5)
    # The policy itself is untouched.
    assert not any(isinstance(m, Int8Linear) for m in tiny.model.modules())


def test_the_engine_requantizes_after_each_update(tiny):
    # The copy is made per collect from the policy's current weights, as the bf16 one is.
    policy = tiny
    kwargs = {"dataset": SAMPLES, "retriever": KeywordRetriever(), "max_turns": 1}
    engine = RolloutEngine(policy, kwargs, rollout_dtype="int8")
    s = Sampling(greedy=True, max_turn_tokens=6, max_total_tokens=64)
    before = [t.response_ids for t in engine.collect([0, 1], sampling=s)]
    saved = {k: v.clone() for k, v in policy.model.state_dict().items()}
    try:
        torch.manual_seed(1)
        with torch.no_grad():  # an "update": new weights everywhere
            for p in policy.model.parameters():
                p.add_(torch.randn_like(p) * p.std().clamp(min=1e-3))
        after = [t.response_ids for t in engine.collect([0, 1], sampling=s)]
        fresh = RolloutEngine(policy, kwargs, rollout_dtype="int8")
        assert after == [t.response_ids for t in fresh.collect([0, 1], sampling=s)]
        assert after != before
    finally:
        policy.model.load_state_dict(saved)


def test_int8_copy_of_a_model_without_linears_is_refused():
    with pytest.raises(ValueError, match=r"no nn\.Linear layers to quantize"):
        rollout_copy(torch.nn.Sequential(torch.nn.ReLU()), torch.int8, fused=False)


def test_an_unknown_rollout_dtype_is_refused_with_the_accepted_names():
    from algorithms.config import TrainConfig

    with pytest.raises(ValueError, match=r"rollout.rollout_dtype must be null or one of .*int8"):
        TrainConfig(algo="grpo").with_overrides({"rollout.rollout_dtype": "int4"}).validate()
    TrainConfig(algo="grpo").with_overrides({"rollout.rollout_dtype": "int8"}).validate()
    with pytest.raises(ValueError, match="rollout_dtype must be null or one of"):
        RolloutEngine(_Fake(), {"dataset": SAMPLES, "retriever": KeywordRetriever()},
                      rollout_dtype="int4")  # fmt: skip


class _Fake:
    tokenizer = None
    model = torch.nn.Linear(1, 1)


def test_the_planner_counts_the_int8_copy_at_one_byte_per_linear_weight():
    # SmolLM2-135M: 134,515,008 weights, of which the tied 49,152 x 576 embedding is
    # 28,311,552. The int8 copy keeps that embedding in float32 (4 bytes each) and holds its
    # own int8 LM head (1 byte each); every other weight is one byte: 134,515,008 +
    # 3 * 28,311,552 + 28,311,552 = 247,761,216 bytes. Its KV cache stays float32.
    from algorithms.config import TrainConfig
    from algorithms.planner import plan

    def items(dtype):
        config = TrainConfig(algo="grpo").with_overrides({"rollout.rollout_dtype": dtype})
        return plan(config, model="smollm2-135m", device="cpu").items

    int8, fp32 = items("int8"), items(None)
    assert int8["decoding copy (rollout_dtype)"] == 247_761_216
    assert fp32["decoding copy (rollout_dtype)"] == 0
    assert int8["rollout KV cache"] == fp32["rollout KV cache"]
