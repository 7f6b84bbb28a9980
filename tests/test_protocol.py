import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from research_env.protocol import (
    FORMAT_VIOLATIONS,
    format_violation,
    is_valid_format,
    last_boxed,
    parse_turn,
)


def test_search_turn_uses_last_complete_query():
    turn = parse_turn(
        "<think>hm</think><search>first</search> and <search>  second\n query </search>"
    )
    assert turn.kind == "search"
    assert turn.query == "second query"


def test_unclosed_search_is_invalid():
    assert parse_turn("<search>never closed").kind == "invalid"
    assert parse_turn("plain words").kind == "invalid"


def test_answer_takes_boxed_content_with_nested_braces():
    turn = parse_turn("<answer>So it is \\boxed{x^{2} + 1}</answer>")
    assert turn.kind == "answer"
    assert turn.answer == "x^{2} + 1"
    assert turn.boxed


def test_answer_without_box_uses_whole_text():
    turn = parse_turn("<answer> Pellmarin </answer>")
    assert turn.answer == "Pellmarin"
    assert not turn.boxed


def test_answer_wins_over_search_in_same_turn():
    turn = parse_turn("<search>q</search><answer>\\boxed{a}</answer>")
    assert turn.kind == "answer" and turn.answer == "a"


def test_conflicting_answers_are_flagged():
    assert parse_turn("<answer>\\boxed{a}</answer><answer>\\boxed{b}</answer>").conflicting_answers
    same = parse_turn("<answer>\\boxed{a}</answer><answer>\\boxed{a}</answer>")
    assert same.n_answers == 2 and not same.conflicting_answers


def test_answer_cut_off_by_budget_still_answers():
    turn = parse_turn("<think>x</think><answer>The answer is \\boxed{Vask}")
    assert turn.kind == "answer" and turn.answer == "Vask"


def test_last_boxed():
    assert last_boxed("\\boxed{a} then \\boxed{b}") == "b"
    assert last_boxed("\\boxed{a} then \\boxed{unclosed") == "a"
    assert last_boxed("nothing") is None


GOOD = (
    "<think>plan</think><search>q1</search>\n<result>\nDoc 1\n</result>\n"
    "<think>more</think><search>q2</search>\n<result>\nDoc 2\n</result>\n"
    "<think>done</think><answer>The answer is \\boxed{X}</answer>"
)


def test_valid_format_strict():
    assert is_valid_format(GOOD)


def test_invalid_formats_strict():
    assert not is_valid_format(GOOD.replace("\\boxed{X}", "X"))  # no box
    assert not is_valid_format(GOOD.replace("<think>done</think>", "<think>done"))  # unpaired
    assert not is_valid_format(GOOD + "<answer>\\boxed{Y}</answer>")  # two answers
    # A search with no result after it.
    assert not is_valid_format("<search>q</search><answer>\\boxed{X}</answer>")
    # Result blocks in the wrong order relative to searches.
    assert not is_valid_format(
        "<search>a</search><search>b</search><result>1</result><result>2</result>"
        "<answer>\\boxed{X}</answer>"
    )
    # Answer before the last result.
    assert not is_valid_format("<search>a</search><answer>\\boxed{X}</answer><result>1</result>")


@pytest.mark.parametrize(
    ("response", "mode", "reason"),
    [
        (GOOD, "strict", None),
        ("<think>x</think> just text", "strict", "no_answer"),
        ("<think>x</think><answer>\\boxed{X", "strict", "unclosed_answer"),
        (GOOD + "<answer>\\boxed{Y}</answer>", "strict", "multiple_answers"),
        (GOOD.replace("<think>done</think>", "<think>done"), "strict", "unclosed_think"),
        (GOOD.replace("<think>done</think>", "done</think>"), "strict", "unopened_think"),
        ("<search>q<answer>\\boxed{X}</answer>", "strict", "unbalanced_search"),
        ("<search>q</search><answer>\\boxed{X}</answer>", "strict", "search_without_result"),
        (
            "<search>a</search><search>b</search><result>1</result><result>2</result>"
            "<answer>\\boxed{X}</answer>",
            "strict",
            "search_without_result",
        ),
        ("<result>1</result><answer>\\boxed{X}</answer>", "strict", "stray_result"),
        (
            "<search>a</search><answer>\\boxed{X}</answer><result>1</result>",
            "strict",
            "answer_before_result",
        ),
        (GOOD.replace("\\boxed{X}", "X"), "strict", "unboxed_answer"),
        ("<answer>X</answer>", "loose", None),
        ("no answer", "loose", "no_answer"),
        (17, "strict", "not_text"),
    ],
)
def test_format_violation_names_the_rule_broken(response, mode, reason):
    assert format_violation(response, mode) == reason
    assert is_valid_format(response, mode) == (reason is None)
    assert reason is None or reason in FORMAT_VIOLATIONS


def test_loose_format_needs_only_one_answer():
    assert is_valid_format("<answer>X</answer>", mode="loose")
    assert not is_valid_format("no answer", mode="loose")
    assert not is_valid_format("<answer>X</answer><answer>Y</answer>", mode="loose")


def test_result_tag_is_configurable():
    text = GOOD.replace("result>", "information>")
    assert not is_valid_format(text)
    assert is_valid_format(text, result_tag="information")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parser_never_raises_on_arbitrary_text(text):
    turn = parse_turn(text)
    assert turn.kind in ("search", "answer", "invalid")
    assert isinstance(is_valid_format(text), bool)


tag = st.sampled_from(
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
        "}",
        "{",
        "x",
        " ",
        "\x00",
        "\ud800",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(tag, max_size=40))
def test_parser_never_raises_on_tag_soup(parts):
    text = "".join(parts)
    turn = parse_turn(text)
    if turn.kind == "search":
        assert turn.query is not None and "\ud800" not in turn.query
    assert isinstance(is_valid_format(text, mode="strict"), bool)
    for mode in ("strict", "loose"):
        reason = format_violation(text, mode)
        assert (reason is None) == is_valid_format(text, mode)
        assert reason is None or reason in FORMAT_VIOLATIONS


def test_huge_and_odd_inputs():
    assert parse_turn("<search>" + "a" * 5_000_000 + "</search>").query == "a" * 1024
    assert parse_turn(None).kind == "invalid"  # type: ignore[arg-type]
    assert parse_turn("<search>a\x00b</search>").query == "ab"
