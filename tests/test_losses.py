"""Losses against numbers worked out by hand (arithmetic in the comments), plus the
guarantee the whole project leans on: masked tokens get exactly zero gradient."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")  # algorithms need the `train` extra

from algorithms.objectives.losses import (  # noqa: E402
    aggregate_loss,
    clipped_policy_loss,
    clipped_value_loss,
    kl_penalty,
)
from algorithms.objectives.ops import entropy_from_logits, token_logprobs  # noqa: E402

# Verdicts depend on float rounding: `make test` runs them again with AVX2 kernels.
pytestmark = pytest.mark.numeric

MODES = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
LN2 = math.log(2)


def t(values):
    return torch.tensor(values, dtype=torch.float32)


def close(actual, expected, atol=1e-5):
    torch.testing.assert_close(actual, t(expected), atol=atol, rtol=0)


# ---------------------------------------------------------------- aggregation

LOSS_2x3 = t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK_2x3 = t([[1, 1, 0], [1, 0, 0]])


def test_aggregate_token_mean():
    close(aggregate_loss(LOSS_2x3, MASK_2x3, "token-mean"), (1 + 2 + 4) / 3)


def test_aggregate_seq_mean_token_mean():
    close(aggregate_loss(LOSS_2x3, MASK_2x3, "seq-mean-token-mean"), ((1 + 2) / 2 + 4 / 1) / 2)


def test_aggregate_seq_mean_token_sum_norm():
    close(
        aggregate_loss(LOSS_2x3, MASK_2x3, "seq-mean-token-sum-norm", norm_len=4),
        ((1 + 2) / 4 + 4 / 4) / 2,
    )
    with pytest.raises(ValueError):
        aggregate_loss(LOSS_2x3, MASK_2x3, "seq-mean-token-sum-norm")


def test_aggregate_unknown_mode():
    with pytest.raises(ValueError):
        aggregate_loss(LOSS_2x3, MASK_2x3, "sum")


def test_aggregate_empty_row_counts_as_zero_loss():
    mask = t([[1, 1, 0], [0, 0, 0]])
    close(aggregate_loss(LOSS_2x3, mask, "seq-mean-token-mean"), (1.5 + 0) / 2)
    close(aggregate_loss(LOSS_2x3, torch.zeros(2, 3), "token-mean"), 0.0)


@pytest.mark.parametrize("mode", MODES)
def test_aggregate_micro_batches_sum_to_full_batch(mode):
    torch.manual_seed(0)
    loss, mask = torch.randn(6, 5), (torch.rand(6, 5) > 0.3).float()
    full = aggregate_loss(loss, mask, mode, norm_len=5)
    denominator = mask.sum() if mode == "token-mean" else 6
    parts = [
        aggregate_loss(loss[rows], mask[rows], mode, norm_len=5, denominator=denominator)
        for rows in (slice(0, 2), slice(2, 6))
    ]
    close(sum(parts), full.item())


# ---------------------------------------------------------------- clipped policy loss

# ratios 1, 1.5, 0.5, 1.5, 0.7; the fifth token is an observation
RATIOS = t([[1.0, 1.5, 0.5, 1.5, 0.7]])
ADV = t([[1.0, 1.0, -1.0, -1.0, 2.0]])
MASK_1x5 = t([[1, 1, 1, 1, 0]])


def _policy_inputs():
    old = t([[-1.0, -2.0, -0.5, -1.2, -3.0]])
    logprobs = (old + RATIOS.log()).requires_grad_()
    return logprobs, old


def test_clipped_policy_loss_by_hand():
    logprobs, old = _policy_inputs()
    loss, stats = clipped_policy_loss(logprobs, old, ADV, MASK_1x5, clip_low=0.2, clip_high=0.28)
    # range [0.8, 1.28]; per token max(-A*r, -A*clip(r)):
    #   t0 r=1,   A=+1: max(-1,   -1)    = -1    (not clipped)
    #   t1 r=1.5, A=+1: max(-1.5, -1.28) = -1.28 (clipped: gradient cut)
    #   t2 r=0.5, A=-1: max(0.5,  0.8)   = 0.8   (clipped)
    #   t3 r=1.5, A=-1: max(1.5,  1.28)  = 1.5   (out of range but not clipped: the
    #                                              unclipped term already pulls r back)
    # token-mean = (-1 - 1.28 + 0.8 + 1.5) / 4 = 0.005
    close(loss, 0.005)
    close(stats["clipfrac"], 2 / 4)
    close(stats["ratio_mean"], (1 + 1.5 + 0.5 + 1.5) / 4)
    # k3: (r - 1) - ln r = 0, 0.5 - ln 1.5, -0.5 + ln 2, 0.5 - ln 1.5
    close(stats["approx_kl"], (2 * (0.5 - math.log(1.5)) + (LN2 - 0.5)) / 4)
    close(stats["old_approx_kl"], (-2 * math.log(1.5) + LN2) / 4)
    # gradient d/d logp of (-A * r) is -A * r where unclipped, 0 where clipped, over 4 tokens:
    loss.backward()
    close(logprobs.grad, [[-1 / 4, 0, 0, 1.5 / 4, 0]])


def test_clipped_policy_loss_symmetric_default():
    logprobs, old = _policy_inputs()
    loss, _ = clipped_policy_loss(logprobs, old, ADV, MASK_1x5, clip_low=0.2)
    # t1 now clips at 1.2: (-1 - 1.2 + 0.8 + 1.5) / 4 = 0.025
    close(loss, 0.025)


def test_policy_loss_on_policy_is_vanilla_policy_gradient():
    # old = logprobs.detach(): ratio 1, loss = -mean(A), gradient = -A / n
    logprobs = t([[-1.0, -2.0, -0.5]]).requires_grad_()
    adv, mask = t([[0.5, -2.0, 1.0]]), t([[1, 1, 1]])
    loss, stats = clipped_policy_loss(logprobs, logprobs.detach(), adv, mask)
    close(loss, -(0.5 - 2.0 + 1.0) / 3)
    close(stats["clipfrac"], 0.0)
    close(stats["approx_kl"], 0.0)
    loss.backward()
    close(logprobs.grad, [[-0.5 / 3, 2.0 / 3, -1.0 / 3]])


def test_policy_loss_survives_absurd_ratios():
    # log ratio 100 would overflow exp; it is clamped to 20 and the loss stays finite
    logprobs = t([[0.0, 0.0]]).requires_grad_()
    loss, _ = clipped_policy_loss(logprobs, t([[-100.0, 100.0]]), t([[-1.0, 1.0]]), t([[1, 1]]))
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logprobs.grad).all()


# ---------------------------------------------------------------- KL to reference


def test_kl_estimators_by_hand():
    logprobs = t([[math.log(0.5), math.log(0.25)]])
    ref = t([[math.log(0.25), math.log(0.5)]])
    # log_r = ref - logp = (-ln 2, +ln 2)
    close(kl_penalty(logprobs, ref, "k1"), [[LN2, -LN2]])
    close(kl_penalty(logprobs, ref, "k2"), [[0.5 * LN2**2, 0.5 * LN2**2]])
    # k3 = e^log_r - log_r - 1 = (0.5 + ln2 - 1, 2 - ln2 - 1)
    close(kl_penalty(logprobs, ref, "k3"), [[LN2 - 0.5, 1 - LN2]])
    close(kl_penalty(logprobs, ref, "low_var_kl"), kl_penalty(logprobs, ref, "k3").tolist())
    with pytest.raises(ValueError):
        kl_penalty(logprobs, ref, "k4")


def test_k3_gradient_by_hand():
    # d/d logp [e^(ref - logp) - (ref - logp) - 1] = 1 - p_ref / p = 1 - 0.25 / 0.5 = 0.5
    logprobs = t([[math.log(0.5)]]).requires_grad_()
    kl_penalty(logprobs, t([[math.log(0.25)]]), "k3").sum().backward()
    close(logprobs.grad, [[0.5]])


def test_k3_is_clamped_and_nonnegative():
    logprobs = t([[-50.0, 0.0, -1.0]])
    ref = t([[0.0, -50.0, -1.0]])
    # log_r = ref - logp = +50 -> clamped to 20 -> e^20 - 21 -> clamped to 10
    # log_r = -50 -> clamped to -20 -> e^-20 + 20 - 1 = 19 -> clamped to 10;  equal -> 0
    close(kl_penalty(logprobs, ref, "k3"), [[10.0, 10.0, 0.0]], atol=1e-4)
    torch.manual_seed(0)
    a, b = torch.randn(100), torch.randn(100)
    assert (kl_penalty(a, b, "k3") >= 0).all()


# ---------------------------------------------------------------- value loss

VALUES = t([[1.5, 0.2, 1.5, 99.0]])
OLD_VALUES = t([[1.0, 0.0, 2.0, -99.0]])
RETURNS = t([[1.0, 1.0, 1.0, 0.0]])
MASK_1x4 = t([[1, 1, 1, 0]])


def test_clipped_value_loss_by_hand():
    # clip 0.2 around old values:
    #   t0: (1.5-1)^2 = 0.25; clipped v 1.2 -> 0.04;  max 0.25
    #   t1: (0.2-1)^2 = 0.64; clipped v 0.2 -> 0.64;  max 0.64 (tie: not counted as clipped)
    #   t2: (1.5-1)^2 = 0.25; clipped v 1.8 -> 0.64;  max 0.64 (clipped)
    # v_loss = 0.5 * (0.25 + 0.64 + 0.64) / 3 = 0.255
    v_loss, vf_clipfrac = clipped_value_loss(VALUES, OLD_VALUES, RETURNS, MASK_1x4, 0.2)
    close(v_loss, 0.255)
    close(vf_clipfrac, 1 / 3)


def test_value_loss_without_clipping():
    v_loss, vf_clipfrac = clipped_value_loss(VALUES, OLD_VALUES, RETURNS, MASK_1x4, None)
    close(v_loss, 0.5 * (0.25 + 0.64 + 0.25) / 3)
    close(vf_clipfrac, 0.0)


# ---------------------------------------------------------------- log-probs and entropy

LOGITS_HALF_QUARTER = t([[[math.log(0.5), math.log(0.25), math.log(0.25)]]])  # (1, 1, 3)


def test_token_logprobs_by_hand():
    ids = torch.tensor([[1]])
    close(token_logprobs(LOGITS_HALF_QUARTER, ids), [[math.log(0.25)]])
    close(token_logprobs(LOGITS_HALF_QUARTER + 3.0, ids), [[math.log(0.25)]])  # shift-invariant
    # temperature 2: logits (0, 2 ln 2) -> (0, ln 2) -> probs (1/3, 2/3)
    close(token_logprobs(t([[[0.0, 2 * LN2]]]), torch.tensor([[0]]), 2.0), [[math.log(1 / 3)]])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk_size", [None, 3])
def test_token_logprobs_matches_log_softmax(dtype, chunk_size):
    torch.manual_seed(0)
    logits = (torch.randn(2, 5, 11) * 3).to(dtype)
    ids = torch.randint(0, 11, (2, 5))
    expected = torch.log_softmax(logits.float() / 0.7, -1).gather(-1, ids.unsqueeze(-1))[..., 0]
    got = token_logprobs(logits, ids, temperature=0.7, chunk_size=chunk_size)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_token_logprobs_gradient_matches_log_softmax():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7, requires_grad=True)
    ids = torch.randint(0, 7, (2, 4))
    token_logprobs(logits, ids, chunk_size=3).sum().backward()
    ours = logits.grad.clone()
    logits.grad = None
    torch.log_softmax(logits, -1).gather(-1, ids.unsqueeze(-1)).sum().backward()
    torch.testing.assert_close(ours, logits.grad)


def test_entropy_by_hand():
    # H(0.5, 0.25, 0.25) = 0.5 ln 2 + 2 * 0.25 ln 4 = 1.5 ln 2 ; uniform over 4 = ln 4
    close(entropy_from_logits(LOGITS_HALF_QUARTER), [[1.5 * LN2]])
    close(entropy_from_logits(torch.zeros(1, 2, 4)), [[2 * LN2, 2 * LN2]])


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_entropy_matches_categorical(chunk_size):
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 13) * 2
    expected = torch.distributions.Categorical(logits=logits / 1.3).entropy()
    got = entropy_from_logits(logits, temperature=1.3, chunk_size=chunk_size)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- masked tokens: zero gradient

# 2 sequences x 6 tokens: gen gen obs obs gen pad | gen gen gen gen pad pad
GRAD_MASK = t([[1, 1, 0, 0, 1, 0], [1, 1, 1, 1, 0, 0]])
GARBAGE = t([[0, 0, float("inf"), float("nan"), 0, -float("inf")], [0, 0, 0, 0, float("nan"), 1e9]])


def _assert_grad_only_on_generated(grad):
    assert torch.isfinite(grad).all()
    assert (grad[GRAD_MASK == 0] == 0).all(), "a masked token received gradient"
    assert (grad[GRAD_MASK == 1] != 0).all(), "a generated token received no gradient"


def _leaf_logprobs():
    torch.manual_seed(0)
    return (-torch.rand(2, 6) - 0.1).requires_grad_()


@pytest.mark.parametrize("mode", MODES)
def test_masked_tokens_get_zero_gradient_policy_loss(mode):
    logprobs = _leaf_logprobs()
    # on generated tokens: ratio 1, nonzero advantages; on masked tokens: inf/NaN garbage
    old = logprobs.detach() + GARBAGE
    advantages = t([[1.0, -2.0, 0.0, 0.0, 0.5, 0.0], [0.3, 0.3, -1.0, 2.0, 0.0, 0.0]]) + GARBAGE
    loss, stats = clipped_policy_loss(
        logprobs, old, advantages, GRAD_MASK, agg_mode=mode, norm_len=8
    )
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in stats.values())
    loss.backward()
    _assert_grad_only_on_generated(logprobs.grad)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_masked_tokens_get_zero_gradient_kl_loss(mode, estimator):
    logprobs = _leaf_logprobs()
    ref = logprobs.detach() - 0.3 + GARBAGE
    kl = kl_penalty(logprobs, ref, estimator, mask=GRAD_MASK)
    assert (kl[GRAD_MASK == 0] == 0).all()
    loss = aggregate_loss(kl, GRAD_MASK, mode, norm_len=8)
    assert torch.isfinite(loss)
    loss.backward()
    _assert_grad_only_on_generated(logprobs.grad)


@pytest.mark.parametrize("mode", MODES)
def test_masked_tokens_get_zero_gradient_value_loss(mode):
    values = _leaf_logprobs()
    returns = torch.ones(2, 6) + GARBAGE
    v_loss, _ = clipped_value_loss(
        values, values.detach() + GARBAGE, returns, GRAD_MASK, 0.2, mode, 8
    )
    assert torch.isfinite(v_loss)
    v_loss.backward()
    _assert_grad_only_on_generated(values.grad)


def test_value_clipfrac_counts_no_unclipped_token():
    # Each value is within 0.2 of its old value, so nothing is clipped. The old form
    # old + clamp(v - old, -c, c) rounds back to a float next to v for these numbers, and
    # its squared error then came out larger: each token was counted as clipped.
    values = t([-0.03854792192578316, -0.011763528920710087, -0.030547795817255974])
    old = t([-0.21141628921031952, -0.1313048154115677, -0.14156299829483032])
    returns = t([-0.07062557339668274, -0.37496286630630493, 1.3822836875915527])
    assert bool(((values - old).abs() < 0.2).all())
    mask = torch.ones(1, 3)
    v_loss, clipfrac = clipped_value_loss(values[None], old[None], returns[None], mask, 0.2)
    assert float(clipfrac) == 0.0
    assert float(v_loss) == pytest.approx(0.5 * float(((values - returns) ** 2).mean()))


def test_token_weights_scale_each_surrogate_term():
    # ratio 1 everywhere (old = new), A = (1, -2) on two generated tokens, weights (0.5, 2):
    # per-token losses -A * w = (-0.5, 4); token-mean over 2 tokens = 1.75.
    logprobs = t([[-1.0, -2.0, -3.0]])
    mask = t([[1, 1, 0]])
    loss, _ = clipped_policy_loss(
        logprobs, logprobs, t([[1.0, -2.0, 9.0]]), mask, token_weights=t([[0.5, 2.0, 7.0]])
    )
    assert float(loss) == pytest.approx(1.75)
