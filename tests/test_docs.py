"""Every ``hydra`` command in README.md and docs/ parses as written (parse only, nothing runs).

Commands are taken from fenced code blocks (a quoted argument may span lines) and from inline
code spans, table cells included. Placeholders become real values first: ``DIR``, ``CARD``,
``<task>``, ``<all five>``, ``N``, ``…`` (more task names) and optional ``[--flag]`` groups.
"""

from __future__ import annotations

import re
import shlex

import pytest
import typer
from typer.core import TyperGroup

from hydra_core.settings import PROJECT_ROOT
from hydra_pipeline.cli import app

DOCS = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?$(.*?)^```", re.DOTALL | re.MULTILINE)
SPAN = re.compile(r"`((?:uv run )?hydra [^`]+)`")
OPTIONAL = re.compile(r"\[(-[^\]]*)\]")
PLACEHOLDERS = {
    "<all five>": "cacm cranfield nfcorpus scifact vaswani",
    "<task>": "scifact",
    "…": "vaswani",
}
WORDS = {"DIR": "workspace/runs/docs", "CARD": "scifact", "N": "3"}


def _block_commands(block: str) -> list[str]:
    """``uv run hydra`` lines of a code block, each with the lines its open quote spans."""
    commands: list[str] = []
    lines = block.splitlines()
    for start, line in enumerate(lines):
        if not line.strip().startswith("uv run hydra "):
            continue
        command = line
        for following in lines[start + 1 :]:
            try:
                shlex.split(command, comments=True)
                break
            except ValueError:  # a quoted argument goes on on the next line
                command += "\n" + following
        commands.append(command.strip())
    return commands


def documented_commands() -> list[tuple[str, str]]:
    """(file name, command text) for every hydra command the docs show."""
    found: list[tuple[str, str]] = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        found += [(path.name, c) for block in FENCE.findall(text) for c in _block_commands(block)]
        prose = FENCE.sub("", text)
        found += [(path.name, span) for span in SPAN.findall(prose)]
    return found


def concrete_args(command: str) -> list[str]:
    """The arguments after ``hydra``, placeholders replaced by real values."""
    text = OPTIONAL.sub(r"\1", command)
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    words = shlex.split(text, comments=True)
    words = words[words.index("hydra") + 1 :]
    return [WORDS.get(word, word) for word in words]


COMMANDS = documented_commands()


def test_the_docs_show_the_commands_this_test_checks() -> None:
    commands = {command for _, command in COMMANDS}
    assert "uv run hydra train --tasks scifact nfcorpus … --out DIR" in commands
    assert any(c.startswith('uv run hydra metrics "select l.method') for c in commands)
    assert len(COMMANDS) >= 40


def parse(args: list[str]) -> dict[str, object]:
    """The parameters of ``hydra <args>`` as the console script parses them; nothing runs."""
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    parent = group.make_context("hydra", list(args))
    command = group.get_command(parent, args[0])
    assert command is not None, f"no command {args[0]!r}"
    return command.make_context(args[0], args[1:], parent=parent).params


@pytest.mark.parametrize(("doc", "command"), COMMANDS, ids=[c for _, c in COMMANDS])
def test_documented_command_parses(doc: str, command: str) -> None:
    try:
        parse(concrete_args(command))
    except typer.TyperException as error:
        pytest.fail(f"{doc}: {command!r} does not parse: {error.format_message()}")


@pytest.mark.parametrize(
    "command", [["train", "--out", "DIR"], ["eval", "--loo"], ["validate", "--loo"], ["run"]]
)
@pytest.mark.parametrize(
    "spelling",
    [["a", "b", "c"], ["a,b,c"], ["a", "--tasks", "b", "--tasks", "c"], ["a,", "b", "--tasks=c"]],
)
def test_every_command_takes_several_tasks_in_each_spelling(
    command: list[str], spelling: list[str]
) -> None:
    parsed = parse([command[0], "--tasks", *spelling, *command[1:]])
    assert parsed["tasks"] == ["a", "b", "c"]


def test_a_tasks_list_that_names_no_task_is_refused() -> None:
    with pytest.raises(typer.BadParameter, match="no task named in ','"):
        parse(["run", "--tasks", ","])
