"""The protocol parser on hostile turns: linear-time parsing, same answers as before.

The parser used to find blocks with lazy regexes over the whole turn and scan every box
to the end of the answer, which took 34 s on ``"<answer>" * 16000``. The reference below
is that implementation, kept only here to prove the linear one gives identical results.
The hostile inputs are a megabyte each: the old parser needs minutes on any of them,
so a regression shows as a suite that no longer finishes.
"""

import re

import gymnasium as gym
from hypothesis import given, settings
from hypothesis import strategies as st

import research_env  # noqa: F401  (registers the env)
from research_env.protocol import (
    ANSWER_OPEN,
    MAX_QUERY_CHARS,
    is_valid_format,
    last_boxed,
    parse_turn,
)

# --- the reference: the quadratic implementation this replaced -------------------------

_REF_SEARCH = re.compile(r"<search>(.*?)</search>", re.DOTALL)
_REF_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def ref_last_boxed(text):
    start = text.rfind("\\boxed{")
    while start != -1:
        depth = 0
        body_start = start + len("\\boxed{")
        for i in range(body_start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                if depth == 0:
                    return text[body_start:i]
                depth -= 1
        start = text.rfind("\\boxed{", 0, start)
    return None


def ref_parse(text):
    """(kind, query, answer, boxed, n_answers, conflicting) as the old parser gave them."""
    answers = _REF_ANSWER.findall(text)
    if not answers:
        open_at = text.rfind(ANSWER_OPEN)
        if open_at != -1:
            answers = [text[open_at + len(ANSWER_OPEN) :]]
    if answers:
        extracted = []
        for a in answers:
            boxed = ref_last_boxed(a)
            extracted.append((boxed.strip(), True) if boxed is not None else (a.strip(), False))
        final, boxed = extracted[-1]
        conflicting = len({a for a, _ in extracted}) > 1
        return ("answer", None, final, boxed, len(answers), conflicting)
    queries = _REF_SEARCH.findall(text)
    if queries:
        query = re.sub(r"\s+", " ", queries[-1]).strip()[:MAX_QUERY_CHARS]
        return ("search", query, None, False, 0, False)
    return ("invalid", None, None, False, 0, False)


def ref_answer_count_ok(text):
    """The one part of ``is_valid_format`` that used the regex."""
    return len(_REF_ANSWER.findall(text)) == 1


def as_tuple(turn):
    return (
        turn.kind,
        turn.query,
        turn.answer,
        turn.boxed,
        turn.n_answers,
        turn.conflicting_answers,
    )


# --- identical results on tag soup ------------------------------------------------------

piece = st.sampled_from(
    [
        "<think>",
        "</think>",
        "<search>",
        "</search>",
        "<answer>",
        "</answer>",
        "<result>",
        "</result>",
        "\\boxed{",
        "\\boxed",
        "{",
        "}",
        "{}",
        "x",
        "y",
        " ",
        "\n",
        "<",
        "/",
        ">",
    ]
)
soup = st.lists(piece, max_size=60).map("".join)


@settings(max_examples=500, deadline=None)
@given(soup)
def test_parse_matches_reference_on_tag_soup(text):
    assert as_tuple(parse_turn(text)) == ref_parse(text)
    assert last_boxed(text) == ref_last_boxed(text)


@settings(max_examples=300, deadline=None)
@given(soup, soup, st.integers(0, 3000))
def test_parse_matches_reference_on_long_text(head, tail, padding):
    # Long answers take the vectorised brace matcher: it must agree with the short path.
    text = head + "x{}" * padding + tail
    assert last_boxed(text) == ref_last_boxed(text)
    assert as_tuple(parse_turn(text)) == ref_parse(text)


@settings(max_examples=200, deadline=None)
@given(soup, st.integers(0, 80), soup)
def test_parse_matches_reference_with_many_blocks(head, n, tail):
    # Past a few dozen blocks the parser switches from str.find jumps to the regex.
    blocks = "".join(f"<answer>{i % 3}</answer>x<search>{i}</search>" for i in range(n))
    for text in (head + blocks + tail, head + blocks.replace("answer", "search") + tail):
        assert as_tuple(parse_turn(text)) == ref_parse(text)


@settings(max_examples=300, deadline=None)
@given(soup)
def test_format_check_matches_reference(text):
    # A well-formed prefix makes the strict checks reach the answer and box tests.
    response = "<think>a</think><search>q</search><result>d</result>" + text
    for candidate in (text, response):
        if not ref_answer_count_ok(candidate):
            assert not is_valid_format(candidate, mode="loose")
            assert not is_valid_format(candidate, mode="strict")
        else:
            assert is_valid_format(candidate, mode="loose") == (candidate.count(ANSWER_OPEN) == 1)


def test_box_closing_rules_on_both_paths():
    long = "x" * 5000
    for pad in ("", long):
        assert last_boxed(pad + "\\boxed{a{b}c}") == "a{b}c"
        assert last_boxed(pad + "\\boxed{a}\\boxed{b") == "a"  # the later box never closes
        assert last_boxed(pad + "\\boxed{a\\boxed{b}") == "b"
        assert last_boxed(pad + "\\boxed{a}}}\\boxed{{b}") == "a"
        assert last_boxed(pad + "\\boxed{") is None
        assert last_boxed(pad + "\\boxed{\ud800}") == "\ud800"  # unclean text is fine too
    assert last_boxed("\\boxed{" + long + "}") == long


# --- hostile turns: each a megabyte --------------------------------------------------------

MB = 1_000_000


def test_unclosed_answer_tags():
    turn = parse_turn("<answer>" * (MB // 8))
    assert (turn.kind, turn.answer, turn.n_answers) == ("answer", "", 1)
    assert not is_valid_format("<answer>" * (MB // 8), mode="loose")


def test_unclosed_search_tags():
    assert parse_turn("<search>" * (MB // 8)).kind == "invalid"
    turn = parse_turn("<search>q</search>" + "<search>" * (MB // 8))
    assert (turn.kind, turn.query) == ("search", "q")


def test_many_unclosed_boxes():
    turn = parse_turn("<answer>" + "\\boxed{" * (MB // 7))
    assert turn.kind == "answer" and not turn.boxed
    assert turn.answer == ("\\boxed{" * (MB // 7)).strip()
    turn = parse_turn("<answer>\\boxed{42}" + "\\boxed{" * (MB // 7))
    assert turn.boxed and turn.answer == "42"


def test_brace_dense_answers():
    dense = "{}" * (MB // 2)
    turn = parse_turn("<answer>\\boxed{" + dense + "}</answer>")
    assert turn.boxed and turn.answer == dense
    nested = "{" * (MB // 2) + "}" * (MB // 2)
    turn = parse_turn("<answer>\\boxed{" + nested + "}</answer>")
    assert turn.boxed and turn.answer == nested
    # One brace short: the box never closes and the whole answer is the prediction.
    turn = parse_turn("<answer>\\boxed{" + nested[:-1] + "}</answer>")
    assert not turn.boxed


def test_many_distinct_answers_that_agree():
    text = "".join(f"<answer>{i}\\boxed{{a}}</answer>" for i in range(MB // 25))
    turn = parse_turn(text)
    assert (turn.answer, turn.n_answers, turn.conflicting_answers) == ("a", MB // 25, False)
    turn = parse_turn(text + "<answer>\\boxed{b}</answer>")
    assert turn.answer == "b" and turn.conflicting_answers


def test_env_steps_through_hostile_turns():
    env = gym.make("ReSearch-MultiHop-v0")
    for action in ("<answer>" * (MB // 8), "<answer>" + "\\boxed{" * (MB // 7)):
        env.reset(seed=0)
        _, reward, terminated, _, info = env.step(action)
        assert terminated and reward == 0.0 and not info["format_valid"]
    env.reset(seed=0)
    _, reward, terminated, truncated, _ = env.step("<search>" * (MB // 8))
    assert not terminated and not truncated and reward == 0.0
