"""The ``research-env`` command table: every built-in listed once, resolved lazily,
runnable without torch; plugins come from the entry-point group and never replace a
built-in."""

import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest

from research_app import cli

# Run research_app.cli with torch unimportable (a None entry in sys.modules makes
# `import torch` raise ImportError), printing which top-level packages got imported.
NO_TORCH = """
import sys
sys.modules["torch"] = None
from research_app.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
loaded = sorted(({m.split(".")[0] for m in sys.modules} & {"algorithms", "benchmarks"})
                | {m for m in sys.modules if m.startswith("research_app.")} - {"research_app.cli"})
print("LOADED", ",".join(loaded), "CODE", code)
"""


def run_without_torch(*args):
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH, *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_every_builtin_resolves_to_a_register_function():
    for name, target in cli.COMMANDS.items():
        register = cli._resolve(target)
        assert callable(register), name


def test_help_lists_every_command_with_its_help_line_without_torch():
    out = run_without_torch("--help")
    for name in cli.COMMANDS:
        assert f"\n    {name} " in out, name
    assert "evaluate a model or scripted policies" in out and "train an LLM policy" in out
    for name in ("eval", "demo", "train", "play", "data", "serve"):
        assert "CODE 0" in run_without_torch(name, "--help"), name


def test_a_command_loads_only_its_own_module():
    out = run_without_torch("play", "--help")
    assert "LOADED  CODE 0" in out  # no algorithms, benchmarks or other app module imported


def test_scripted_eval_runs_without_torch():
    out = run_without_torch("eval", "--policy", "oracle", "--limit", "2")
    assert "| oracle |" in out and "CODE 0" in out


def register_hello(subparsers):
    subparsers.add_parser("hello", help="a plugin").set_defaults(handler=lambda args: 7)


def test_plugins_come_from_the_entry_point_group_and_never_shadow_a_builtin(monkeypatch):
    plugins = [
        EntryPoint("hello", f"{__name__}:register_hello", cli.PLUGIN_GROUP),
        EntryPoint("eval", "nowhere.at_all:register", cli.PLUGIN_GROUP),
    ]
    monkeypatch.setattr(cli, "entry_points", lambda group: plugins)
    commands = cli.available_commands()
    assert commands["eval"] == cli.COMMANDS["eval"]
    assert commands["hello"] == f"{__name__}:register_hello"
    assert "hello" in cli.build_parser().format_help()
    assert cli.main(["hello"]) == 7


def test_an_unknown_command_lists_the_choices(capsys):
    with pytest.raises(SystemExit):
        cli.main(["no-such-command"])
    assert "train" in capsys.readouterr().err


def test_version_help_examples_and_a_missing_run_folder(tmp_path, capsys):
    import importlib.metadata

    import research_env
    from research_app.cli import main as cli

    assert research_env.__version__ == importlib.metadata.version("research-gym")
    for command in ("eval", "compare"):
        with pytest.raises(SystemExit):
            cli([command, "--help"])
        assert f"examples:\n  research-env {command}" in capsys.readouterr().out
    missing = tmp_path / "nowhere"
    assert cli(["compare", str(missing), str(missing)]) == 1
    assert f"no such run folder: {missing}" in capsys.readouterr().err  # not "no fingerprint"
