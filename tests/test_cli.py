"""The command line: instant --help, stage commands, doctor."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from opensem.cli import app
from opensem.stages import STAGES

HEAVY = ("torch", "transformers", "mlflow", "peft", "trl", "wandb", "datasets")


def test_help_imports_no_heavy_library():
    code = (
        "import sys\n"
        "from opensem.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in result.stdout, result.stdout
    for stage in STAGES:
        assert stage in result.stdout


def test_every_stage_has_a_command_with_sem_and_set():
    for stage in STAGES:
        result = CliRunner().invoke(app, [stage, "--help"])
        assert result.exit_code == 0
        assert "--sem" in result.output and "--set" in result.output


def test_help_paragraphs_wrap_to_the_terminal():
    # typer's rich help prints a docstring's line breaks as they are: the listing of `opensem --help`
    # showed `dev`'s summary cut into short lines. Each paragraph must reach typer as one line.
    import typer.main

    def commands(group, path=()):
        for name, command in group.commands.items():
            yield (*path, name), command
            if hasattr(command, "commands"):
                yield from commands(command, (*path, name))

    found = list(commands(typer.main.get_command(app)))
    assert {("dev",), ("golden", "check"), ("golden", "coverage")} <= {p for p, _ in found}
    for path, command in found:
        for paragraph in (command.help or "").split("\n\n"):
            assert "\n" not in paragraph, (path, paragraph)
    listing = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    assert "Compare the base model and an adapter on the SEM's dev set (choose settings by it)." in listing


def test_stage_needs_a_sem():
    result = CliRunner().invoke(app, ["train"])
    assert result.exit_code == 2 and "--sem" in result.output


def test_doctor_describes_this_machine_and_hides_secret_values(project, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET-VALUE-123")
    result = CliRunner().invoke(app, ["doctor"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "none (CUDA not available)" in out
    assert "hf" in out and "cpu / fp32" in out or "cpu / bf16" in out
    assert "OPENAI_API_KEY" in out and "set" in out
    assert "SECRET" not in out
    assert "sqlite:///" in out
