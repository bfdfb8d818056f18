"""`pai admin`: what only admins do. `pai admin dlq list|show|replay`: the dead letters (messages a consumer
of the platform gave up on, with the error that sent each there), and handling one again."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pai_cli.client import PaiClient, PaiError

admin_app = typer.Typer(help="Admin operations.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: list, show, replay.", no_args_is_help=True)
admin_app.add_typer(dlq_app, name="dlq")


def _client() -> PaiClient:
    from pai_cli.main import make_client  # the CLI's one seam for building a client (main imports us)

    return make_client()


def _fail(exc: PaiError) -> None:
    typer.echo(f"error: {exc.code}: {exc.message}", err=True)
    raise typer.Exit(1)


@dlq_app.command("list")
def dlq_list(
    service: Annotated[str | None, typer.Option(help="Only this service's consumers")] = None,
    consumer: Annotated[str | None, typer.Option(help="Only this durable consumer")] = None,
    after: Annotated[int, typer.Option(min=0, help="Start after this sequence number (paging)")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """The dead letters, oldest first, with the error that sent each there."""
    try:
        with _client() as client:
            page = client.dead_letters(service, consumer, after, limit)
    except PaiError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps(page, indent=2))
        return
    table = Table("seq", "consumer", "type", "subject", "dead-lettered", "error")
    for d in page["data"]:
        table.add_row(
            str(d["seq"]), d["consumer"], d["type"], d["subject"], d["deadLetteredAt"] or "", d["error"][:120]
        )
    Console(highlight=False).print(table)
    if page.get("next"):
        typer.echo(f"more: pai admin dlq list --after {page['next']}")


@dlq_app.command("show")
def dlq_show(seq: Annotated[int, typer.Argument(min=1)]) -> None:
    """One dead letter: its error, its headers and its body as delivered."""
    try:
        with _client() as client:
            typer.echo(json.dumps(client.dead_letter(seq), indent=2))
    except PaiError as exc:
        _fail(exc)


@dlq_app.command("replay")
def dlq_replay(seq: Annotated[int, typer.Argument(min=1)]) -> None:
    """Have its consumer handle it again (once: a message already handled changes nothing)."""
    try:
        with _client() as client:
            done = client.replay_dead_letter(seq)
    except PaiError as exc:
        _fail(exc)
    typer.echo(f"dead letter {seq} ({done['type']} for {done['consumer']}): {done['outcome']}")
