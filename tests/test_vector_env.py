"""SearchVectorEnv: one retriever call per step, per-env resets, subsets, early ends, and
a failed search that changes nothing."""

import gymnasium as gym
import numpy as np
import pytest
from world import SAMPLES, KeywordRetriever

import research_env  # noqa: F401  (registers the env)
from research_env import MultiHopSearchEnv, SearchVectorEnv, Termination
from research_env.retrievers.http import RetrievalError

SEARCH_BRISA = "a</think><search>Brisa Telk</search>"
SEARCH_QUIMBY = "b</think><search>Quimby</search>"
ANSWER = "x</think><answer>\\boxed{Ostravel}</answer>"  # a first turn (continues <think>)
LATER_ANSWER = "<think>x</think><answer>\\boxed{Ostravel}</answer>"


class FlakyRetriever(KeywordRetriever):
    """Raises on its first ``failures`` calls, then works."""

    def __init__(self, failures=1):
        super().__init__()
        self.failures = failures

    def search(self, queries, k):
        if self.failures:
            self.failures -= 1
            self.calls.append(list(queries))
            raise RetrievalError("http://localhost:8000/retrieve", "connection refused")
        return super().search(queries, k)


def make(n, retriever, **kwargs):
    return SearchVectorEnv(n, dataset=SAMPLES, retriever=retriever, max_turns=3, **kwargs)


def test_one_retriever_call_per_step_for_every_searching_sub_env():
    retriever = KeywordRetriever()
    envs = make(4, retriever)
    envs.reset(seed=0, options={"index": 0})
    obs, rewards, terminated, truncated, infos = envs.step(
        [SEARCH_BRISA, SEARCH_QUIMBY, "no tags at all", SEARCH_QUIMBY]
    )
    assert retriever.calls == [["Brisa Telk", "Quimby", "Quimby"]]
    assert "Brisa Telk is an engineer" in obs[0] and "Quimby Forge" in obs[1] == obs[3]
    assert "neither a complete" in obs[2]  # the invalid turn is corrected, not searched
    assert not terminated.any() and not truncated.any() and rewards.tolist() == [0.0] * 4
    assert infos["searches"].tolist() == [1, 1, 0, 1]
    # Each sub-env's own record matches what the single env would have recorded.
    assert [len(e.episode.record.turns) for e in envs.envs] == [1, 1, 1, 1]


def test_sub_envs_share_one_dataset_and_retriever():
    retriever = KeywordRetriever()
    envs = make(3, retriever)
    assert all(e.retriever is retriever for e in envs.envs)
    # The loaded samples themselves are shared (each sub-env holds a list of references).
    assert all(a is b for e in envs.envs for a, b in zip(e.samples, envs.envs[0].samples))


def test_reset_with_one_question_and_seed_per_sub_env():
    envs = make(3, KeywordRetriever())
    prompts, infos = envs.reset(seed=[5, 6, 7], options={"indices": [1, 0, 1]})
    assert list(infos["question_id"]) == ["q2", "q1", "q2"]
    assert SAMPLES[1].question in prompts[0] and SAMPLES[0].question in prompts[1]
    assert [e.np_random_seed for e in envs.envs] == [5, 6, 7]
    with pytest.raises(ValueError, match="one question index per sub-env"):
        envs.reset(options={"indices": [0, 1]})


def test_reset_mask_resets_only_the_chosen_sub_envs():
    envs = make(2, KeywordRetriever(), autoreset_mode="Disabled")
    envs.reset(options={"indices": [0, 0]})
    envs.step([ANSWER, SEARCH_BRISA])
    first = envs.envs[1].episode
    prompts, infos = envs.reset(
        options={"indices": [1, None], "reset_mask": np.array([1, 0], bool)}
    )
    assert SAMPLES[1].question in prompts[0] and prompts[1] == ""
    assert envs.envs[1].episode is first and list(infos["_question_id"]) == [True, False]


def test_disabled_autoreset_steps_only_the_live_subset():
    retriever = KeywordRetriever()
    envs = make(3, retriever, autoreset_mode="Disabled")
    envs.reset(options={"index": 0})
    _, rewards, terminated, _, _ = envs.step([ANSWER, SEARCH_BRISA, SEARCH_QUIMBY])
    assert terminated.tolist() == [True, False, False] and rewards[0] == 1.0
    retriever.calls.clear()
    obs, rewards, terminated, truncated, infos = envs.step([None, ANSWER, SEARCH_BRISA])
    assert retriever.calls == [["Brisa Telk"]]
    assert obs[0] == "" and rewards[0] == 0.0 and not terminated[0] and not truncated[0]
    assert not infos["_question_id"][0]  # the finished sub-env reported nothing
    assert len(envs.envs[0].episode.record.turns) == 1  # untouched
    with pytest.raises(ValueError, match="pass None as its action"):
        envs.step([ANSWER, None, SEARCH_BRISA])
    with pytest.raises(ValueError, match="must be a str"):
        envs.step([None, None, None])


def test_next_step_autoreset_is_gymnasiums_usual_semantics():
    envs = gym.make_vec("ReSearch-MultiHop-v0", num_envs=2, dataset=SAMPLES,
                        retriever=KeywordRetriever())  # fmt: skip
    assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    envs.reset(seed=0, options={"index": 0})
    _, _, terminated, _, _ = envs.step([ANSWER, SEARCH_BRISA])
    assert terminated.tolist() == [True, False]
    # Next step: sub-env 0 is reset (its action ignored), sub-env 1 plays on.
    obs, rewards, terminated, truncated, infos = envs.step(["ignored", ANSWER])
    assert "<think>" in obs[0] and rewards[0] == 0.0 and not terminated[0] and not truncated[0]
    assert infos["_question_id"][0] and terminated[1]
    envs.close()


def test_end_early_ends_chosen_sub_episodes_with_the_vocabulary():
    envs = make(3, KeywordRetriever(), autoreset_mode="Disabled")
    envs.reset(options={"index": 0})
    envs.step([SEARCH_BRISA] * 3)
    outcomes = envs.end_early([0], Termination.TOKEN_BUDGET)
    outcomes |= envs.end_early([2], Termination.EOS)
    assert outcomes[0].truncated and not outcomes[0].terminated
    assert outcomes[2].terminated and not outcomes[2].truncated  # the model's own choice
    assert outcomes[0].info["termination"] == "token_budget" == Termination.TOKEN_BUDGET
    assert outcomes[2].info["termination"] == "eos"
    assert outcomes[0].reward == 0.0  # never answered: malformed under the research reward
    _, _, terminated, _, _ = envs.step([None, ANSWER, None])
    assert terminated.tolist() == [False, True, False]
    with pytest.raises(RuntimeError, match="no episode running"):
        envs.end_early([0])
    single = MultiHopSearchEnv(dataset=SAMPLES, retriever=KeywordRetriever())
    single.reset(options={"index": 0})
    with pytest.raises(ValueError, match="turn end, not an episode end"):
        single.end_early(Termination.STOP)
    assert single.end_early(Termination.EOS)[2]  # terminated


def test_step_turns_gives_plain_outcomes_for_a_subset():
    retriever = KeywordRetriever()
    envs = make(3, retriever)
    envs.reset(options={"index": 0})
    outcomes = envs.step_turns({2: SEARCH_QUIMBY, 0: ANSWER})
    assert set(outcomes) == {0, 2} and retriever.calls == [["Quimby"]]
    assert outcomes[0].terminated and type(outcomes[0].info["em"]) is float
    assert envs.envs[1].episode.record.turns == []


def test_a_failed_search_changes_nothing_and_the_retry_succeeds():
    env = MultiHopSearchEnv(dataset=SAMPLES, retriever=FlakyRetriever(), max_turns=3)
    env.reset(options={"index": 0})
    record = env.episode.record
    with pytest.raises(RetrievalError):
        env.step(SEARCH_BRISA)
    assert (record.turns, record.observations, record.searches) == ([], [], 0)
    obs, reward, terminated, truncated, info = env.step(SEARCH_BRISA)
    assert "Brisa Telk is an engineer" in obs and not (terminated or truncated)
    assert (len(record.turns), len(record.observations), record.searches) == (1, 1, 1)
    # The episode goes on exactly as one that never saw the error.
    env.step("<think>next</think><search>Quimby Forge</search>")
    *_, info = env.step(LATER_ANSWER)
    assert info["turns"] == 3 and info["format_valid"] and info["em"] == 1.0


def test_a_failed_batched_search_changes_no_sub_episode():
    retriever = FlakyRetriever()
    envs = make(3, retriever, autoreset_mode="Disabled")
    envs.reset(options={"index": 0})
    with pytest.raises(RetrievalError):
        envs.step([SEARCH_BRISA, ANSWER, SEARCH_QUIMBY])
    assert all(e.episode.record.turns == [] and not e.episode.done for e in envs.envs)
    obs, _, terminated, _, _ = envs.step([SEARCH_BRISA, ANSWER, SEARCH_QUIMBY])
    assert terminated.tolist() == [False, True, False] and "Quimby Forge" in obs[2]
    assert [len(e.episode.record.turns) for e in envs.envs] == [1, 1, 1]


def test_resized_keeps_the_sub_envs_and_shares_the_retriever():
    retriever = KeywordRetriever()
    envs = make(2, retriever)
    bigger = envs.resized(4)
    assert bigger.num_envs == 4 and bigger.envs[:2] == envs.envs
    assert all(e.retriever is retriever for e in bigger.envs)
    assert bigger.resized(1).envs == envs.envs[:1]
    assert len(bigger.action_space) == 4
