import pytest

from research_env.rewards import (
    EpisodeRecord,
    SearchR1Reward,
    SupportingDocCredit,
    exact_match,
    f1_score,
    get_reward,
    normalize_answer,
    research_reward,
)


def test_normalize_answer():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("An apple, a pear") == "apple pear"


def test_exact_match_max_over_golds():
    assert exact_match("the Velmora", ["Qastrin", "velmora"]) == 1.0
    assert exact_match("Velmora Q", ["Velmora"]) == 0.0
    assert exact_match(None, ["x"]) == 0.0


def test_f1_by_hand():
    # pred tokens: [velmora, qastrin, jr], gold: [velmora, qastrin]
    # overlap 2, precision 2/3, recall 1 -> F1 = 2*(2/3)*1/(2/3+1) = 0.8
    assert f1_score("Velmora Qastrin Jr.", ["Velmora Qastrin"]) == pytest.approx(0.8)
    # max over golds: second gold matches exactly
    assert f1_score("Qastrin", ["Velmora Qastrin", "Qastrin"]) == 1.0
    # repeated tokens count with multiplicity: pred [a, a], gold [a] -> overlap 1,
    # precision 1/2, recall 1 -> 2/3
    assert f1_score("a a", ["a"]) == 0.0  # "a" is an article and vanishes
    assert f1_score("x x", ["x"]) == pytest.approx(2 / 3)


def test_yes_no_only_exact():
    assert f1_score("yes indeed", ["yes"]) == 0.0
    assert f1_score("yes", ["yes"]) == 1.0
    assert f1_score("no", ["yes"]) == 0.0


def _record(pred, valid):
    return EpisodeRecord(
        question="q", golden_answers=("Velmora Qastrin",), prediction=pred, format_valid=valid
    )


def test_research_reward():
    assert research_reward(_record("Velmora Qastrin", True)) == 1.0
    assert research_reward(_record("Qastrin", True)) == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert research_reward(_record("wrong", True)) == 0.1
    assert research_reward(_record("Velmora Qastrin", False)) == 0.0


def test_search_r1_reward_plain_and_shaped():
    plain = get_reward("search-r1")
    assert plain(_record("velmora qastrin", False)) == 1.0
    assert plain(_record("Qastrin", True)) == 0.0
    shaped = SearchR1Reward(structure_format_score=0.2, final_format_score=0.1, retrieval_score=0.1)
    assert shaped(_record("Velmora Qastrin", True)) == 1.0
    assert shaped(_record("Velmora Qastrin", False)) == pytest.approx(0.8)
    assert shaped(_record("wrong", False)) == pytest.approx(0.1)
    rec = _record("wrong", True)
    assert shaped(rec) == pytest.approx(0.2)
    rec.retrieved_texts.append('"Doc"\nVelmora Qastrin was born in 1900.')
    assert shaped(rec) == pytest.approx(0.3)


def test_supporting_doc_credit_by_hand():
    reward = get_reward("research+support")
    rec = _record("wrong", True)
    rec.metadata = {"supporting_doc_ids": ["d1", "d2"]}
    assert reward(rec) == pytest.approx(0.1)  # research's floor, no evidence found
    rec.retrieved_doc_ids = ["d9", "d2", "d2"]  # one of two, a repeat counts once
    assert reward(rec) == pytest.approx(0.1 + 0.2 * 0.5)
    rec.retrieved_doc_ids.append("d1")
    rec.prediction = "Velmora Qastrin"
    assert reward(rec) == pytest.approx(1.0 + 0.2)
    rec.format_valid = False  # malformed: no credit at all
    assert reward(rec) == 0.0
    plain = _record("Qastrin", True)  # no supporting ids: the base reward unchanged
    assert SupportingDocCredit(weight=0.5)(plain) == research_reward(plain)


def test_support_reward_takes_its_base_and_weight_from_reward_kwargs():
    evidence = get_reward("support", {"base": "em", "weight": 0.5})
    rec = _record("wrong", True)
    rec.metadata = {"supporting_doc_ids": ["d1", "d2"]}
    assert evidence(rec) == 0.0  # no format credit under an EM base
    rec.retrieved_doc_ids = ["d1"]
    assert evidence(rec) == pytest.approx(0.5 * 0.5)
    rec.prediction = "Velmora Qastrin"
    assert evidence(rec) == pytest.approx(1.0 + 0.25)
    default = get_reward("support")  # research + 0.2 x recall, as research+support
    assert default(rec) == get_reward("research+support")(rec)
    with pytest.raises(ValueError, match="unknown base 'nope'"):
        get_reward("support", {"base": "nope"})
    with pytest.raises(ValueError, match=r"weight must be in \[0, 10\]"):
        get_reward("support", {"weight": -1})


def test_unknown_reward_lists_choices():
    with pytest.raises(ValueError, match="research"):
        get_reward("nope")
    assert get_reward(lambda r: 0.5)(_record("x", True)) == 0.5
