import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from world import SAMPLES, KeywordRetriever

import research_env  # noqa: F401  (registers the env)
from research_env import MultiHopSearchEnv
from research_env.policies import OraclePolicy, RandomPolicy


def play(env, policy, index):
    env.reset(options={"index": index})
    total, steps = 0.0, 0
    while True:
        obs, reward, terminated, truncated, info = env.step(policy.act(env))
        total += reward
        steps += 1
        assert not (terminated and truncated)
        if terminated or truncated:
            return total, info, steps


def test_reset_returns_prompt_and_chat_messages(small_env):
    prompt, info = small_env.reset(options={"index": 0})
    assert SAMPLES[0].question in prompt
    assert prompt.endswith("<think>")
    assert info["question_id"] == "q1"
    assert info["messages"][-1]["content"].endswith(SAMPLES[0].question)


def test_search_returns_result_block_with_docs(small_env, retriever):
    small_env.reset(options={"index": 0})
    obs, reward, term, trunc, info = small_env.step("plan</think><search>Brisa Telk</search>")
    assert obs.startswith("\n<result>\n") and obs.endswith("</result>\n")
    assert "Doc 1 (Title: Brisa Telk)" in obs
    assert (reward, term, trunc) == (0.0, False, False)
    assert retriever.calls == [["Brisa Telk"]]


def test_oracle_solves_two_hop_question_with_full_reward(small_env):
    total, info, steps = play(small_env, OraclePolicy(), 0)
    assert steps == 3
    assert info["termination"] == "answered"
    assert info["prediction"] == "Ostravel"
    assert info["em"] == 1.0 and info["f1"] == 1.0 and info["format_valid"]
    assert total == 1.0
    assert info["searches"] == 2
    assert info["supporting_recall"] == 1.0
    assert info["hops"] == 2


def test_wrong_but_well_formed_answer_gets_point_one(small_env):
    small_env.reset(options={"index": 1})
    small_env.step("x</think><search>Glass Tide</search>")
    _, reward, term, _, info = small_env.step("<think>y</think><answer>\\boxed{Nobody}</answer>")
    assert term and reward == pytest.approx(0.1)
    assert info["em"] == 0.0


def test_malformed_answer_gets_zero(small_env):
    small_env.reset(options={"index": 1})
    _, reward, term, _, info = small_env.step("<answer>Tamsy Orr</answer>")  # no box, think open
    assert term and reward == 0.0 and not info["format_valid"]
    assert info["em"] == 1.0  # correctness is still reported


def test_invalid_turn_corrects_then_turn_budget_truncates(retriever):
    env = MultiHopSearchEnv(dataset=SAMPLES, retriever=retriever, max_turns=2)
    env.reset(options={"index": 0})
    obs, reward, term, trunc, _ = env.step("I am rambling")
    assert "<search>" in obs and not term and not trunc
    obs, reward, term, trunc, info = env.step("still rambling")
    assert trunc and not term
    assert info["termination"] == "turn_budget"
    assert reward == 0.0 and obs == ""


def test_invalid_turn_can_terminate(retriever):
    env = MultiHopSearchEnv(dataset=SAMPLES, retriever=retriever, on_invalid="terminate")
    env.reset(options={"index": 0})
    _, reward, term, trunc, info = env.step("nonsense")
    assert term and not trunc and info["termination"] == "invalid_output"
    assert info["invalid_reason"] == "invalid_turn"


def test_truncated_episode_reward_uses_reward_fn(retriever):
    env = MultiHopSearchEnv(
        dataset=SAMPLES, retriever=retriever, max_turns=1, reward=lambda rec: 0.25
    )
    env.reset(options={"index": 0})
    _, reward, term, trunc, _ = env.step("x</think><search>Brisa</search>")
    assert trunc and reward == 0.25


def test_conflicting_answers_are_malformed(small_env):
    small_env.reset(options={"index": 1})
    small_env.step("x</think><search>Glass Tide</search>")
    _, reward, _, _, info = small_env.step(
        "<think>y</think><answer>\\boxed{Tamsy Orr}</answer><answer>\\boxed{Ostravel}</answer>"
    )
    assert reward == 0.0 and info["violation"] == "conflicting_answers"


def test_repeated_prefill_says_why_it_scores_zero(small_env):
    """The prompt ends with the prefilled <think>; a first turn opening it again used to
    score 0 with no reason given."""
    small_env.reset(options={"index": 1})
    small_env.step("<think>plan</think><search>Glass Tide</search>")
    _, reward, term, _, info = small_env.step("<think>y</think><answer>\\boxed{Tamsy Orr}</answer>")
    assert term and reward == 0.0 and not info["format_valid"]
    assert info["invalid_reason"] == "repeated_prefill"
    assert "prefill" in info["invalid_detail"]


@pytest.mark.parametrize(
    ("turns", "reason"),
    [
        (["x</think><search>Glass Tide</search>", "<think>y</think><answer>Tamsy Orr"], "unclosed_answer"),
        (["x</think><search>Glass Tide</search>", "<think>y</think><answer>Tamsy Orr</answer>"], "unboxed_answer"),
        (["x</think><search>a</search>", "<think>y</think><search>b</search>"] * 2, "no_answer"),
        (["rambling", "x</think><answer>\\boxed{Tamsy Orr}</answer>"], "invalid_turn"),
        (["rambling", "more rambling", "still", "nothing"], "invalid_turn"),
        (["<answer>Tamsy Orr</answer>"], "unclosed_think"),
        (
            ["x</think><search>Glass Tide</search>",
             "<think>y</think><answer>\\boxed{Tamsy Orr}</answer><answer>\\boxed{Orr Tamsy}</answer>"],
            "conflicting_answers",
        ),
    ],
)  # fmt: skip
def test_final_info_says_why_a_response_is_invalid(small_env, turns, reason):
    small_env.reset(options={"index": 1})
    for turn in turns:
        *_, info = small_env.step(turn)
    assert not info["format_valid"]
    assert info["invalid_reason"] == reason and info["invalid_detail"]


def test_valid_response_has_no_invalid_reason(small_env):
    _, info, _ = play(small_env, OraclePolicy(), 0)
    assert info["format_valid"] and "invalid_reason" not in info


def test_search_cost_and_require_search(retriever):
    env = MultiHopSearchEnv(dataset=SAMPLES, retriever=retriever, search_cost=0.05)
    total, info, _ = play(env, OraclePolicy(), 0)
    assert total == pytest.approx(1.0 - 2 * 0.05)
    env = MultiHopSearchEnv(dataset=SAMPLES, retriever=retriever, require_search=True)
    env.reset(options={"index": 1})
    _, reward, _, _, info = env.step("x</think><answer>\\boxed{Tamsy Orr}</answer>")
    assert reward == 0.0 and info["violation"] == "answered_without_search"
    assert info["invalid_reason"] == "answered_without_search"


def test_step_after_end_raises_clear_error(small_env):
    small_env.reset(options={"index": 1})
    small_env.step("<answer>x</answer>")
    with pytest.raises(RuntimeError, match="reset"):
        small_env.step("again")


@pytest.mark.parametrize(
    "action",
    [
        "",
        "a" * 2_000_000,
        "<search><search></answer>",
        "<answer><answer>",
        "\ud800\udfff",
        "\x00<search>\x00</search>",
        "<search>" * 1000,
    ],
)
def test_any_string_is_a_valid_action(small_env, action):
    small_env.reset(options={"index": 0})
    obs, reward, term, trunc, info = small_env.step(action)
    assert isinstance(obs, str) and isinstance(reward, float)
    assert small_env.observation_space.contains(obs)


def test_golden_answers_never_in_observations_or_reset_info(retriever):
    # The retriever returns only a doc without the answer, so any leak is the env's.
    leak_free = KeywordRetriever(docs=[retriever.docs[0]])
    env = MultiHopSearchEnv(dataset=SAMPLES, retriever=leak_free, max_turns=3)
    for index in range(len(SAMPLES)):
        prompt, info = env.reset(options={"index": index})
        seen = [prompt, repr(info)]
        for action in ["x</think><search>Brisa Telk</search>", "blah", "<answer>z</answer>"]:
            obs, *_ = env.step(action)
            seen.append(obs)
        gold = SAMPLES[index].golden_answers[0]
        assert not any(gold in text for text in seen), index


def test_same_seed_same_episode(small_env, retriever):
    other = MultiHopSearchEnv(dataset=SAMPLES * 5, retriever=retriever)
    env = MultiHopSearchEnv(dataset=SAMPLES * 5, retriever=retriever)
    a = [env.reset(seed=s)[1]["index"] for s in range(10)]
    b = [other.reset(seed=s)[1]["index"] for s in range(10)]
    assert a == b and len(set(a)) > 1


def test_reset_options_validate(small_env):
    with pytest.raises(ValueError, match="out of range"):
        small_env.reset(options={"index": 99})
    with pytest.raises(ValueError, match="question_id"):
        small_env.reset(options={"bogus": 1})
    assert small_env.reset(options={"question_id": "q2"})[1]["index"] == 1


def test_unknown_names_list_choices(retriever):
    with pytest.raises(ValueError, match="bm25"):
        MultiHopSearchEnv(dataset=SAMPLES, retriever="nope")
    with pytest.raises(ValueError, match="research"):
        MultiHopSearchEnv(dataset=SAMPLES, retriever=retriever, reward="nope")
    with pytest.raises(ValueError, match="search-r1"):
        MultiHopSearchEnv(dataset=SAMPLES, retriever=retriever, template="nope")
    with pytest.raises(TypeError):
        MultiHopSearchEnv(dataset=SAMPLES, retriever=retriever, bogus_kwarg=1)


def test_check_env_passes(small_env):
    check_env(small_env, skip_render_check=True)


def test_random_policy_episodes_always_end(small_env):
    policy = RandomPolicy(seed=0)
    for i in range(20):
        _, info, steps = play(small_env, policy, i % 2)
        assert steps <= small_env.rules.max_turns


def test_vector_env_batches_searches(retriever):
    envs = gym.make_vec("ReSearch-MultiHop-v0", num_envs=3, dataset=SAMPLES, retriever=retriever)
    obs, infos = envs.reset(seed=0, options={"index": 0})
    assert len(obs) == 3
    retriever.calls.clear()
    obs, rewards, term, trunc, infos = envs.step(
        [
            "a</think><search>Brisa Telk</search>",
            "b</think><search>Quimby</search>",
            "<answer>\\boxed{x}</answer>",
        ]
    )
    assert retriever.calls == [["Brisa Telk", "Quimby"]]  # one batched call
    assert "Brisa Telk" in obs[0] and "Quimby Forge" in obs[1]
    assert list(term) == [False, False, True]
    envs.close()


def test_sync_vector_env_works(retriever):
    envs = gym.make_vec(
        "ReSearch-MultiHop-v0",
        num_envs=2,
        vectorization_mode="sync",
        dataset=SAMPLES,
        retriever=retriever,
    )
    obs, _ = envs.reset(seed=1)
    obs, rewards, term, trunc, _ = envs.step(["<answer>\\boxed{x}</answer>"] * 2)
    assert all(term)
    envs.close()


def test_render_ansi(retriever):
    env = MultiHopSearchEnv(dataset=SAMPLES, retriever=retriever, render_mode="ansi")
    env.reset(options={"index": 0})
    env.step("x</think><search>Brisa</search>")
    assert "<result>" in env.render()


@pytest.fixture(scope="module")
def default_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("research-gym-cache")


def test_default_env_from_gym_make(default_cache):
    env = gym.make("ReSearch-MultiHop-v0", split="dev", cache_dir=default_cache)
    check_env(env.unwrapped, skip_render_check=True)
    prompt, info = env.reset(seed=3)
    assert info["question"] in prompt
    obs, *_ = env.step("x</think><search>" + info["question"] + "</search>")
    assert obs.count("Doc ") == 3
    env.close()


def test_oracle_solves_default_dev_questions(default_cache):
    env = MultiHopSearchEnv(split="dev", cache_dir=default_cache)
    ems = [play(env, OraclePolicy(), i)[1]["em"] for i in range(40)]
    # BM25 makes the synthetic questions solvable when the sub-questions are followed.
    assert sum(ems) / len(ems) >= 0.9


def test_async_vector_env_on_default_dataset(default_cache):
    envs = gym.make_vec(
        "ReSearch-MultiHop-v0",
        num_envs=2,
        vectorization_mode="async",
        split="dev",
        cache_dir=default_cache,
    )
    obs, infos = envs.reset(seed=[0, 0], options={"index": 5})
    assert obs[0] == obs[1]
    obs, rewards, term, trunc, infos = envs.step(["x</think><search>a</search>"] * 2)
    assert not any(term) and "<result>" in obs[0]
    envs.close()


class _FlashRAGStyle:
    """A custom retriever answering FlashRAG-style dicts, as FlashRAG's retrievers do."""

    def __init__(self, hits):
        self.hits = hits

    def search(self, queries, k):
        return [list(self.hits[:k]) for _ in queries]


def test_a_custom_retriever_may_return_flashrag_dicts(retriever):
    """Dicts with ``contents`` (or ``title``/``text``) are documents; anything else is a
    TypeError naming the retriever at the search (it was an AttributeError later)."""
    dicts = _FlashRAGStyle([{"id": "d1", "contents": '"Brisa Telk"\nBrisa Telk is a town.',
                             "score": 2.0}, {"title": "Quimby", "text": "Quimby Forge."}])  # fmt: skip
    env = MultiHopSearchEnv(dataset=SAMPLES, retriever=dicts, top_k=2)
    env.reset(seed=0, options={"index": 0})
    obs, *_ = env.step("a</think><search>Brisa Telk</search>")
    assert "(Title: Brisa Telk) Brisa Telk is a town." in obs and "(Title: Quimby) Quimby" in obs
    envs = gym.make_vec("ReSearch-MultiHop-v0", num_envs=2, dataset=SAMPLES, retriever=dicts)
    envs.reset(seed=0)
    obs, *_ = envs.step(["a</think><search>x</search>", "<search>y</search>"])
    assert all("Brisa Telk is a town." in o for o in obs)
    envs.close()
    env = MultiHopSearchEnv(dataset=SAMPLES, retriever=_FlashRAGStyle(["just text"]))
    env.reset(seed=0, options={"index": 0})
    with pytest.raises(TypeError, match=r"_FlashRAGStyle.search returned 'just text'.*SearchHit"):
        env.step("<search>x</search>")
