"""Token transcripts and ``research-env view``: roles, escaping, caps, the trainer's and the
harness's files, and the page itself in a real headless Chromium (no script error, the
filters work, the trained-token count shown is the loss mask's sum)."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from world import SAMPLES, KeywordRetriever

from algorithms.buffer import Trajectory
from algorithms.policy import load_policy
from algorithms.transcripts import (
    SUFFIX,
    read_transcripts,
    token_texts,
    transcript_record,
    write_transcripts,
)
from research_app.cli import main
from research_app.view import find_transcripts, load_episodes, write_view
from research_app.view_page import embed_json, render_page

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SEARCH_TURN = "<think>I need the author.</think>\n<search>Who wrote The Glass Tide?</search>"
DOCS = "\nDoc 1 (Title: Tamsy Orr) Tamsy Orr wrote The Glass Tide.\n"
OBSERVATION = f"\n<result>{DOCS}</result>\n"
ANSWER_TURN = "<think>Found it.</think>\n<answer>\\boxed{Tamsy Orr}</answer>"
HOSTILE = "</script><script>window.__pwned = 1</script><b>bold</b><!-- & __DATA__"


@pytest.fixture(scope="module")
def policy():
    return load_policy("tiny-random", device="cpu")


def handmade(tokenizer, turns, observations, info, prompt="Question: who wrote it?\n"):
    """A trajectory built the way the engine builds one: turns mask 1, observations 0."""
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    traj = Trajectory(prompt_ids=encode(prompt), reward=float(info.get("em", 0)), info=info)
    for i, turn in enumerate(turns):
        ids = encode(turn)
        traj.add_model_tokens(ids, [-0.5] * len(ids))
        if i < len(observations):
            traj.add_observation_tokens(encode(observations[i]))
    traj.finish_reason = "answered"
    return traj


def oracle_like(tokenizer):
    info = {"question_id": "q2", "em": 1.0, "f1": 1.0, "hops": 1, "searches": 1,
            "prediction": "Tamsy Orr", "golden_answers": ["Tamsy Orr"]}  # fmt: skip
    return handmade(tokenizer, [SEARCH_TURN, ANSWER_TURN], [OBSERVATION], info)


def by_role(record, role):
    return "".join(t for t, r in zip(record["tokens"], record["roles"], strict=True) if r == role)


# --------------------------------------------------------------------------------------
# Records: token texts and roles
# --------------------------------------------------------------------------------------


def test_roles_split_an_episode_into_prompt_trained_retrieved_and_environment(policy):
    tok = policy.tokenizer
    traj = oracle_like(tok)
    record = transcript_record(traj, tok, source="oracle")
    n = record["prompt_len"]
    assert record["roles"][:n] == "P" * n == "P" * len(traj.prompt_ids)
    assert by_role(record, "P") == "Question: who wrote it?\n"
    # Trained exactly where the loss mask is 1: the two turns, nothing else.
    assert [r == "T" for r in record["roles"][n:]] == [bool(m) for m in traj.loss_mask]
    assert by_role(record, "T") == SEARCH_TURN + ANSWER_TURN
    # The documents are retrieved (masked); the tags around them are environment text.
    assert by_role(record, "R") == DOCS
    assert by_role(record, "E") == "\n<result></result>\n"
    assert record["trained_tokens"] == sum(traj.loss_mask) and record["leaks"] == []
    assert record["logprobs"] == traj.sample_logprobs and record["advantages"] is None
    assert record["em"] == 1.0 and record["hops"] == 1 and record["source"] == "oracle"
    assert "".join(record["tokens"][n:]) == tok.decode(traj.response_ids)


def test_the_mask_the_loss_used_decides_trained_and_leaks_are_counted(policy):
    tok = policy.tokenizer
    traj = oracle_like(tok)
    first_turn_end = traj.turn_spans[0][1]
    mask = list(traj.loss_mask)
    mask[:first_turn_end] = [0] * first_turn_end  # the first turn masked out ...
    mask[first_turn_end + 3] = 1  # ... and one observation token trained on (a bug)
    record = transcript_record(traj, tok, loss_mask=mask, advantages=[0.25] * len(mask))
    roles = record["roles"][record["prompt_len"] :]
    assert roles[:first_turn_end] == "U" * first_turn_end
    assert roles[first_turn_end + 3] == "T" and record["leaks"] == [first_turn_end + 3]
    assert record["trained_tokens"] == sum(mask) == sum(traj.loss_mask) - first_turn_end + 1
    assert record["advantages"] == [0.25] * len(mask)


def test_token_texts_give_a_split_character_to_the_token_that_completes_it(policy):
    tok = policy.tokenizer
    ids = tok("héllo 日本 x", add_special_tokens=False)["input_ids"]
    texts = token_texts(tok, ids)
    assert len(texts) == len(ids) and "".join(texts) == "héllo 日本 x"
    assert "" in texts  # 日 is three byte tokens here: two of them show nothing
    assert " 日" in texts and "本" in texts


# --------------------------------------------------------------------------------------
# Files: written by the harness and the trainer, read back with clear errors, capped
# --------------------------------------------------------------------------------------


def test_reading_a_text_transcript_file_says_which_file_is_wanted(tmp_path):
    path = tmp_path / "agent.jsonl"
    path.write_text(json.dumps({"prompt": "p", "turn_texts": []}) + "\n")
    with pytest.raises(ValueError, match=rf"agent.jsonl:1: not a token transcript.*\*\{SUFFIX}"):
        list(read_transcripts(path))
    with pytest.raises(FileNotFoundError, match=r"logging\.save_transcripts"):
        find_transcripts(tmp_path)
    assert main(["view", str(tmp_path / "missing")]) == 2


def test_a_big_file_is_thinned_evenly_and_the_data_budget_stops_it(policy, tmp_path):
    record = transcript_record(oracle_like(policy.tokenizer), policy.tokenizer)
    path = write_transcripts(
        tmp_path / f"train{SUFFIX}", [{**record, "step": s} for s in range(10)]
    )
    episodes, notes = load_episodes([path], limit=3)
    assert [e["step"] for e in episodes] == [0, 4, 8]  # every ceil(10 / 3) = 4th
    assert notes == [f"train{SUFFIX}: every 4th of 10 episodes (3 shown)."]
    size_mb = len(json.dumps(record, ensure_ascii=False)) / 1e6
    episodes, notes = load_episodes([path], max_mb=2.5 * size_mb)
    assert len(episodes) == 2 and "Stopped at" in notes[0]


def test_a_malformed_episode_is_skipped_with_a_note_not_drawn(policy, tmp_path):
    record = transcript_record(oracle_like(policy.tokenizer), policy.tokenizer)
    short_mask = {**record, "loss_mask": record["loss_mask"][:-1]}
    no_roles = {k: v for k, v in record.items() if k != "roles"}
    path = write_transcripts(tmp_path / f"x{SUFFIX}", [short_mask, record, no_roles])
    episodes, notes = load_episodes([path])
    assert episodes == [record]
    n = len(record["loss_mask"])
    assert notes == [
        f"x{SUFFIX}: 2 malformed episode(s) skipped (loss_mask must list one value per "
        f"response token ({n}))."
    ]


def page_data(page: str) -> dict:
    """The page's embedded data, parsed as strictly as a browser's JSON.parse does."""
    start = page.index('id="transcripts">') + len('id="transcripts">')
    text = page[start : page.index("</script>", start)]

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_are_written_as_valid_json_null(policy, tmp_path):
    record = transcript_record(oracle_like(policy.tokenizer), policy.tokenizer)
    diverged = {**record, "reward": float("nan"), "f1": float("inf")}
    diverged["logprobs"] = [float("-inf"), *record["logprobs"][1:]]
    write_transcripts(tmp_path / f"train{SUFFIX}", [diverged, record])  # NaN, Infinity
    out = write_view(tmp_path)
    episodes = page_data(out.read_text(encoding="utf-8"))["episodes"]
    assert len(episodes) == 2
    assert episodes[0]["reward"] is None and episodes[0]["f1"] is None
    assert episodes[0]["logprobs"][0] is None and episodes[1]["reward"] == record["reward"]


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("reward", {"value": 1}, "reward must be a number, got dict"),
        ("source", {"name": "x"}, "source must be text, got dict"),
        ("leaks", {"0": 1}, "leaks must be a list of token positions"),
        ("golden_answers", "Tamsy Orr", "golden_answers must be a list of strings"),
        ("logprobs", "x", "logprobs must list one value per response token"),
    ],
)
def test_an_episode_with_a_field_of_the_wrong_type_is_skipped_with_a_note(
    policy, tmp_path, field, value, problem
):
    record = transcript_record(oracle_like(policy.tokenizer), policy.tokenizer)
    path = write_transcripts(tmp_path / f"x{SUFFIX}", [{**record, field: value}, record])
    episodes, notes = load_episodes([path])
    assert episodes == [record]
    assert notes[0].startswith(f"x{SUFFIX}: 1 malformed episode(s) skipped ({problem}")


def test_a_deep_or_undecodable_line_is_an_error_naming_the_file_and_line(tmp_path, capsys):
    deep = tmp_path / f"deep{SUFFIX}"
    deep.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ValueError, match=rf"deep{re.escape(SUFFIX)}:1: .*nested too deeply"):
        list(read_transcripts(deep))
    latin = tmp_path / f"latin{SUFFIX}"
    latin.write_bytes(b'{"format": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=rf"latin{re.escape(SUFFIX)}:1: .*not UTF-8"):
        list(read_transcripts(latin))
    assert main(["view", str(latin)]) == 2
    assert f"latin{SUFFIX}:1" in capsys.readouterr().err


def test_view_runs_without_torch(policy, tmp_path):
    from test_cli import run_without_torch

    record = transcript_record(oracle_like(policy.tokenizer), policy.tokenizer)
    write_transcripts(tmp_path / f"x{SUFFIX}", [record])
    assert "CODE 0" in run_without_torch("view", str(tmp_path))
    assert (tmp_path / "view.html").stat().st_size > 1000


def test_the_page_escapes_everything_a_transcript_holds():
    data = {"episodes": [{"question": HOSTILE}], "roles": {}, "page_size": 1, "notes": []}
    embedded = embed_json(data)
    assert "</script" not in embedded and "<!--" not in embedded and "<b>" not in embedded
    assert json.loads(embedded) == data
    page = render_page(f"title {HOSTILE}", data)
    assert page.count("</script>") == 2  # the data block's and the code block's own
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page


def test_the_harness_writes_eval_token_transcripts(policy, tmp_path):
    from algorithms.rollout import Sampling
    from research_app.harness import evaluate_model

    path = tmp_path / f"eval{SUFFIX}"
    kwargs = {"dataset": SAMPLES, "retriever": KeywordRetriever(), "max_turns": 2}
    sampling = Sampling(greedy=True, max_turn_tokens=5, max_total_tokens=200)
    result = evaluate_model(policy, kwargs, sampling=sampling, token_transcripts=path,
                            show_progress=False)  # fmt: skip
    records = list(read_transcripts(path))
    assert [r["question"] for r in records] == [s.question for s in SAMPLES]
    assert [r["source"] for r in records] == ["agent", "agent"]
    for record, episode in zip(records, result.episodes, strict=True):
        assert record["trained_tokens"] == episode["response_tokens"]
        assert record["hops"] == episode["hops"] and record["em"] == episode["em"]


def test_the_trainer_saves_the_mask_and_advantages_its_update_used(policy, tmp_path):
    from algorithms.config import TrainConfig
    from algorithms.registry import make_algorithm
    from algorithms.rollout import Sampling

    config = TrainConfig(algo="grpo").with_overrides(
        {"output_dir": str(tmp_path), "logging.wandb": False, "logging.save_transcripts": 3,
         "trainer.filter_truncated": True, "trainer.filter_zero_variance_groups": True,
         "grpo.kl_coef": 0.0}
    )  # fmt: skip
    kwargs = {"dataset": SAMPLES, "retriever": KeywordRetriever(), "max_turns": 2}
    algo = make_algorithm("grpo", policy, kwargs, config)
    trajs = algo.engine.collect([0, 1], 2, sampling=Sampling(max_turn_tokens=5, seed=0))
    for t, reward in zip(trajs, [1.0, 0.0, 1.0, 0.0], strict=True):
        t.reward = reward
    for t in trajs[:2]:  # group 0 ends by itself; group 1 ran out of turns: masked out
        t.finish_reason, t.info["termination"] = "answered", "answered"
    algo.learn_from(trajs)
    path = tmp_path / "transcripts" / f"train{SUFFIX}"
    records = list(read_transcripts(path))
    assert [r["step"] for r in records] == [1] * 3  # the step's first 3 episodes
    assert {r["source"] for r in records} == {"grpo training"}
    for record, traj, sign in zip(records[:2], trajs[:2], [1, -1], strict=True):
        assert record["loss_mask"] == traj.loss_mask
        trained = [a for a, m in zip(record["advantages"], traj.loss_mask, strict=True) if m]
        # Group rewards (1, 0): mean 0.5, unbiased std 0.7071, so A = +-0.7071.
        assert trained == pytest.approx([sign * 0.7071] * sum(traj.loss_mask), abs=1e-4)
    # Truncated: every generated token shows as generated but untrained.
    record = records[2]
    assert record["trained_tokens"] == 0 and "T" not in record["roles"]
    assert record["roles"].count("U") == sum(trajs[2].loss_mask) > 0 and "dropped" not in record
    # A step whose groups are all flat trains on nothing: its episodes say they were dropped.
    for t in trajs:
        t.reward = 0.0
    algo.learn_from(trajs)
    dropped = list(read_transcripts(path))[3:]
    assert [(r["step"], r["dropped"], r["trained_tokens"]) for r in dropped] == [(2, True, 0)] * 3
    # A run resumed from step 1's checkpoint plays step 2 again: its old records go.
    resumed = make_algorithm("grpo", policy, kwargs, config)
    resumed.step = 1
    for t, reward in zip(trajs, [1.0, 0.0, 1.0, 0.0], strict=True):
        t.reward = reward
    resumed.learn_from(trajs)
    steps = [(r["step"], "dropped" in r) for r in read_transcripts(path)]
    assert steps == [(1, False)] * 3 + [(2, False)] * 3


# --------------------------------------------------------------------------------------
# The page in a real browser
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered(policy, tmp_path_factory):
    """A page from a real rollout (4 episodes), an oracle-like episode and a hostile one."""
    from algorithms.rollout import RolloutEngine, Sampling

    engine = RolloutEngine(
        policy, {"dataset": SAMPLES, "retriever": KeywordRetriever(), "max_turns": 3}
    )
    trajs = engine.collect([0, 1], 2, sampling=Sampling(max_turn_tokens=6, seed=0))
    tok = policy.tokenizer
    hostile = handmade(tok, [HOSTILE, ANSWER_TURN], [f"\n<result>\n{HOSTILE}\n</result>\n"],
                       {"em": 0.0, "hops": 3, "searches": 1, "question": HOSTILE},
                       prompt=HOSTILE)  # fmt: skip
    records = [transcript_record(t, tok, source="rollout") for t in trajs]
    records += [transcript_record(oracle_like(tok), tok, source="oracle")]
    leaky = oracle_like(tok)
    mask = list(leaky.loss_mask)
    mask[leaky.turn_spans[0][1] + 4] = 1  # a retrieved token trained on: the bug to see
    records += [transcript_record(leaky, tok, source="leaky", loss_mask=mask, step=1)]
    records += [transcript_record(hostile, tok, source="hostile", extra={"question": HOSTILE})]
    run = tmp_path_factory.mktemp("run")
    write_transcripts(run / "transcripts" / f"eval{SUFFIX}", records)
    assert main(["view", str(run)]) == 0
    return run / "view.html", records


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromedriver (apt-get install chromium "
                    "chromium-driver; `make` installs them)")  # fmt: skip
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage"):  # fmt: skip
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    # Collect script errors from before the page's first script runs.
    driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {"source": "window.__errors = []; window.addEventListener('error', "
                   "e => window.__errors.push(String(e.message)));"},
    )  # fmt: skip
    yield driver
    driver.quit()


EPISODE_STATE = """return [...document.querySelectorAll('section.episode')].map(s => [
  Number(s.dataset.index), Number(s.dataset.trained),
  s.querySelectorAll('span.tok.T').length,
  Number(s.querySelector('.trained-count').textContent)]);"""


def test_the_page_loads_cleanly_and_shows_the_loss_masks_trained_tokens(rendered, browser):
    page, records = rendered
    browser.get(page.as_uri())
    assert browser.execute_script("return window.__errors") == []
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []
    assert browser.execute_script("return window.__pwned") is None
    state = browser.execute_script(EPISODE_STATE)
    assert sorted(i for i, *_ in state) == list(range(len(records)))
    for index, data_trained, spans, shown in state:
        expected = sum(records[index]["loss_mask"])
        assert data_trained == spans == shown == expected, index
    assert sum(s[1] for s in state) > 0
    # An evaluation trains nothing: its mask-1 tokens are not called "trained".
    labels = browser.execute_script(
        "return [...document.querySelectorAll('section.episode')].map(s => [Number("
        "s.dataset.index), s.querySelector('.meta').textContent.includes('not trained')])"
    )
    assert {i: said for i, said in labels} == {
        i: r["step"] is None for i, r in enumerate(records) if i in dict(labels)
    }
    assert any(said for _, said in labels) and not all(said for _, said in labels)
    outlined = (
        "return [...document.querySelectorAll('span.leaked')]"
        ".map(s => [s.closest('section').dataset.index, s.className])"
    )
    leaky = str(next(i for i, r in enumerate(records) if r["source"] == "leaky"))
    assert browser.execute_script(outlined) == [[leaky, "tok T leaked"]]
    # The hostile text is shown as text, not run or parsed as markup.
    titles = browser.execute_script(
        "return [...document.querySelectorAll('section.episode h2')].map(h => h.textContent)"
    )
    assert any(title.endswith(HOSTILE) for title in titles)
    bold = "return [...document.querySelectorAll('b')].some(b => b.textContent === 'bold')"
    assert browser.execute_script(bold) is False


def test_the_filters_show_the_matching_episodes(rendered, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    page, records = rendered
    browser.get(page.as_uri())

    def shown(name, value):
        Select(browser.find_element(By.ID, f"filter-{name}")).select_by_value(value)
        indices = sorted(i for i, *_ in browser.execute_script(EPISODE_STATE))
        count = browser.find_element(By.ID, "shown").get_attribute("data-count")
        assert int(count) == len(indices)
        return indices

    em1 = [i for i, r in enumerate(records) if r.get("em") == 1.0]
    assert em1 and shown("em", "1") == em1
    two_hops = [i for i, r in enumerate(records) if r.get("em") == 1.0 and r.get("hops") == 2]
    assert shown("hops", "1") == em1 and shown("hops", "2") == two_hops == []
    shown("em", "")
    assert shown("hops", "2") == [i for i, r in enumerate(records) if r.get("hops") == 2]
    assert browser.execute_script("return window.__errors") == []
