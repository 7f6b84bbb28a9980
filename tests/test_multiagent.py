"""The PettingZoo team env and LLM team rollouts: API tests, protocol, batching, masks, GRPO."""

from __future__ import annotations

import warnings

import pytest
import torch
from world import SAMPLES, KeywordRetriever

from research_env import MultiHopSearchEnv
from research_env.multiagent import (
    MESSAGE,
    CooperativeSearchEnv,
    Role,
    TeamGames,
    aec_env,
)

pytest.importorskip("pettingzoo")

BOXED = "<answer>The answer is \\boxed{%s}</answer>"


def small(**kwargs):
    return {"dataset": SAMPLES, "retriever": KeywordRetriever(), "max_turns": 4, **kwargs}


def test_pettingzoo_parallel_and_aec_api_tests_pass():
    from pettingzoo.test import api_test, parallel_api_test

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PettingZoo's advice on Box spaces and agent names
        parallel_api_test(CooperativeSearchEnv(**small()), num_cycles=60)
        api_test(aec_env(**small()), num_cycles=30)
        # The default world (synthetic questions, BM25) too.
        parallel_api_test(CooperativeSearchEnv(), num_cycles=40)


def test_a_team_solves_a_question_through_the_shared_episode():
    retriever = KeywordRetriever()
    env = CooperativeSearchEnv(**small(retriever=retriever))
    obs, infos = env.reset(seed=0, options={"question_id": "q1", "ignored": 1})
    assert env.agents == ["planner", "searcher", "answerer"]
    assert obs["planner"]["acting"] == 1 and obs["searcher"]["acting"] == 0
    assert "You are the planner" in obs["planner"]["text"]
    assert obs["planner"]["text"].endswith('<turn role="planner"/>\n')
    assert "Brisa Telk" in obs["searcher"]["text"] and "Ostravel" not in obs["answerer"]["text"]

    plan = "<plan>Which company did Brisa Telk found?</plan>"
    obs, rewards, term, trunc, infos = env.step({"planner": plan, "searcher": "ignored"})
    assert obs["planner"]["text"] == ""  # its own turn is not echoed
    assert obs["searcher"]["text"] == MESSAGE.format(role="planner", text=plan) + (
        '<turn role="searcher"/>\n'
    )
    assert retriever.calls == []  # a message does not search

    obs, *_ = env.step({"searcher": "<search>Brisa Telk company</search>"})
    assert retriever.calls == [["Brisa Telk company"]]
    docs = obs["searcher"]["text"]
    assert docs.startswith("\n<result>\nDoc 1 (Title: Brisa Telk)")  # as the single env
    assert obs["answerer"]["text"].endswith(docs + '<turn role="answerer"/>\n')

    env.step({"answerer": "<request>Where is Quimby Forge?</request>"})  # a message
    env.step({"planner": "<plan>Where is Quimby Forge headquartered?</plan>"})
    env.step({"searcher": "<search>Quimby Forge headquartered</search>"})
    obs, rewards, term, trunc, infos = env.step({"answerer": BOXED % "Ostravel"})
    assert env.agents == []
    assert all(term.values()) and not any(trunc.values())
    assert rewards == {"planner": 1.0, "searcher": 1.0, "answerer": 1.0}
    info = infos["answerer"]
    assert info["em"] == 1.0 and info["format_valid"] and info["searches"] == 2
    assert info["termination"] == "answered" and info["supporting_recall"] == 1.0
    assert info["role_turns"] == 2 and info["role_episode_turns"] == 1
    assert infos["planner"]["role_episode_turns"] == 0


def test_team_reward_is_the_single_env_reward_for_the_same_turns():
    """The shared episode is the single-agent code: same turns, same reward and info."""
    turns = ["<search>Tamsy Orr Glass Tide</search>", BOXED % "Orr"]
    single = MultiHopSearchEnv(**small(template="research-chat"))
    single.reset(options={"question_id": "q2"})
    for t in turns:
        _, reward, *_, info = single.step(t)
    team = CooperativeSearchEnv(roles=["searcher", "answerer"], **small())
    team.reset(options={"question_id": "q2"})
    team.step({"searcher": turns[0]})
    *_, rewards, _, _, infos = team.step({"answerer": turns[1]})
    assert rewards["searcher"] == rewards["answerer"] == reward
    for key in ("em", "f1", "format_valid", "searches", "retrieved_doc_ids", "termination"):
        assert infos["answerer"][key] == info[key]


def test_roles_may_only_take_their_own_actions_and_shaping_is_per_role():
    env = CooperativeSearchEnv(**small(), shaping={"planner": "off-role", "searcher": "support"})
    env.reset(options={"question_id": "q2"})
    env.step({"planner": BOXED % "Tamsy Orr"})  # the planner may not answer: a message
    assert env.agents  # still playing
    env.step({"searcher": BOXED % "Tamsy Orr"})  # nor may the searcher
    obs, rewards, term, trunc, infos = env.step({"answerer": BOXED % "Tamsy Orr"})
    assert all(term.values())
    assert infos["planner"]["role_off_role_turns"] == 1
    # No search: no supporting recall; the planner pays 0.1 for its off-role turn.
    team = infos["answerer"]["team_reward"]
    assert rewards == {"planner": team - 0.1, "searcher": team, "answerer": team}


def test_turn_order_and_step_budget_truncate():
    env = CooperativeSearchEnv(
        roles=["planner", "searcher", "answerer"],
        turn_order=["searcher", "answerer"],
        max_steps=3,
        **small(),
    )
    obs, _ = env.reset(options={"index": 0})
    assert env.acting_agent == "searcher" and obs["searcher"]["acting"] == 1
    env.step({"searcher": "hello"})
    assert env.acting_agent == "answerer"
    env.step({"answerer": "<request>more</request>"})
    *_, term, trunc, infos = env.step({"searcher": "<search>Brisa</search>"})
    assert all(trunc.values()) and not any(term.values())
    assert infos["planner"]["termination"] == "turn_budget"


def test_team_games_batch_every_search_of_a_step_into_one_retriever_call():
    retriever = KeywordRetriever()
    games = TeamGames(3, roles=["searcher", "answerer"], **small(retriever=retriever))
    games.reset(options={"indices": [0, 1, 0]})
    games.step({0: "<search>Brisa Telk</search>", 1: "<search>Glass Tide</search>", 2: "hm"})
    assert retriever.calls == [["Brisa Telk", "Glass Tide"]]
    results = games.step({0: BOXED % "Ostravel", 1: BOXED % "x", 2: BOXED % "Ostravel"})
    assert [r.done for r in results.values()] == [True, True, True]
    assert results[0].rewards["searcher"] == 1.0
    # Game 2's searcher only wrote "hm" (a message): the team answered without searching.
    assert results[2].infos["answerer"]["searches"] == 0
    assert results[2].rewards["answerer"] == 1.0


def test_custom_roles():
    critic = Role("critic", "You check the answer.", stop_strings=("</critique>",))
    env = CooperativeSearchEnv(roles=["solo", critic], **small())
    env.reset(options={"question_id": "q2"})
    assert env.possible_agents == ["solo", "critic"]
    env.step({"solo": "<search>Glass Tide</search>"})
    env.step({"critic": "<critique>fine</critique>"})
    *_, term, _, infos = env.step({"solo": BOXED % "Tamsy Orr"})
    assert all(term.values()) and infos["critic"]["em"] == 1.0
    with pytest.raises(ValueError, match="unknown roles"):
        CooperativeSearchEnv(roles=["solo"], turn_order=["planner"], **small())


# ---------------------------------------------------------------- LLM team rollouts


@pytest.fixture(scope="module")
def tiny():
    from algorithms.policy import load_policy

    torch.set_num_threads(1)
    return load_policy("tiny-random", device="cpu")


def _segments(t):
    """(mask value, token ids) runs of a trajectory's response."""
    runs: list[tuple[int, list[int]]] = []
    for token, m in zip(t.response_ids, t.loss_mask, strict=True):
        if runs and runs[-1][0] == m:
            runs[-1][1].append(token)
        else:
            runs.append((m, [token]))
    return runs


def check_masks(engine, trajectories, n_games):
    tok = engine.policies["planner"].tokenizer
    agents = engine.agents
    assert len(trajectories) == n_games * len(agents)
    for g in range(n_games):
        transcript = engine.games.render(g)
        for r, agent in enumerate(agents):
            t = trajectories[g * len(agents) + r]
            assert t.info["role"] == agent
            assert len(t.response_ids) == len(t.loss_mask) == len(t.sample_logprobs)
            assert {k for k, m in enumerate(t.loss_mask) if m} == {
                k for a, b in t.turn_spans for k in range(a, b)
            }
            assert t.info["role_turns"] == len(t.turn_spans)
            assert f"You are the {agent}" in tok.decode(t.prompt_ids)
            for m, ids in _segments(t):
                text = tok.decode(ids, skip_special_tokens=True)
                if m:  # the agent's own turn, which the team saw as its message
                    assert MESSAGE.format(role=agent, text=text) in transcript
                else:  # what the board showed it: never its own message
                    assert f'<message from="{agent}">' not in text
            assert all(lp == 0.0 for lp, m in zip(t.sample_logprobs, t.loss_mask) if not m)
            assert all(lp < 0.0 for lp, m in zip(t.sample_logprobs, t.loss_mask) if m)


def test_shared_policy_team_rollout_masks_and_a_few_grpo_steps(tiny, tmp_path):
    from algorithms.config import TrainConfig
    from algorithms.grpo import GRPO
    from algorithms.rollout import Sampling
    from algorithms.rollout.multiagent import TeamRolloutEngine

    engine = TeamRolloutEngine(tiny, {**small(max_turns=2), "shaping": {"planner": "brevity"}})
    config = TrainConfig(algo="grpo").with_overrides(
        {
            "output_dir": str(tmp_path),
            "optim.lr": 1e-3,
            "logging.wandb": False,
            "logging.progress_bar": False,
            "grpo.kl_coef": 0.0,
        }
    )
    algo = GRPO(tiny, small(), config)
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    for step in range(3):
        s = Sampling(max_turn_tokens=5, max_total_tokens=300, seed=step)
        trajectories = engine.collect([0, 1], group_size=2, sampling=s)
        check_masks(engine, trajectories, n_games=4)
        # Groups: one per (question, role); the team reward plus the planner's shaping.
        assert [t.group for t in trajectories[:6]] == [0, 1, 2, 0, 1, 2]
        assert [t.group for t in trajectories[6:]] == [3, 4, 5, 3, 4, 5]
        for g in range(4):
            team = trajectories[3 * g + 1].reward
            assert trajectories[3 * g + 2].reward == team
            chars = trajectories[3 * g].info["role_chars"]
            assert trajectories[3 * g].reward == pytest.approx(team - 0.0005 * chars)
        metrics = algo.learn_from(trajectories)
        assert metrics["train/optimizer_steps"] >= 1
    after = tiny.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_one_policy_per_role(tiny):
    from algorithms.policy import load_policy
    from algorithms.rollout import Sampling
    from algorithms.rollout.multiagent import TeamRolloutEngine

    other = load_policy("tiny-random", device="cpu")
    policies = {"planner": other, "searcher": tiny, "answerer": tiny}
    engine = TeamRolloutEngine(policies, small(max_turns=2))
    s = Sampling(max_turn_tokens=4, max_total_tokens=300, seed=0)
    trajectories = engine.collect([1], group_size=2, sampling=s)
    check_masks(engine, trajectories, n_games=2)
    # The same seed and policies give the same rollout.
    again = engine.collect([1], group_size=2, sampling=s)
    assert [t.response_ids for t in again] == [t.response_ids for t in trajectories]


def test_token_budget_ends_the_game(tiny):
    from algorithms.rollout import Sampling
    from algorithms.rollout.multiagent import TeamRolloutEngine

    engine = TeamRolloutEngine(tiny, small(max_turns=4))
    s = Sampling(max_turn_tokens=6, max_total_tokens=40, seed=0)
    trajectories = engine.collect([0], sampling=s)
    assert {t.finish_reason for t in trajectories} == {"token_budget"}
    assert all(len(t.response_ids) < 40 for t in trajectories)


def test_a_tool_call_template_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"tag protocol.*'research-chat'"):
        CooperativeSearchEnv(**small(template="tool-call"))
