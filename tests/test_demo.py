"""`research-env demo --quick` end to end with a tiny model: the report and its parts."""

import re

import pytest

from research_app.cli import main
from research_env.intervals import rate_half_width


def test_demo_quick_writes_report(tmp_path):
    out = tmp_path / "run"
    code = main(
        ["demo", "--quick", "--model", "tiny-random", "--out", str(out),
         "--eval-questions", "2", "--baseline-questions", "1", "--sft-steps", "1", "--steps", "1",
         "--untrained-turn-tokens", "3"]
    )  # fmt: skip
    assert code == 0
    report = (out / "report.md").read_text()
    # The untrained agent's turns get their own, smaller budget, and the report says so.
    assert "untrained_turn_tokens=3" in report and "turn_tokens=96" in report
    assert "The untrained agent's turns were cut at 3 tokens (every other row: 96)" in report
    for row in (
        "direct answer (no search) |",
        "naive RAG (retrieve once) |",
        "search agent: untrained |",
        "search agent: warm start |",
        "search agent: after GRPO |",
    ):
        assert f"| {row}" in report, row
    # The base model's rows are scored on --baseline-questions, the warm start and the
    # trained policy on --eval-questions (the paired change needs the same questions).
    for row, n in (("direct answer (no search)", 1), ("search agent: untrained", 1),
                   ("search agent: warm start", 2), ("search agent: after GRPO", 2)):  # fmt: skip
        assert re.search(rf"^\| {re.escape(row)} \| {n} \|", report, re.M), row
    assert re.search(r"^\| search agent: after GRPO, hops=\d \| 2 \|", report, re.M)
    # EM's interval is Wilson's (research_env.intervals): not "± 0.000" at EM 0 on 1 question.
    direct = re.search(
        r"^\| direct answer \(no search\) \| 1 \| ([\d.]+) \| ([\d.]+) \|", report, re.M
    )
    assert direct and direct[2] == f"{rate_half_width(float(direct[1]), 1):.3f}" != "0.000"
    assert "Path: **warm start + RL**" in report
    assert "**What RL did:** EM changed by" in report and "over the same 2 dev questions" in report
    # RL's change per hop count, EM and searches, each question counted once.
    per_hop = report.split("## What RL changed, per hop count", 1)[1].split("\n## ", 1)[0]
    counts = [int(n) for n in re.findall(r"^\| \d \| (\d+) \| [\d.]+ -> ", per_hop, re.M)]
    assert sum(counts) == 2, per_hop
    assert "## Example transcripts" in report and "Question: " in report
    assert "### search agent: untrained" in report and "(gold: " in report
    for png in ("curves_sft.png", "curves_rl.png"):
        data = (out / png).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000
    # The token view: every evaluated episode (3 stages x 1 question, 2 x 2) and the trained
    # ones.
    assert "## Token view" in report and "[view.html](view.html)" in report
    from algorithms.transcripts import read_transcripts

    evals = list(read_transcripts(out / "transcripts" / "eval.tokens.jsonl"))
    assert len(evals) == 7 and len({e["source"] for e in evals}) == 5
    longest = {e["source"]: max(map(len, re.findall("1+", "".join(map(str, e["loss_mask"])))),
                                default=0) for e in evals}  # fmt: skip
    assert longest["search agent: untrained"] == 3  # the random model runs to the budget
    assert longest["search agent: warm start"] > 3
    trained = list(read_transcripts(out / "grpo" / "transcripts" / "train.tokens.jsonl"))
    assert trained and all(r["source"] == "grpo training" and r["step"] == 1 for r in trained)
    assert (out / "sft" / "transcripts" / "train.tokens.jsonl").exists()
    assert "search agent: after GRPO" in (out / "view.html").read_text()
    # The multi-seed ablation of RESULTS.md, quoted as the reference result.
    assert "## Reference result (from benchmarks/RESULTS.md)" in report
    assert "### Multi-seed ablation: GRPO, PPO and REINFORCE" in report
    assert "research-env ablate --from" in report
    # Each stage's peak resident memory, in the report.
    assert "## Memory" in report and "| stage | peak resident MiB |" in report
    for stage in ("load and evaluate the base model", "warm start (SFT)", "RL (grpo)",
                  "evaluate after RL"):  # fmt: skip
        assert re.search(rf"^\| {re.escape(stage)} \| [\d,]+ \|$", report, re.M), stage


def test_running_mean_of_the_curves():
    from algorithms.trainer.curves import running_mean

    assert running_mean([1.0, 2.0, 3.0, 4.0, 8.0], 3) == [1.0, 1.5, 2.0, 3.0, 5.0]


def test_question_counts_pair_rl_start_and_end():
    from research_app.demo import FULL, question_counts

    # Warm start path: base rows on 10, warm start and trained policy on 100.
    assert question_counts(FULL, 500, no_warmstart=False) == (100, 10, 10)
    # Pure RL: RL starts from the untrained agent, so it is scored on the trained policy's 100.
    assert question_counts(FULL, 500, no_warmstart=True) == (100, 10, 100)
    # Never more than the dev split, and baselines never more than the evaluation.
    assert question_counts(FULL, 20, no_warmstart=False) == (20, 10, 10)
    assert question_counts(FULL, 8, no_warmstart=True) == (8, 8, 8)
    assert question_counts({"eval_questions": 5, "baseline_questions": 9}, 50, False) == (5, 5, 5)


def test_rl_question_range_by_hops():
    import pytest

    from research_app.demo import _with_hops
    from research_env.data.types import QASample

    samples = [QASample(f"q{h}", "?", ("a",), {"hops": h}) for h in (1, 2, 2, 3, 4)]
    samples.append(QASample("free", "?", ("a",), {}))  # says nothing about hops: kept
    ids = lambda kept: [q.id for q in kept]  # noqa: E731
    assert ids(_with_hops(samples, 1, 2)) == ["q1", "q2", "q2", "free"]
    assert ids(_with_hops(samples, 2, 2)) == ["q2", "q2", "free"]
    assert ids(_with_hops(samples, 3, 0)) == ["q3", "q4", "free"]
    with pytest.raises(SystemExit, match="widen"):
        _with_hops(samples[:1], 2, 3)


def test_an_unknown_rl_reward_fails_before_any_work(tmp_path):
    import pytest

    with pytest.raises(SystemExit, match=r"--rl-reward: unknown reward .nope.*research"):
        main(["demo", "--rl-reward", "nope", "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_rl_change_is_the_paired_interval_by_hand():
    import pytest

    from research_app.demo_change import Stage, rl_change

    before = Stage("warm", {}, {}, scores=[1, 0, 0, 1, 0, 0])
    after = Stage("rl", {}, {}, scores=[1, 1, 0, 1, 1, 0])
    change = rl_change(before, after)
    # Differences 0,1,0,0,1,0: mean 1/3, sd sqrt((4*(1/9) + 2*(4/9))/5) = 0.5164,
    # half-width t(5) 2.571 * 0.5164 / sqrt(6) = 0.542: zero is inside.
    assert change.mean == pytest.approx(1 / 3) and change.n == 6
    assert change.half_width == pytest.approx(2.571 * 0.5164 / 6**0.5, abs=1e-3)
    assert not change.beyond_noise and "inside the interval" in change.sentence()
    after_all = Stage("rl", {}, {}, scores=[1.0] * 6)
    many = rl_change(Stage("w", {}, {}, scores=[0.0] * 3 + [1.0] * 3), after_all)
    assert many.beyond_noise is False  # differences 1,1,1,0,0,0: mean 0.5 +- 0.575
    clear = rl_change(
        Stage("w", {}, {}, scores=[0.0] * 30), Stage("r", {}, {}, scores=[1.0] * 29 + [0.0])
    )
    assert clear.beyond_noise and "outside the interval" in clear.sentence()
    with pytest.raises(ValueError, match="same, non-empty"):
        rl_change(before, Stage("rl", {}, {}, scores=[1.0]))


def test_rl_change_per_hop_count_is_paired_by_hand():
    """EM and searches per hop count, each paired over that hop count's questions."""
    import pytest

    from research_app.demo_change import Stage, changes_by_hops, hop_change_lines

    hops = [1, 2, 1, 2, 2]
    before = Stage("warm", {}, {}, scores=[0, 0, 1, 0, 0], searches=[2, 2, 1, 3, 2], hops=hops)
    after = Stage("rl", {}, {}, scores=[1, 0, 1, 1, 0], searches=[1, 3, 1, 3, 4], hops=hops)
    one, two = changes_by_hops(before, after)
    assert (one.hops, one.n, two.hops, two.n) == (1, 2, 2, 3)
    # One hop: EM differences 1, 0 (mean 0.5, sd 0.7071, t(1) 12.706 -> 6.353);
    # searches -1, 0 (mean -0.5, same half-width).
    assert (one.em.before, one.em.after, one.em.change) == (0.5, 1.0, 0.5)
    assert one.em.half_width == pytest.approx(12.706 * 0.70711 / 2**0.5, abs=1e-3)
    assert one.searches.change == -0.5 and one.searches.verdict == "inside"
    # Two hops: searches 2->3, 3->3, 2->4: differences 1, 0, 2 (mean 1, sd 1, t(2) 4.303).
    assert (two.searches.before, two.searches.after) == (
        pytest.approx(7 / 3),
        pytest.approx(10 / 3),
    )
    assert two.searches.half_width == pytest.approx(4.303 / 3**0.5, abs=1e-3)
    table = hop_change_lines([one, two], "warm", "rl")
    assert table[-1].startswith("| 2 | 3 | 0.000 -> 0.333 (+0.333, ")
    assert "2.333 -> 3.333 (+1.000, -1.484 to +3.484) | inside |" in table[-1]
    shuffled = Stage("rl", {}, {}, scores=[0] * 5, searches=[0] * 5, hops=[2, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="not scored on the same questions"):
        changes_by_hops(before, shuffled)
    with pytest.raises(ValueError, match="must be per question"):
        changes_by_hops(Stage("w", {}, {}, scores=[1.0]), after)


def test_the_reference_section_is_cut_from_results_and_demoted(tmp_path):
    from research_app.demo_report import demote_headings, results_section

    path = tmp_path / "RESULTS.md"
    path.write_text("# R\n\n## Other\nx\n\n## Ablation\n\ntext\n\n### Table\n\n```\n"
                    "# a shell comment\nresearch-env ablate\n```\n\n## Next\ny\n")  # fmt: skip
    section = results_section(path, "## Ablation")
    assert section == ("## Ablation\n\ntext\n\n### Table\n\n```\n# a shell comment\n"
                       "research-env ablate\n```")  # fmt: skip
    assert demote_headings(section)[0] == "### Ablation"
    assert "#### Table" in demote_headings(section)
    assert "# a shell comment" in demote_headings(section)  # inside the fence: kept
    assert results_section(path, "## Missing") is None
    assert results_section(tmp_path / "absent.md", "## Ablation") is None


def test_demo_warmstart_saves_the_demos_warm_start(tmp_path):
    """``python -m benchmarks.demo_warmstart`` reads the demo's settings through the demo's
    own parser: a hand-made argument list once missed ``--baseline-questions`` and crashed."""
    from algorithms.policy import load_policy
    from benchmarks.demo_warmstart import main as warmstart

    assert warmstart(["--out", str(tmp_path), "--model", "tiny-random", "--steps", "1"]) == 0
    assert load_policy(str(tmp_path / "warm"), device="cpu").model is not None


@pytest.mark.parametrize("how", [["--train-layers", "1"], ["--lora", "4", "--lr", "1e-2"]])
def test_cheaper_warm_starts_train_only_their_part_and_save_a_plain_model(tmp_path, how, capsys):
    """The warm-start alternatives the demo's cost is measured against: the top block only
    (everything below it stays the base model's), or LoRA merged into a plain model."""
    import torch

    from algorithms.policy import load_policy
    from benchmarks.demo_warmstart import main as warmstart

    argv = ["--out", str(tmp_path), "--model", "tiny-random", "--steps", "1", "--eval", "2"]
    assert warmstart([*argv, *how]) == 0
    assert "warm start: EM" in capsys.readouterr().out
    assert not (tmp_path / "warm" / "adapter_config.json").exists()
    base = dict(load_policy("tiny-random", device="cpu").model.named_parameters())
    warm = dict(load_policy(str(tmp_path / "warm"), device="cpu").model.named_parameters())
    assert warm.keys() == base.keys()
    changed = {name for name, p in warm.items() if not torch.equal(p, base[name])}
    last = max(int(name.split(".")[2]) for name in base if name.startswith("model.layers."))
    if how[0] == "--train-layers":
        assert changed and all(
            name.startswith(f"model.layers.{last}.") or "layers" not in name for name in changed
        )
        assert "model.embed_tokens.weight" not in changed
    else:  # LoRA on every projection: merged, each block's projections moved, nothing else
        assert any(".self_attn.q_proj." in name for name in changed)
        assert any(".mlp.down_proj." in name for name in changed)
        assert all("_proj." in name for name in changed)


def test_a_decaying_warm_start_logs_the_learning_rate_each_step_used(tmp_path):
    import json

    from benchmarks.demo_warmstart import main as warmstart

    argv = ["--out", str(tmp_path), "--model", "tiny-random", "--steps", "3"]
    assert warmstart([*argv, "--schedule", "cosine", "--lr", "1e-3"]) == 0
    lines = (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()
    lrs = [json.loads(line)["train/lr"] for line in lines]
    assert lrs[0] == pytest.approx(1e-3) and lrs[0] > lrs[1] > lrs[2]


@pytest.mark.parametrize("native", [True, False])
def test_the_banner_estimates_the_time_for_this_cpu(monkeypatch, native):
    import torch

    import algorithms.precision
    from research_app.demo import expected_time

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(algorithms.precision, "cpu_has_native_bf16", lambda: native)
    full, quick = expected_time(False), expected_time(True)
    if native:
        assert "10-15 minutes" in full and "2-3 minutes" in quick and "bf16" in full
    else:
        assert "20-60 minutes" in full and "no native bf16" in full and "float32" in quick


def test_the_untrained_agent_is_scored_like_the_trained_policy_on_the_pure_rl_path():
    """Without a warm start the untrained agent is RL's starting point, paired with the
    trained policy, so its turns get the same budget whatever --untrained-turn-tokens says."""
    from benchmarks.demo_warmstart import demo_arguments
    from research_app.demo import TURN_TOKENS, _settings

    assert _settings(demo_arguments([]))["untrained_turn_tokens"] == 48
    assert (
        _settings(demo_arguments(["--untrained-turn-tokens", "20"]))["untrained_turn_tokens"] == 20
    )
    pure = demo_arguments(["--no-warmstart", "--untrained-turn-tokens", "20"])
    assert _settings(pure)["untrained_turn_tokens"] == TURN_TOKENS
    with pytest.raises(SystemExit, match="--untrained-turn-tokens must be >= 1, got 0"):
        _settings(demo_arguments(["--untrained-turn-tokens", "0"]))


def test_demo_decodes_with_the_8_bit_copy_when_asked(tmp_path, monkeypatch):
    """--rollout-dtype int8: every evaluation and the RL rollouts decode with the 8-bit
    copy, RL corrects for it with truncated importance sampling, and the report says so."""
    import algorithms.registry

    configs, real = [], algorithms.registry.make_algorithm

    def spy(name, policy, env_kwargs, config, *args, **kwargs):
        configs.append(config)
        return real(name, policy, env_kwargs, config, *args, **kwargs)

    monkeypatch.setattr(algorithms.registry, "make_algorithm", spy)
    out = tmp_path / "run"
    code = main(
        ["demo", "--quick", "--model", "tiny-random", "--out", str(out), "--rollout-dtype",
         "int8", "--eval-questions", "1", "--baseline-questions", "1", "--sft-steps", "1",
         "--steps", "1", "--untrained-turn-tokens", "3"]
    )  # fmt: skip
    assert code == 0
    assert "decode_dtype=int8" in (out / "report.md").read_text()
    (rl,) = configs
    assert rl.rollout.rollout_dtype == "int8" and rl.trainer.tis_cap == 2.0


def test_demo_refuses_an_unknown_decoding_precision(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--rollout-dtype", "int4"])
    assert "invalid choice: 'int4'" in capsys.readouterr().err
