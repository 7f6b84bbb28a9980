"""The README: its "How it fits together" names only things that exist, and every command
line and Python snippet in it runs (in a cheap form declared next to it)."""

from __future__ import annotations

import contextlib
import io
import re
import runpy
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _python_sources() -> str:
    files = [
        *ROOT.glob("research_env/**/*.py"),
        *ROOT.glob("algorithms/**/*.py"),
        *ROOT.glob("research_app/**/*.py"),
    ]
    return "\n".join(f.read_text(encoding="utf-8") for f in files)


def test_how_it_fits_together_names_real_modules_and_functions():
    section = _section("How it fits together")
    names = re.findall(r"`([^`]+)`", section)
    assert len(names) > 20
    sources = _python_sources()
    py_files = {p.name for p in ROOT.glob("**/*.py") if ".venv" not in p.parts}
    for name in names:
        if name.startswith('"'):
            continue  # a registry key, e.g. "grpo"
        if name.endswith("/") or "/" in name:
            assert (ROOT / name).exists(), name
        elif name.endswith(".py"):
            assert name in py_files, name
        else:
            last = name.split(".")[-1]
            defined = re.search(
                rf"^\s*(def|class) {re.escape(last)}\b|^{re.escape(last)} = ", sources, re.M
            )
            assert defined, name


# ---------------------------------------------------------------------------------------
# The README runs as written: every command line and Python snippet in it runs here, in
# README order and in one working folder (later lines use what earlier ones wrote), in a
# cheap form whose substitutions are declared next to the line. A README line without a
# declaration, or a declaration whose line left the README, fails the first test below,
# so a renamed flag breaks a test, not a reader.
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cheap:
    """How the test runs a README line: ``replace`` pairs applied, ``add`` appended, the
    expected exit status, text fed to stdin, and commands run first (``setup``).
    ``parse_only`` (with the reason) checks the line against the command's parser without
    running it; ``elsewhere`` names the test that runs it instead."""

    add: str = ""
    replace: tuple[tuple[str, str], ...] = ()
    status: int = 0
    stdin: str | None = None
    setup: tuple[str, ...] = ()
    parse_only: str = ""
    elsewhere: str = ""


# The tiny random model and small budgets: a training step in seconds.
TINY = "--model tiny-random --set rollout.max_total_tokens=64 --set eval.questions=1"
TINY_EVAL = "--max-turn-tokens 4 --max-total-tokens 40"
TINY_ABLATE = (
    "--set rollout.group_size=2 --set rollout.max_turn_tokens=8 --set rollout.max_total_tokens=48"
)
TINY_SB3 = "--set sb3.n_steps=32 --set sb3.batch_size=32"

COMMANDS: dict[str, Cheap] = {
    "make demo": Cheap(elsewhere="tests/test_demo.py::test_demo_quick_writes_report"),
    "make test": Cheap(elsewhere="the test suite itself"),
    "research-env train --set env.shaping.no_search_multihop=0.5 --set grpo.credit=turn": Cheap(
        add=f"{TINY} --steps 1 --out runs/shaped"
    ),
    "python -m benchmarks.gpu_check": Cheap(elsewhere="tests/test_gpu_check.py (needs CUDA)"),
    "research-env plan --config configs/research-grpo.yaml --model qwen2.5-7b --gpus 8 "
    "--gpu-memory 80GB --set trainer.sharding=fsdp --set trainer.share_prompts=false": Cheap(),
    "torchrun --nproc-per-node 8 -m research_app.cli train --config configs/research-grpo.yaml "
    "--model Qwen/Qwen2.5-7B-Instruct --retriever http://localhost:8000 "
    "--set trainer.sharding=fsdp --set trainer.share_prompts=false": Cheap(
        elsewhere="tests/test_distributed.py (torchrun on 2 CPU ranks; 8 GPUs and a server here)"
    ),
    "research-env data synth --out DIR": Cheap(
        replace=(("DIR", "data/synth"),), add="--n-questions 60 --n-people 120"
    ),
    "research-env data convert SRC --out DIR": Cheap(
        replace=(("SRC", "hotpot_dev_distractor_v1.json"), ("DIR", "data/hotpot"))
    ),
    "research-env data stats SRC": Cheap(replace=(("SRC", "hotpot_dev_distractor_v1.json"),)),
    "research-env data show FILE": Cheap(replace=(("FILE", "data/synth/dev.jsonl"),)),
    "research-env play --index 0": Cheap(stdin="<answer>\\boxed{x}</answer>\n"),
    "research-env eval --policy oracle random --split dev --limit 200": Cheap(
        replace=(("200", "5"),)
    ),
    "research-env eval --model smollm2-135m --limit 50": Cheap(
        replace=(("smollm2-135m", "tiny-random"), ("50", "1")), add=TINY_EVAL
    ),
    "research-env train --algo sft --from oracle --steps 10 --set optim.lr=1e-4 --out runs/warm": (
        Cheap(replace=(("10", "1"),), add=TINY)
    ),
    "research-env train --algo grpo --config configs/cpu-small.yaml --model runs/warm/final "
    "--out runs/x": Cheap(add="--steps 1 --set rollout.max_turn_tokens=8 --set eval.questions=1"),
    "research-env train --out runs/x --resume": Cheap(add="--steps 2"),
    "research-env serve --retriever bm25 --corpus corpus.jsonl --port 8000": Cheap(
        parse_only="a server runs until stopped (tests/test_server.py serves)"
    ),
    "research-env mcp --corpus synthetic --transport http --port 8765": Cheap(
        parse_only="a server runs until stopped (tests/test_mcp.py serves over HTTP)"
    ),
    "research-env demo [--quick] [--no-warmstart] [--algo ppo] [--steps N]": Cheap(
        replace=(("[", ""), ("]", ""), ("N", "1")),
        parse_only="a synopsis; tests/test_demo.py runs the demo",
    ),
    "research-env compare runs/a runs/b": Cheap(
        replace=(("runs/a", "runs/x"), ("runs/b", "runs/x"))
    ),
    "research-env train --algo grpo --out runs/g --set logging.save_transcripts=8": Cheap(
        add=f"{TINY} --steps 1"
    ),
    "research-env view runs/g": Cheap(),
    "research-env eval --policy oracle random --limit 20 --out runs/k3": Cheap(),
    "research-env eval --policy oracle random --limit 20 --top-k 5 --out runs/k5": Cheap(),
    "research-env compare runs/k3 runs/k3": Cheap(),
    "research-env compare runs/k3 runs/k5": Cheap(status=1),
    "research-env compare runs/k3 runs/k5 --force": Cheap(),
    "research-env compare runs/base runs/trained --ignore model": Cheap(
        setup=(
            f"research-env eval --model tiny-random --baselines agent --limit 2 {TINY_EVAL} "
            "--out runs/base",
            f"research-env eval --model runs/x --baselines agent --limit 2 {TINY_EVAL} "
            "--out runs/trained",
        )
    ),
    "research-env eval --policy oracle --limit 20 --controls": Cheap(),
    "research-env eval --suite searchr1 --data-dir data/flashrag --corpus data/wiki18.jsonl "
    "--model runs/x/final --out runs/suite": Cheap(
        parse_only="needs the FlashRAG files and a model; the README's suite snippet and "
        "tests/test_suite.py run the suite on small files"
    ),
    "research-env train --set env.reward=judge+f1 --set "
    "'env.reward_kwargs={url: \"http://localhost:8001/v1\"}'": Cheap(
        parse_only="needs a judge endpoint; tests/test_judge_reward.py runs one on loopback"
    ),
    "research-env eval --policy oracle --limit 20 --retriever brave --retriever-arg max_cost=0.25": (
        Cheap(
            parse_only="needs BRAVE_API_KEY and the internet; tests/test_web_search.py runs "
            "eval against a loopback fake"
        )
    ),
    "research-env eval --model smollm2-135m --baselines agent --limit 20 --controls empty": Cheap(
        replace=(("smollm2-135m", "tiny-random"), ("20", "2")), add=TINY_EVAL
    ),
    "research-env train --algo sb3-ppo --steps 12000 --out runs/sb3-bm25": Cheap(
        replace=(("12000", "64"),), add=TINY_SB3
    ),
    "research-env train --algo sb3-ppo --steps 12000 --retriever empty --out runs/sb3-empty": (
        Cheap(replace=(("12000", "64"),), add=TINY_SB3)
    ),
    "research-env train --algo sb3-dqn --steps 6000 --set env.reward=em --set env.max_turns=3 "
    "--out runs/dqn": Cheap(replace=(("6000", "64"),), add="--set sb3.learning_starts=32"),
    "python benchmarks/structured_ablation.py --seeds 3 --timesteps 12000": Cheap(
        replace=(("3", "1"), ("12000", "64")),
        add="--questions 5 --condition 'bm25: retriever=bm25'",
    ),
    "research-env train --algo sft --from oracle --steps 12 --out runs/warm": Cheap(
        replace=(("12", "1"), ("runs/warm", "runs/warm-12")), add=TINY
    ),
    "research-env ablate --from runs/warm/final --algos grpo ppo reinforce --seeds 3 "
    "--budget-episodes 400 --eval-questions 200 --out runs/ablation": Cheap(
        replace=(
            ("--algos grpo ppo reinforce", "--algos grpo"),
            ("--seeds 3", "--seeds 1"),
            ("400", "2"),
            ("200", "2"),
        ),
        add=TINY_ABLATE,
    ),
    "python -m benchmarks.demo_warmstart --out runs/demo-warm": Cheap(
        add="--model tiny-random --steps 1"
    ),
    "research-env ablate --from runs/demo-warm/warm --config configs/ablation-cpu.yaml --algos "
    "grpo ppo reinforce --seeds 3 --budget-episodes 48 --out runs/ablation-cpu": Cheap(
        replace=(
            ("--algos grpo ppo reinforce", "--algos reinforce"),
            ("--seeds 3", "--seeds 1"),
            ("48", "2"),
        ),
        add=f"--eval-questions 2 {TINY_ABLATE} --set trainer.train_layers=1",
    ),
    "research-env ablate --from runs/demo-warm/warm --config configs/search-dynamic.yaml "
    "--algos grpo --seeds 3 --budget-episodes 96 --eval-questions 200 --out runs/dynamic": Cheap(
        replace=(("--seeds 3", "--seeds 1"), ("96", "2"), ("200", "2")),
        add=f"{TINY_ABLATE} --set trainer.train_layers=1 --set rollout.max_sampling_rounds=2",
    ),
    "research-env ablate --from runs/warm/final --algos grpo --seeds 3 --budget-episodes 400 "
    "--variant em-reward:env.reward=em --variant no-kl:grpo.kl_coef=0 --out runs/ablation": Cheap(
        replace=(("--seeds 3", "--seeds 1"), ("400", "2")),
        add=f"--eval-questions 2 {TINY_ABLATE}",
    ),
    "research-env ablate --model tiny-random --algos grpo reinforce --seeds 2 --budget-episodes 2 "
    "--eval-questions 4 --set rollout.group_size=2 --set rollout.max_turn_tokens=16 "
    "--out runs/abl": Cheap(
        replace=(("--seeds 2", "--seeds 1"), ("--eval-questions 4", "--eval-questions 2"))
    ),
}

# Python snippets, by a line only that snippet has (``add`` is not used).
SNIPPETS: dict[str, Cheap] = {
    'prompt, info = env.reset(seed=0)  # the prompt ends with a prefilled "<think>"': Cheap(),
    'env = gym.make("ReSearch-MultiHop-v0", template="tool-call")': Cheap(),
    'make_algorithm("sft", policy, {"split": "train"}, warm).learn(10)': Cheap(
        replace=(
            ('load_policy("smollm2-135m")', 'load_policy("tiny-random")'),
            ('"rollout.questions_per_step": 4', '"rollout.questions_per_step": 1'),
            (".learn(10)", ".learn(1)"),
            ("algo.learn(20)", "algo.learn(1)"),
            (
                '"output_dir": "runs/my-run/grpo"',
                '"output_dir": "runs/my-run/grpo", '
                '"rollout.max_turn_tokens": 8, "rollout.group_size": 2, '
                '"rollout.questions_per_step": 1, "eval.questions": 1',
            ),
        )
    ),
    'env = gym.make("ReSearch-MultiHop-v0", shaping=': Cheap(),
    "GRPOTrainer(": Cheap(
        replace=(
            ('load_policy("smollm2-135m")', 'load_policy("tiny-random")'),
            ("num_generations=5", "num_generations=2"),
            ("per_device_train_batch_size=5", "per_device_train_batch_size=2"),
            (
                "max_completion_length=1024",
                'max_completion_length=12, max_steps=1, report_to="none", '
                'save_strategy="no", bf16=False',
            ),
        )
    ),
    'dataset="data/hotpotqa",  # FlashRAG jsonl dir, or a release file': Cheap(
        setup=("research-env data convert hotpot_dev_distractor_v1.json --out data/hotpotqa",)
    ),
    'register_retriever("my-index", MyIndex)': Cheap(),
    'retriever_cache="runs/queries.sqlite"': Cheap(),
    '"noise_rate": noise_curriculum(0.0, 0.5, steps=200),': Cheap(
        replace=(
            ('"smollm2-135m"', '"tiny-random"'),
            ('"max_new_tokens": 64', '"max_new_tokens": 4'),
        )
    ),
    "with McpToolbox(server, call_timeout=30) as tools:": Cheap(
        # The started server imports this checkout, as the test's own process does.
        replace=(("call_timeout=30)", 'call_timeout=30, env={**__import__("os").environ})'),)
    ),
    "CooperativeSearchEnv(shaping=": Cheap(),
    'for benchmark in SUITES["searchr1"]:': Cheap(),
    'reward="judge+f1",': Cheap(
        replace=(('"http://localhost:8001/v1"', '__import__("test_judge_reward").fake_judge()'),)
    ),
    'retriever="searxng",  # or "serper"': Cheap(
        replace=(
            ('"http://localhost:8080"', '__import__("test_web_search").fake_searxng()'),
            ('"max_requests": 200}', '"max_requests": 200, "cache": False}'),  # no ~/.cache
            (".inner.stats()", ".stats()"),
        )
    ),
    "TeamRolloutEngine(policy,": Cheap(),
    'model = PPO("MlpPolicy", env).learn(5_000)': Cheap(
        replace=(
            ('PPO("MlpPolicy", env).learn(5_000)', 'PPO("MlpPolicy", env, n_steps=64).learn(64)'),
        )
    ),
}


def _readme_items() -> list[tuple[str, str]]:
    """``("shell", line)`` and ``("python", snippet)`` in README order; continuation lines
    joined, comments and blank lines dropped."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    items: list[tuple[str, str]] = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, re.M | re.S):
        if lang == "python":
            items.append(("python", body))
            continue
        for line in re.sub(r"\\\n\s*", "", body).splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                items.append(("shell", line))
    return items


def _snippet_key(snippet: str) -> str:
    keys = [k for k in SNIPPETS if k in snippet]
    assert len(keys) == 1, f"README snippet matches {keys} in SNIPPETS:\n{snippet[:300]}"
    return keys[0]


ITEMS = _readme_items()


def test_every_readme_line_and_snippet_is_declared():
    lines = [text for kind, text in ITEMS if kind == "shell"]
    assert sorted(set(lines)) == sorted(COMMANDS), "README command lines vs COMMANDS"
    keys = [_snippet_key(text) for kind, text in ITEMS if kind == "python"]
    assert sorted(keys) == sorted(SNIPPETS), "README snippets vs SNIPPETS"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The reader's working folder: configs/ as in a checkout, a HotpotQA release file."""
    import json

    from test_readers import HOTPOT

    work = tmp_path_factory.mktemp("readme")
    (work / "configs").symlink_to(ROOT / "configs")
    (work / "hotpot_dev_distractor_v1.json").write_text(json.dumps(HOTPOT), encoding="utf-8")
    return work


NAMESPACE: dict[str, object] = {"__name__": "readme"}


def _cheap_form(line: str, cheap: Cheap) -> str:
    for old, new in cheap.replace:
        assert old in line, f"{old!r} is not in {line!r}"
        line = line.replace(old, new)
    return f"{line} {cheap.add}".strip()


def _run_line(line: str, monkeypatch) -> int:
    argv = shlex.split(line)
    if argv[0] == "research-env":
        from research_app.cli import main

        return main(argv[1:])
    if argv[:3] == ["python", "-m", "benchmarks.demo_warmstart"]:
        from benchmarks.demo_warmstart import main as warmstart

        return warmstart(argv[3:])
    if argv[:2] == ["python", "benchmarks/structured_ablation.py"]:
        monkeypatch.setattr(sys, "argv", argv[1:])
        runpy.run_path(str(ROOT / argv[1]), run_name="__main__")
        return 0
    raise AssertionError(f"no runner for {line!r}")


@pytest.mark.parametrize(
    "kind,text", ITEMS, ids=[f"{i:02d}-{t.splitlines()[0][:40]}" for i, (_, t) in enumerate(ITEMS)]
)
def test_readme_runs_as_written(kind, text, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    if kind == "python":
        snippet = text
        cheap = SNIPPETS[_snippet_key(text)]
        for setup in cheap.setup:
            assert _run_line(setup, monkeypatch) == 0, setup
        for old, new in cheap.replace:
            assert old in snippet, f"{old!r} is not in the snippet"
            snippet = snippet.replace(old, new)
        exec(compile(snippet, "README.md", "exec"), NAMESPACE)
        return
    cheap = COMMANDS[text]
    if cheap.elsewhere:
        pytest.skip(f"runs in {cheap.elsewhere}")
    line = _cheap_form(text, cheap)
    if cheap.parse_only:
        from research_app.cli import build_parser

        argv = shlex.split(line)[1:]
        build_parser(argv).parse_args(argv)  # every flag exists; not run (cheap.parse_only)
        return
    for setup in cheap.setup:
        assert _run_line(setup, monkeypatch) == 0, setup
    if cheap.stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(cheap.stdin))
    with contextlib.redirect_stdout(io.StringIO()):
        assert _run_line(line, monkeypatch) == cheap.status, line


def test_commands_quoted_in_the_prose_exist_and_parse():
    """`research-env ...` quoted inside sentences: a bare name is a command; a longer one
    parses with that command's flags (placeholders DIR and N filled in)."""
    from research_app.cli import available_commands, build_parser

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    spans = re.findall(r"`research-env ([^`]+)`", prose)
    assert len(spans) > 10
    for span in spans:
        argv = shlex.split(span.replace("DIR", "runs/x").replace(" N", " 1"))
        if argv[0] == "COMMAND":
            continue  # "research-env COMMAND --help": every command has --help
        assert argv[0] in available_commands(), span
        if len(argv) > 1:
            build_parser(argv).parse_args(argv)
