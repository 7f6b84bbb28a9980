"""One update on a fixed batch gives the numbers the pre-redesign trainer gave.

The values below were recorded at commit 3efaa72, before the trainer was rebuilt around
one objective function and the advantage registry (issue 12): the same tiny policy, the
same four hand-made episodes (``test_algorithms.two_groups``), one ``learn_from`` call.
The gradients were also compared tensor by tensor at the time (bitwise equal); here the
loss statistics and the gradient norms stand for them.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from test_algorithms import config, policy, two_groups  # noqa: E402

from algorithms.registry import make_algorithm  # noqa: E402

RECORDED = {
    "grpo": (
        {"grpo.kl_coef": 0.001},
        {"train/loss": 2.9802322831784522e-09, "train/entropy": 7.936509132385254,
         "train/grad_norm": 11.297872543334961},
        {"model.embed_tokens.weight": 6.883927345275879,
         "model.layers.1.mlp.down_proj.weight": 0.8413808345794678},
    ),
    "ppo": (
        {},
        {"train/loss": 0.09410585463047028, "train/v_loss": 0.18821170926094055,
         "train/pg_loss": 0.0, "train/grad_norm": 16.112211227416992},
        {"model.embed_tokens.weight": 9.715080261230469,
         "model.layers.1.mlp.down_proj.weight": 1.1710801124572754},
    ),
    "reinforce": (
        {},
        {"train/loss": 0.0, "train/grad_norm": 13.147053718566895},
        {"model.embed_tokens.weight": 8.006834983825684,
         "model.layers.1.mlp.down_proj.weight": 0.9272758960723877},
    ),
    "grpo-2-epochs": (
        {"trainer.epochs": 2, "grpo.kl_coef": 0.0},
        {"train/loss": -0.07071052342653272, "train/clipfrac": 0.5,
         "train/entropy": 7.9581298828125, "train/grad_norm": 5.6489362716674805},
        {"model.embed_tokens.weight": 6.883927345275879,
         "model.layers.1.mlp.down_proj.weight": 0.8413808345794678},
    ),
}  # fmt: skip


# One torch thread (the conftest fixture): results do not depend on it.
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.numeric]


@pytest.mark.parametrize("case", sorted(RECORDED))
def test_update_matches_the_pre_redesign_trainer(case, tmp_path):
    algo_name = case.split("-")[0]
    overrides, expected_metrics, expected_grad_norms = RECORDED[case]
    torch.manual_seed(0)
    algo = make_algorithm(algo_name, policy(), None, config(algo_name, tmp_path, **overrides))
    first_step_grads = []
    step = algo.optimizer.step

    def spy(*args, **kwargs):
        if not first_step_grads:
            named = algo.policy.model.named_parameters()
            first_step_grads.append({n: float(p.grad.norm()) for n, p in named})
        return step(*args, **kwargs)

    algo.optimizer.step = spy
    metrics = algo.learn_from(two_groups())
    for key, value in expected_metrics.items():
        assert metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    for name, value in expected_grad_norms.items():
        assert first_step_grads[0][name] == pytest.approx(value, rel=1e-5), name
