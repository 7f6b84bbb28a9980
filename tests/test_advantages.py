"""Advantage estimators against numbers worked out by hand (arithmetic in the comments)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")  # algorithms need the `train` extra

from algorithms.objectives import ADVANTAGE_ESTIMATORS, AdvantageInputs, compute_advantages  # noqa: E402
from algorithms.objectives.advantages import (  # noqa: E402
    gae,
    returns_to_go,
    token_level_rewards,
)
from algorithms.objectives.ops import (  # noqa: E402
    contiguous_group_ids,
    last_generated_index,
    masked_mean,
    masked_var,
    masked_whiten,
)
from algorithms.reinforce import BASELINE_ESTIMATORS  # noqa: E402

# Verdicts depend on float rounding: `make test` runs them again with AVX2 kernels.
pytestmark = pytest.mark.numeric

gae_advantages = gae  # the bare GAE recursion, checked by hand below


def grpo_advantages(rewards, mask, group_ids, scale_by_std=True, eps=1e-6):
    """The registry's ``grpo`` estimator, as GRPO calls it."""
    inputs = AdvantageInputs(rewards, mask, group_ids)
    return compute_advantages("grpo", inputs, scale_by_std=scale_by_std, eps=eps).advantages


def reinforce_advantages(
    rewards, mask, baseline="none", group_ids=None, kl=None, kl_coef=0.0, gamma=1.0
):
    """The registry's REINFORCE estimators, chosen by baseline name as REINFORCE does
    (no group ids = every row its own group)."""
    if group_ids is None:
        group_ids = torch.arange(len(rewards))
    name = BASELINE_ESTIMATORS.get(baseline, baseline)
    inputs = AdvantageInputs(rewards, mask, group_ids, kl=kl, kl_coef=kl_coef)
    return compute_advantages(name, inputs, gamma=gamma).advantages


def t(values):
    return torch.tensor(values, dtype=torch.float32)


def close(actual, expected, atol=1e-5):
    torch.testing.assert_close(actual, t(expected), atol=atol, rtol=0)


# ---------------------------------------------------------------- masked statistics

X = t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
M = t([[1, 1, 0], [1, 0, 0]])


def test_masked_mean_whole_tensor_and_per_row():
    close(masked_mean(X, M), 7 / 3)  # (1 + 2 + 4) / 3
    close(masked_mean(X, M, dim=-1), [1.5, 4.0])  # (1 + 2) / 2, 4 / 1


def test_masked_mean_ignores_garbage_and_empty_mask_gives_zero():
    garbage = t([[1.0, float("nan"), float("inf")]])
    close(masked_mean(garbage, t([[1, 0, 0]])), 1.0)
    close(masked_mean(X, torch.zeros_like(M)), 0.0)


def test_masked_var_unbiased_and_biased():
    # values 1, 2, 4; mean 7/3; squared deviations 16/9 + 1/9 + 25/9 = 42/9
    close(masked_var(X, M), 42 / 9 / 2)
    close(masked_var(X, M, unbiased=False), 42 / 9 / 3)
    # per row: row 0 = {1, 2} -> 0.5 / 1; row 1 = {4} -> 0 (a single value has no spread)
    close(masked_var(X, M, dim=-1), [0.5, 0.0])


def test_masked_whiten_by_hand():
    # values 1, 2, 4 -> mean 7/3, unbiased var 7/3 -> (x - 7/3) / sqrt(7/3); mask 0 -> 0
    s = math.sqrt(7 / 3)
    expected = [[(1 - 7 / 3) / s, (2 - 7 / 3) / s, 0.0], [(4 - 7 / 3) / s, 0.0, 0.0]]
    close(masked_whiten(X, M), expected)
    close(masked_whiten(X, M, shift_mean=False), [[1 / s, 2 / s, 0], [4 / s, 0, 0]])


# ---------------------------------------------------------------- GRPO

# 2 groups x 3 samples; responses have 2 tokens, the second sample's last token is padding.
REWARDS = t([1.0, 0.0, 0.5, 1.0, 1.0, 1.0])
GROUPS = contiguous_group_ids(6, 3)
MASK_6x2 = t([[1, 1], [1, 0], [1, 1], [1, 1], [1, 1], [1, 1]])


def test_contiguous_group_ids():
    assert GROUPS.tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError):
        contiguous_group_ids(5, 3)


def test_grpo_by_hand():
    # group 0: rewards 1, 0, 0.5 -> mean 0.5, unbiased std sqrt((0.25 + 0.25 + 0) / 2) = 0.5
    #   -> A = (0.5, -0.5, 0) / 0.5 = (1, -1, 0)
    # group 1: all rewards equal -> A = 0 (no signal, and no NaN)
    # (eps = 1e-6 in the denominator moves these by 2e-6, inside the tolerance)
    adv = grpo_advantages(REWARDS, MASK_6x2, GROUPS)
    close(adv, [[1, 1], [-1, 0], [0, 0], [0, 0], [0, 0], [0, 0]])


def test_grpo_dr_grpo_skips_std():
    adv = grpo_advantages(REWARDS, MASK_6x2, GROUPS, scale_by_std=False)
    close(adv[:3, 0], [0.5, -0.5, 0.0])


def test_grpo_non_contiguous_groups_match_contiguous():
    perm = torch.tensor([4, 0, 2, 5, 1, 3])
    shuffled = grpo_advantages(REWARDS[perm], MASK_6x2[perm], GROUPS[perm])
    close(shuffled, grpo_advantages(REWARDS, MASK_6x2, GROUPS)[perm].tolist())
    # arbitrary (non 0..n-1) ids work too
    close(
        grpo_advantages(REWARDS, MASK_6x2, GROUPS * 17 + 3),
        grpo_advantages(REWARDS, MASK_6x2, GROUPS).tolist(),
    )


def test_grpo_singleton_group_gets_zero():
    # group 0 = (1, 0): mean 0.5, unbiased std sqrt(0.25 + 0.25) -> A = +-0.5 / sqrt(0.5)
    adv = grpo_advantages(t([1.0, 0.0, 1.0]), torch.ones(3, 1), torch.tensor([0, 0, 1]))
    close(adv[:, 0], [math.sqrt(0.5), -math.sqrt(0.5), 0.0], atol=1e-4)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-5, 5, allow_nan=False), min_size=4, max_size=4),
    st.lists(st.floats(-5, 5, allow_nan=False), min_size=4, max_size=4),
)
def test_grpo_property_zero_mean_unit_std_per_group(group_a, group_b):
    rewards = t(group_a + group_b)
    eps = 1e-6
    adv = grpo_advantages(rewards, torch.ones(8, 1), contiguous_group_ids(8, 4), eps=eps)[:, 0]
    for group, raw in ((adv[:4], rewards[:4]), (adv[4:], rewards[4:])):
        assert abs(group.sum().item()) < 1e-4
        # std(A) = std(r) / (std(r) + eps): 1 for spread rewards, 0 for identical ones
        expected = raw.std().item() / (raw.std().item() + eps)
        assert group.std().item() == pytest.approx(expected, abs=1e-3)


# ---------------------------------------------------------------- token-level rewards

MASK_MULTI = t([[1, 1, 0, 0, 1], [1, 1, 1, 0, 0]])  # gen gen obs obs gen | gen gen gen pad pad


def test_last_generated_index():
    assert last_generated_index(MASK_MULTI).tolist() == [4, 2]
    assert last_generated_index(t([[0, 0, 0]])).tolist() == [0]


def test_token_level_rewards_places_outcome_on_last_generated_token():
    close(
        token_level_rewards(t([1.0, 2.0]), MASK_MULTI),
        [[0, 0, 0, 0, 1], [0, 0, 2, 0, 0]],
    )
    # row with no generated token: the reward has nowhere to go
    close(token_level_rewards(t([5.0]), t([[0, 0]])), [[0, 0]])


def test_token_level_rewards_with_kl_penalty():
    kl = t([[0.1, 0.2, 9.0, 9.0, 0.3], [0.5, 0.0, 0.4, 9.0, 9.0]])  # 9s sit on mask-0 tokens
    # coef 0.5: row 0 -> -0.05, -0.1, 0, 0, 1 - 0.15; row 1 -> -0.25, 0, 2 - 0.2, 0, 0
    close(
        token_level_rewards(t([1.0, 2.0]), MASK_MULTI, kl, kl_coef=0.5),
        [[-0.05, -0.1, 0, 0, 0.85], [-0.25, 0, 1.8, 0, 0]],
    )


# ---------------------------------------------------------------- GAE (PPO)

MASK_1x5 = t([[1, 1, 0, 0, 1]])
VALUES_1x5 = t([[0.5, 0.6, 9.0, 9.0, 0.8]])  # 9s on observation tokens must never be read
REWARDS_1x5 = t([[0.0, 0.0, 0.0, 0.0, 1.0]])


def test_gae_gamma_lambda_one_is_outcome_minus_value():
    # gamma = lam = 1: A_t = 1 - V_t on generated tokens; returns = 1 everywhere generated
    adv, ret = gae_advantages(REWARDS_1x5, VALUES_1x5, MASK_1x5)
    close(adv, [[0.5, 0.4, 0, 0, 0.2]])
    close(ret, [[1, 1, 0, 0, 1]])


def test_gae_skips_observation_tokens_by_hand():
    # gamma 0.9, lam 0.5, steps are generated tokens 0, 1, 4 (2 and 3 are observations)
    # t=4: delta = 1 + 0.9*0 - 0.8 = 0.2                     A4 = 0.2
    # t=1: delta = 0 + 0.9*0.8 - 0.6 = 0.12 (next is t=4)     A1 = 0.12 + 0.45*0.2 = 0.21
    # t=0: delta = 0 + 0.9*0.6 - 0.5 = 0.04                   A0 = 0.04 + 0.45*0.21 = 0.1345
    adv, ret = gae_advantages(REWARDS_1x5, VALUES_1x5, MASK_1x5, gamma=0.9, lam=0.5)
    close(adv, [[0.1345, 0.21, 0, 0, 0.2]])
    close(ret, [[0.6345, 0.81, 0, 0, 1.0]])


def test_gae_trailing_padding_ends_episode():
    # gen gen gen pad pad, gamma = lam = 1, reward 2 on token 2; padding values ignored
    adv, _ = gae_advantages(t([[0, 0, 2, 0, 0]]), t([[1.0, 1.5, 0.5, 7, 7]]), t([[1, 1, 1, 0, 0]]))
    close(adv, [[1.0, 0.5, 1.5, 0, 0]])


def _plain_gae(rewards, values, gamma, lam):
    """Textbook GAE on a list of steps, no masks."""
    advantages, next_value, next_adv = [], 0.0, 0.0
    for r, v in zip(reversed(rewards), reversed(values)):
        next_adv = r + gamma * next_value - v + gamma * lam * next_adv
        next_value = v
        advantages.append(next_adv)
    return advantages[::-1]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.floats(-2, 2), st.floats(-2, 2)), min_size=1, max_size=12),
    st.floats(0.5, 1.0),
    st.floats(0.0, 1.0),
)
def test_gae_equals_plain_gae_on_compacted_sequence(steps, gamma, lam):
    mask = t([[float(m) for m, _, _ in steps]])
    rewards = t([[r for _, r, _ in steps]])
    values = t([[v for _, _, v in steps]])
    adv, _ = gae_advantages(rewards, values, mask, gamma, lam)
    kept = [i for i, (m, _, _) in enumerate(steps) if m]
    expected = _plain_gae([steps[i][1] for i in kept], [steps[i][2] for i in kept], gamma, lam)
    assert adv[0, kept].tolist() == pytest.approx(expected, abs=1e-4)
    assert all(adv[0, i].item() == 0.0 for i in range(len(steps)) if i not in kept)


def test_returns_to_go_discounts_generated_tokens_only():
    # rewards -0.1 on gen tokens, +1 at the end; gamma 0.5; observations skipped
    # t=4: 1;  t=1: -0.1 + 0.5*1 = 0.4;  t=0: -0.1 + 0.5*0.4 = 0.1
    close(returns_to_go(t([[-0.1, -0.1, 0, 0, 1.0]]), MASK_1x5, gamma=0.5), [[0.1, 0.4, 0, 0, 1]])


# ---------------------------------------------------------------- REINFORCE baselines

R6 = t([1.0, 0.0, 0.5, 1.0, 1.0, 0.0])
ONES_6x1 = torch.ones(6, 1)


def test_reinforce_no_baseline_is_reward():
    close(reinforce_advantages(R6, ONES_6x1)[:, 0], R6.tolist())


def test_reinforce_batch_mean():
    # mean = 3.5 / 6 = 7/12
    close(reinforce_advantages(R6, ONES_6x1, "batch_mean")[:, 0], [r - 7 / 12 for r in R6.tolist()])


def test_reinforce_rloo_by_hand():
    # group 0 (1, 0, 0.5): b = (0.5/2, 1.5/2, 1/2) = (0.25, 0.75, 0.5) -> A = (0.75, -0.75, 0)
    # group 1 (1, 1, 0):   b = (1/2, 1/2, 2/2) = (0.5, 0.5, 1)         -> A = (0.5, 0.5, -1)
    adv = reinforce_advantages(R6, ONES_6x1, "rloo", group_ids=GROUPS)
    close(adv[:, 0], [0.75, -0.75, 0.0, 0.5, 0.5, -1.0])
    # identity: A_i = G/(G-1) * (r_i - mean_group)
    dr_grpo = grpo_advantages(R6, ONES_6x1, GROUPS, scale_by_std=False)
    close(adv, (1.5 * dr_grpo).tolist())


def test_reinforce_rloo_needs_groups_of_two():
    with pytest.raises(ValueError):
        reinforce_advantages(R6, ONES_6x1, "rloo")
    with pytest.raises(ValueError):
        reinforce_advantages(t([1.0, 0.0, 1.0]), torch.ones(3, 1), "rloo", torch.tensor([0, 0, 1]))


def test_reinforce_unknown_baseline():
    with pytest.raises(ValueError):
        reinforce_advantages(R6, ONES_6x1, "critic")


def test_reinforce_plus_plus_by_hand():
    # two rows: gen gen obs gen | gen gen pad pad; rewards 1 and 0; k1 KL 0.2 per token, coef 0.5
    mask = t([[1, 1, 0, 1], [1, 1, 0, 0]])
    kl = torch.full((2, 4), 0.2)
    # token rewards: row 0 -> -0.1, -0.1, _, 1 - 0.1 = 0.9;   row 1 -> -0.1, -0.1 + 0
    # returns-to-go (gamma 1): row 0 -> 0.7, 0.8, _, 0.9;     row 1 -> -0.2, -0.1
    # global over 5 tokens: mean = 2.1 / 5 = 0.42
    # deviations 0.28, 0.38, 0.48, -0.62, -0.52; squares sum 0.0784 + 0.1444 + 0.2304 + 0.3844
    #   + 0.2704 = 1.108; unbiased var = 1.108 / 4 = 0.277
    s = math.sqrt(0.277)
    adv = reinforce_advantages(t([1.0, 0.0]), mask, "reinforce++", kl=kl, kl_coef=0.5)
    close(adv, [[0.28 / s, 0.38 / s, 0, 0.48 / s], [-0.62 / s, -0.52 / s, 0, 0]], atol=1e-4)


def test_reinforce_kl_without_normalization():
    # baseline none, same setup: advantages are the raw returns-to-go
    mask = t([[1, 1, 0, 1]])
    adv = reinforce_advantages(t([1.0]), mask, kl=torch.full((1, 4), 0.2), kl_coef=0.5)
    close(adv, [[0.7, 0.8, 0, 0.9]])


def test_advantages_carry_no_graph():
    values = torch.zeros(1, 5, requires_grad=True)
    adv, ret = gae_advantages(REWARDS_1x5, values, MASK_1x5)
    assert not adv.requires_grad and not ret.requires_grad


def test_registry_lists_every_estimator():
    assert set(ADVANTAGE_ESTIMATORS) >= {
        "grpo", "rloo", "reinforce", "reinforce_batch_mean", "reinforce++", "gae",
    }  # fmt: skip
    with pytest.raises(ValueError, match="unknown advantage estimator 'nope'"):
        compute_advantages("nope", AdvantageInputs(R6, ONES_6x1, GROUPS))


@pytest.mark.parametrize(
    "rewards",
    [[0.1] * 8, [0.46] * 5, [1 / 3] * 7, [0.7] * 3],
    ids=["8x0.1", "5x0.46", "7x1/3", "3x0.7"],
)
@pytest.mark.parametrize("estimator", ["grpo", "rloo"])
def test_flat_group_gets_exactly_zero(rewards, estimator):
    # A float32 mean of equal values is not always that value (8 x 0.1 sums to 0.80000001),
    # so r - mean used to leave -0.0074 (GRPO, after dividing by std + eps) on every token.
    n = len(rewards)
    inputs = AdvantageInputs(t(rewards), torch.ones(n, 3), torch.zeros(n, dtype=torch.long))
    adv = compute_advantages(estimator, inputs).advantages
    assert torch.equal(adv, torch.zeros(n, 3))


def test_gae_estimator_needs_values():
    with pytest.raises(ValueError, match="critic's values"):
        compute_advantages("gae", AdvantageInputs(R6, ONES_6x1, GROUPS))


def test_gae_estimator_whitens_the_recursion():
    values = t([[0.5, 0.25, 0.0, 0.0, 0.0]])
    inputs = AdvantageInputs(t([1.0]), MASK_1x5, torch.zeros(1, dtype=torch.long), values=values)
    raw, returns = gae(token_level_rewards(t([1.0]), MASK_1x5), values, MASK_1x5)
    out = compute_advantages("gae", inputs, whiten=True)
    close(out.advantages, masked_whiten(raw, MASK_1x5).tolist())
    close(out.returns, returns.tolist())
    assert torch.equal(compute_advantages("gae", inputs, whiten=False).advantages, raw)
