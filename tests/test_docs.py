"""The README and docs/ document every command, its two commands exist, their links lead
somewhere, and they have no unfilled parts."""

from __future__ import annotations

import os
import re

import pytest
from conftest import REPO
from typer.testing import CliRunner

from worker.cli import app

README = (REPO / "README.md").read_text(encoding="utf-8")
COMMANDS_DOC = (REPO / "docs" / "commands.md").read_text(encoding="utf-8")
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _commands() -> list[str]:
    import typer.main

    return sorted(typer.main.get_command(app).commands)


@pytest.mark.parametrize("command", ["train", "predict", "watch", "report", "status", "models", "publish"])
def test_every_command_is_documented(command):
    assert command in _commands()
    assert f"`worker {command}" in README


def test_every_command_is_in_the_readme_table_and_docs_commands():
    for command in _commands():
        assert re.search(rf"^\| `worker {command}[` ]", README, re.MULTILINE), command
        assert re.search(rf"^\| `worker {command}[` ]", COMMANDS_DOC, re.MULTILINE), command


def test_readme_commands_have_help():
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        for command in sorted(set(re.findall(r"`worker ([a-z][a-z-]*[a-z])", text))):
            result = CliRunner().invoke(app, [command, "--help"])
            assert result.exit_code == 0, f"{document.name}: worker {command}: {result.output}"


def test_the_two_commands_exist_and_are_executable():
    for script in ("scripts/run", "scripts/test"):
        assert f"./{script}" in README
        assert os.access(REPO / script, os.X_OK)
    assert "scripts/test" in (REPO / ".ci" / "run").read_text()


def test_no_placeholder_is_left():
    for placeholder in ("SESSION_WATCH", "SESSION_DROP", "MODEL_TABLE", "SCAN_TABLE", "BENCH_TABLE"):
        assert placeholder not in README, placeholder


def test_every_watch_option_is_documented():
    """In docs/commands.md, where each command's options are described (the README has the
    short table)."""
    help_text = CliRunner().invoke(app, ["watch", "--help"]).output
    for option in set(re.findall(r"--(?!no-)[a-z][a-z-]+", help_text)) - {"--help"}:
        assert f"`{option}" in COMMANDS_DOC, option


def test_the_readme_stays_a_short_guide():
    lines = README.count("\n")
    assert lines < 300, f"README.md has {lines} lines: move the details into docs/"
    assert "## Contents" in README


def _anchors(text: str) -> set[str]:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces
    as hyphens, a repeated one numbered."""
    seen: dict[str, int] = {}
    anchors = set()
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not (match := re.match(r"#{1,6} (.+)", line)):
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _links(text: str) -> list[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    return re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r'<img src="([^"]+)"', text)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_relative_link_and_anchor_resolves(document):
    for link in _links(document.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", link):
            continue
        path, _, anchor = link.partition("#")
        target = (document.parent / path).resolve() if path else document
        assert target.exists(), f"{document.name}: {link}"
        if anchor:
            assert anchor in _anchors(target.read_text(encoding="utf-8")), f"{document.name}: {link}"


def test_every_document_in_docs_is_linked_from_the_readme():
    for document in DOCUMENTS[1:]:
        assert f"](docs/{document.name}" in README, document.name


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_repo_path_named_exists(document):
    """A module split or moved takes its mentions along."""
    text = document.read_text(encoding="utf-8")
    named = r"(?<![\w/.])((?:worker|tests|bench|scripts|deploy|samples)/[\w/.@-]*\w)"
    for path in set(re.findall(named, text)):
        assert (REPO / path).exists(), f"{document.name}: {path}"
