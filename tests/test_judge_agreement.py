"""benchmarks/judge_agreement.py: judge-vs-EM agreement, against numbers worked by hand."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.judge_agreement import agreement, kappa, kappa_interval, main


def test_kappa_by_hand():
    # 4 of 6 agree; both raters accept half the time, so chance agreement is
    # 0.5 * 0.5 + 0.5 * 0.5 = 0.5 and kappa = (4/6 - 0.5) / (1 - 0.5) = 1/3.
    pairs = [(1, 1), (1, 0), (0, 0), (0, 0), (0, 1), (1, 1)]
    assert kappa(pairs) == pytest.approx(1 / 3)
    # EM accepts 1 of 4, the judge 3 of 4, they agree on 2: chance is
    # 0.25 * 0.75 + 0.75 * 0.25 = 0.375, kappa = (0.5 - 0.375) / 0.625 = 0.2.
    assert kappa([(1, 1), (0, 1), (0, 1), (0, 0)]) == pytest.approx(0.2)
    assert kappa([(1, 1), (0, 0)]) == 1.0
    assert kappa([(1, 0), (0, 1)]) == -1.0
    assert math.isnan(kappa([(0, 0), (0, 0)]))  # one answer from both: chance is 1
    low, high = kappa_interval(pairs)
    assert -1.0 <= low <= 1 / 3 <= high <= 1.0
    assert kappa_interval(pairs) == (low, high)  # seeded: a re-run prints the same


def test_agreement_counts_by_hand_and_leaves_unanswered_out():
    def episode(em, verdict, prediction="x"):
        return {"em": em, "judge": verdict, "prediction": prediction}

    episodes = [episode(1, 1), episode(1, 0), episode(0, 0), episode(0, 0), episode(0, 1),
                episode(1, 1), episode(0, 0, prediction="")]  # fmt: skip
    row = agreement("bm25", episodes)
    assert (row["episodes"], row["answered"]) == (7, 6)
    assert (row["both_accept"], row["judge_only"], row["em_only"], row["neither"]) == (2, 1, 1, 2)
    assert row["agreement"] == pytest.approx(4 / 6)
    assert row["kappa"] == pytest.approx(1 / 3)
    assert row["em_rate"] == row["judge_rate"] == 0.5
    assert row["accept_change"] == 0.0
    # Wilson, 4 of 6 at z = 1.96: centre 0.6016, half-width 0.3016.
    assert row["agreement_interval"] == pytest.approx([0.3000, 0.9032], abs=1e-3)


def test_main_judges_every_answer_once_and_writes_rows(tmp_path, capsys):
    def episode(i, em, prediction):
        return {"question_id": f"q{i}", "question": f"Who wrote book {i}?",
                "golden_answers": [f"Author {i}"], "prediction": prediction, "em": em}  # fmt: skip

    played = {
        "bm25": [episode(0, 1.0, "Author 0"), episode(1, 0.0, "someone"), episode(2, 0.0, "")],
        "empty": [episode(0, 0.0, "nobody"), episode(1, 0.0, "")],
    }
    source = tmp_path / "played.json"
    source.write_text(json.dumps({"episodes": played}))
    out = tmp_path / "agreement.json"
    assert main(["--episodes", str(source), "--judge", "tiny-random", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["name"] for r in rows] == ["bm25", "empty", "all"]
    assert [(r["episodes"], r["answered"]) for r in rows] == [(3, 2), (2, 1), (5, 3)]
    for r in rows:
        counts = r["both_accept"] + r["judge_only"] + r["em_only"] + r["neither"]
        assert counts == r["answered"]
    assert [r["em_rate"] for r in rows] == pytest.approx([1 / 2, 0.0, 1 / 3])
    assert "| bm25 | 2 of 3 |" in capsys.readouterr().out


def test_a_file_without_episodes_is_refused_with_what_was_expected(tmp_path):
    bad = tmp_path / "rows.json"
    bad.write_text(json.dumps({"rows": []}))
    with pytest.raises(SystemExit, match=r"holds no episodes.*simulated_search --out"):
        main(["--episodes", str(bad), "--judge", "tiny-random"])
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps([{"question": "q", "em": 0.0}]))
    with pytest.raises(SystemExit, match="lack golden_answers, prediction"):
        main(["--episodes", str(partial), "--judge", "tiny-random"])
