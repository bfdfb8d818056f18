"""`pai context ...`: several clusters, one of them current (kept in the CLI config file)."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer
from rich.console import RenderableType

from pai_cli.cli_common import (
    Format,
    OutputOption,
    cells,
    complete_context,
    emit,
    new_app,
    new_table,
    reports_errors,
)
from pai_cli.config import Context, check_url, read_file, write_file

app = new_app("Clusters the CLI knows (contexts) and which one commands talk to.")

ContextName = Annotated[str, typer.Argument(help="Context name", autocompletion=complete_context)]


@app.command("list")
@reports_errors
def context_list(output: OutputOption = Format.table) -> None:
    """The contexts; * marks the current one."""
    file = read_file()
    contexts = sorted(file.contexts.values(), key=lambda c: c.name)
    data = [
        {
            "name": c.name,
            "url": c.url,
            "username": c.username,
            "loggedIn": bool(c.token),
            "current": c.name == file.current,
        }
        for c in contexts
    ]

    def table() -> RenderableType:
        rows = new_table("CURRENT", "NAME", "URL", "USER", "LOGGED IN")
        for c in contexts:
            rows.add_row(
                *cells(
                    "*" if c.name == file.current else "",
                    c.name,
                    c.url,
                    c.username,
                    "yes" if c.token else "no",
                )
            )
        return rows

    emit(data, output, table)


@app.command("use")
@reports_errors
def context_use(name: ContextName) -> None:
    """Make a context the current one."""
    file = read_file()
    file.get(name)
    file.current = name
    write_file(file)
    typer.echo(f"now using {name} ({file.contexts[name].url})")


@app.command("add")
@reports_errors
def context_add(
    name: ContextName,
    url: Annotated[str, typer.Option("--url", help="The platform's URL, e.g. https://pai.example.org")],
    use: Annotated[bool, typer.Option("--use", help="Make it the current context")] = False,
) -> None:
    """Add a cluster (or change its URL); `pai login --context NAME` then logs in to it."""
    file = read_file()
    old = file.contexts.get(name)
    url = check_url(url)
    # A new URL is another platform: the old token must not be sent there.
    file.put(
        replace(old, url=url, token=old.token if old.url == url else None) if old else Context(name, url)
    )
    if use or file.current is None:
        file.current = name
    write_file(file)
    typer.echo(f"context {name}: {url}{' (current)' if file.current == name else ''}")


@app.command("delete")
@reports_errors
def context_delete(name: ContextName) -> None:
    """Forget a context and its token (the token itself stays valid until revoked or expired)."""
    file = read_file()
    file.delete(name)
    write_file(file)
    typer.echo(f"deleted {name}; current: {file.current or 'none'}")
