"""What every `pai` command shares: its client, its output (table, JSON or YAML), its errors.

Commands build their client through ``make_client``, the one seam embedders replace. Expected failures
print ``error: <code>: <message>`` on stderr and exit 1, never a traceback.
"""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
import yaml
from pydantic import BaseModel
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from pai_cli.client import PaiClient
from pai_cli.config import ConfigError, load_config, read_file
from pai_cli.errors import PaiError
from pai_cli.transport import NO_RETRIES

P = ParamSpec("P")
R = TypeVar("R")

STATE_STYLES = {
    "WAITING": "yellow",
    "RUNNING": "cyan",
    "STOPPING": "magenta",
    "STOPPED": "magenta",
    "SUCCEEDED": "green",
    "FAILED": "red",
}


ONE_LINE_COLUMNS = frozenset({"STATE", "SUBMITTED", "TIME", "STARTED", "COMPLETED"})


class Settings:
    """Global options of this invocation (``pai --context NAME ...``)."""

    context: str | None = None


def new_app(help: str) -> typer.Typer:
    # rich_markup_mode=None: help text is shown as written. With rich markup on, "[default: ...]" in a help
    # string was taken for a markup tag and vanished.
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False)


def make_client(url: str | None = None) -> PaiClient:
    """The client every command uses: the chosen context (and the environment), ``url`` overriding it."""
    config = load_config(context=Settings.context)
    return PaiClient(url or config.url, token=config.token, username=config.username)


def stdout() -> Console:
    # Built per call, not at import, so output goes to whatever sys.stdout is now.
    return Console(highlight=False, soft_wrap=False)


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


def fail(code: str, message: str) -> NoReturn:
    typer.echo(f"error: {code}: {message}", err=True)
    raise typer.Exit(1)


def reports_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn the SDK's and the config's errors into one line on stderr and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except PaiError as exc:
            fail(exc.code, exc.message)
        except ConfigError as exc:
            fail("ConfigError", str(exc))

    return wrapper


# ---- output --------------------------------------------------------------------------------------------


class Format(enum.StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


OutputOption = Annotated[
    Format, typer.Option("--output", "-o", help="Output format: table, json or yaml", case_sensitive=False)
]


def wire(data: Any) -> Any:
    """Models as the server sent them, recursively."""
    if isinstance(data, BaseModel):
        dump = getattr(data, "wire", None)
        return dump() if callable(dump) else data.model_dump(mode="json", by_alias=True)
    if isinstance(data, dict):
        return {k: wire(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [wire(v) for v in data]
    return data


def emit(data: Any, output: Format, table: Callable[[], RenderableType]) -> None:
    """Print ``data`` as JSON or YAML (plain, for pipes), or what ``table`` renders."""
    if output is Format.json:
        typer.echo(json.dumps(wire(data), indent=2))
    elif output is Format.yaml:
        typer.echo(yaml.safe_dump(wire(data), sort_keys=False, allow_unicode=True).rstrip("\n"))
    else:
        stdout().print(table())


def new_table(*columns: str) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        # Fold rather than ellipsize: a truncated name cannot be pasted into the next command. Times and
        # states stay on one line.
        table.add_column(column, overflow="fold", no_wrap=column in ONE_LINE_COLUMNS)
    return table


def cells(*values: object) -> list[Text]:
    """Table cells shown as text, never as markup (a job tag may hold "[red]" or "<script>")."""
    return [
        value if isinstance(value, Text) else Text("-" if value is None else str(value)) for value in values
    ]


def styled_state(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def format_time(value: object) -> str:
    """OpenPAI's times, epoch milliseconds or ISO strings (events), in local time; "-" for none."""
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    elif isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        when = datetime.fromtimestamp(value / 1000)
    else:
        return "-"
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def joined(values: Iterable[object]) -> str:
    return ",".join(str(v) for v in values) or "-"


# ---- shell completion ----------------------------------------------------------------------------------


def complete_context(incomplete: str) -> list[str]:
    return [name for name in sorted(read_file().contexts) if name.startswith(incomplete)]


def complete_job(incomplete: str) -> list[str]:
    """Your recent jobs' names (completion must never fail: nothing on any error)."""
    try:
        with make_client() as client:
            client.retry = NO_RETRIES
            jobs = client.list_jobs(username=client.username, limit=50) if client.username else []
    except (PaiError, ConfigError, OSError):
        return []
    return [job.name for job in jobs if job.name.startswith(incomplete)]
