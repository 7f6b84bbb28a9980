"""The learning test of step-level search rewards: on the tiny random model, a few GRPO
steps with the no-search penalty make the policy search first more often, and the same
run without shaping does not move.

The task and the env that reads the random model's turns as searches or answers are
``benchmarks/shaping_behaviour.py`` (its table in RESULTS.md runs more seeds and steps).
The answer reward is 0 for every episode, so the shaping is the only signal: the control
must stay exactly where it started, and the shaped run must search first more often
than both its own start and the control.
"""

from __future__ import annotations

import pytest

from benchmarks.shaping_behaviour import make_grpo, search_first_rate

STEPS = 3


# One torch thread (the conftest fixture): results do not depend on it.
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.numeric]


def test_the_no_search_penalty_teaches_searching_first(tmp_path):
    shaped = make_grpo({"no_search_multihop": 1.0}, seed=0, out=str(tmp_path / "shaped"))
    before = search_first_rate(shaped)
    shaped.learn(STEPS)
    after = search_first_rate(shaped)
    # search_first_rate samples 32 episodes with one fixed seed: an unchanged policy gives
    # the same rate exactly, and each episode moves it by 1/32.
    assert after >= before + 0.15, (before, after)

    control = make_grpo(None, seed=0, out=str(tmp_path / "control"))
    assert search_first_rate(control) == before  # the same start
    control.learn(1)  # every reward is 0: no advantage, no change at all
    assert search_first_rate(control) == before
