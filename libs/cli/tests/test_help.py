"""Every command's --help shows every help text whole: nothing written in brackets is taken for markup
(rich ate "[default: ...]" before), and every default named in words is shown."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from pai_cli.main import app

ROOT = typer.main.get_command(app)


def commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    # Typer vendors its own click: the tree is walked by shape, not by click's classes.
    yield path, group
    for name, command in (getattr(group, "commands", None) or {}).items():
        yield from commands(command, (*path, name))


ALL = list(commands(ROOT))


def squeeze(text: str) -> str:
    return "".join(text.split())


def test_the_command_surface() -> None:
    names = {" ".join(path) for path, _ in ALL}
    for expected in (
        "job submit", "job list", "job get", "job stop", "job logs", "job watch", "job tag", "job untag",
        "job events", "job clone", "vc list", "vc get", "node list", "user list", "user create",
        "group create", "token create", "whoami", "login", "logout", "context list", "context use",
        "context add", "context delete",
    ):  # fmt: skip
        assert expected in names


@pytest.mark.parametrize(("path", "command"), ALL, ids=[" ".join(p) or "pai" for p, _ in ALL])
def test_help_renders_every_help_text(path: tuple[str, ...], command: Any) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    shown = squeeze(result.output)
    if command.help:
        assert squeeze(command.help.split("\n\n")[0]) in shown
    for param in command.params:
        help_text = getattr(param, "help", None)
        if help_text:
            assert squeeze(help_text) in shown, f"{param.name}: {help_text!r} is not shown whole"
        default = getattr(param, "show_default", None)
        if isinstance(default, str):
            assert squeeze(f"[default: ({default})") in shown, f"{param.name}: default {default!r} not shown"


def test_completion_is_offered() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert "--install-completion" in result.output
