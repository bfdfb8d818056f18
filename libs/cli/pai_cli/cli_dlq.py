"""`pai admin dlq list|show|replay`: the dead letters (messages a consumer of the platform gave up on, with
the error that sent each there), and having one handled again. Admins only."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import RenderableType

from pai_cli.cli_common import (
    Format,
    OutputOption,
    cells,
    emit,
    make_client,
    new_app,
    new_table,
    reports_errors,
)
from pai_cli.models import DeadLetter

admin_app = new_app("What only admins do.")
dlq_app = new_app("Dead letters: list, show, replay.")
admin_app.add_typer(dlq_app, name="dlq")

Seq = Annotated[
    int, typer.Argument(min=1, help="The dead letter's sequence number (see `pai admin dlq list`)")
]


def _letters_table(letters: list[DeadLetter]) -> RenderableType:
    rows = new_table("SEQ", "CONSUMER", "TYPE", "SUBJECT", "DEAD-LETTERED", "ERROR")
    for d in letters:
        rows.add_row(*cells(d.seq, d.consumer, d.type, d.subject, d.dead_lettered_at, d.error[:120]))
    return rows


@dlq_app.command("list")
@reports_errors
def dlq_list(
    service: Annotated[str | None, typer.Option(help="Only this service's consumers")] = None,
    consumer: Annotated[str | None, typer.Option(help="Only this durable consumer")] = None,
    after: Annotated[int, typer.Option(min=0, help="Start after this sequence number (paging)")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    output: OutputOption = Format.table,
) -> None:
    """The dead letters, oldest first, with the error that sent each there."""
    with make_client() as client:
        page = client.dead_letters(service=service, consumer=consumer, after=after, limit=limit)
    emit(page, output, lambda: _letters_table(page.data))
    if output is Format.table and page.next:
        typer.echo(f"more: pai admin dlq list --after {page.next}", err=True)


@dlq_app.command("show")
@reports_errors
def dlq_show(seq: Seq, output: OutputOption = Format.json) -> None:
    """One dead letter: its error, its headers and its body as delivered (JSON unless -o says otherwise)."""
    with make_client() as client:
        letter = client.dead_letter(seq)
    emit(letter, output, lambda: _letters_table([letter]))


@dlq_app.command("replay")
@reports_errors
def dlq_replay(seq: Seq) -> None:
    """Have its consumer handle it again (once: a message already handled changes nothing)."""
    with make_client() as client:
        done = client.replay_dead_letter(seq)
    typer.echo(f"dead letter {seq} ({done.type} for {done.consumer}): {done.outcome}")
    if not done.audited:
        typer.echo("warning: the replay happened but its audit entry could not be written", err=True)
