"""The README documents every command, its two commands exist, and it has no unfilled parts."""

from __future__ import annotations

import os
import re

import pytest
from conftest import REPO
from typer.testing import CliRunner

from worker.cli import app

README = (REPO / "README.md").read_text(encoding="utf-8")


def _commands() -> list[str]:
    import typer.main

    return sorted(typer.main.get_command(app).commands)


@pytest.mark.parametrize("command", ["train", "predict", "watch", "report", "status", "models", "publish"])
def test_every_command_is_documented(command):
    assert command in _commands()
    assert f"`worker {command}" in README


def test_readme_commands_have_help():
    for command in sorted(set(re.findall(r"`worker ([a-z][a-z-]*[a-z])", README))):
        result = CliRunner().invoke(app, [command, "--help"])
        assert result.exit_code == 0, f"worker {command}: {result.output}"


def test_the_two_commands_exist_and_are_executable():
    for script in ("scripts/run", "scripts/test"):
        assert f"./{script}" in README
        assert os.access(REPO / script, os.X_OK)
    assert "scripts/test" in (REPO / ".ci" / "run").read_text()


def test_no_placeholder_is_left():
    for placeholder in ("SESSION_WATCH", "SESSION_DROP", "MODEL_TABLE", "SCAN_TABLE", "BENCH_TABLE"):
        assert placeholder not in README, placeholder


def test_every_watch_option_is_documented():
    help_text = CliRunner().invoke(app, ["watch", "--help"]).output
    for option in set(re.findall(r"--(?!no-)[a-z][a-z-]+", help_text)) - {"--help"}:
        assert f"`{option}" in README, option
