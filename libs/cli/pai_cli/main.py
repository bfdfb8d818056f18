"""The `pai` command line: log in, submit jobs, follow them, read their logs.

Commands build their client through `make_client`, the one seam tests (and embedders) replace.
Expected failures print `error: <code>: <message>` on stderr and exit 1, never a traceback.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pai_cli.admin import admin_app
from pai_cli.client import PaiClient, PaiError, job_state
from pai_cli.config import load_config, save_config

app = typer.Typer(
    name="pai",
    help="Command line for the OpenPAI-in-Python platform.",
    no_args_is_help=True,
    add_completion=False,
    # Expected errors are reported by _reports_errors; anything else is a bug whose plain traceback helps.
    pretty_exceptions_enable=False,
)
job_app = typer.Typer(help="Submit, list and inspect jobs.", no_args_is_help=True)
app.add_typer(job_app, name="job")
app.add_typer(admin_app, name="admin")

P = ParamSpec("P")
R = TypeVar("R")

_STATE_STYLES = {
    "WAITING": "yellow",
    "RUNNING": "cyan",
    "STOPPING": "magenta",
    "STOPPED": "magenta",
    "SUCCEEDED": "green",
    "FAILED": "red",
}


def make_client(url: str | None = None) -> PaiClient:
    """The client every command uses: the saved config (file and env), with `url` overriding its URL."""
    config = load_config()
    return PaiClient(url or config.url, token=config.token, username=config.username)


def _stdout() -> Console:
    # Built per call, not at import, so output goes to whatever sys.stdout is now (CliRunner swaps it).
    return Console(highlight=False)


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def _fail(code: str, message: str) -> NoReturn:
    typer.echo(f"error: {code}: {message}", err=True)
    raise typer.Exit(1)


def _reports_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn the SDK's errors into one line on stderr and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except PaiError as exc:
            _fail(exc.code, exc.message)

    return wrapper


def _styled_state(state: str) -> Text:
    return Text(state, style=_STATE_STYLES.get(state, ""))


def _format_time(epoch_ms: object) -> str:
    # OpenPAI times are epoch milliseconds or null.
    if not isinstance(epoch_ms, int | float) or isinstance(epoch_ms, bool) or epoch_ms <= 0:
        return "-"
    return datetime.fromtimestamp(epoch_ms / 1000).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _exit_summary(job: dict[str, Any]) -> str:
    status = job.get("jobStatus")
    if not isinstance(status, dict):
        return ""
    parts: list[str] = []
    code = status.get("appExitCode")
    if code is not None:
        parts.append(f"exit code {code}")
    spec = status.get("appExitSpec")
    if isinstance(spec, dict) and spec.get("phrase"):
        parts.append(str(spec["phrase"]))
    return f" ({', '.join(parts)})" if parts else ""


@app.command()
@_reports_errors
def login(
    url: Annotated[str | None, typer.Option("--url", help="Platform URL [default: the saved one]")] = None,
    user: Annotated[str, typer.Option("--user", prompt=True, help="User name")] = "",
    password: Annotated[
        str, typer.Option("--password", prompt=True, hide_input=True, help="Password (prompted when omitted)")
    ] = "",
) -> None:
    """Log in and save the URL, user and token for later commands."""
    with make_client(url) as client:
        token = client.login(user, password)
        path = save_config(client.base_url, client.username or user, token)
        typer.echo(f"logged in to {client.base_url} as {client.username or user} (saved to {path})")


@job_app.command("submit")
@_reports_errors
def submit(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="Job protocol v2 YAML file")
    ],
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the job to finish; exit 0 only if it succeeds")
    ] = False,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="With --wait: give up after this many seconds")
    ] = None,
) -> None:
    """Submit a job; prints its key `<user>~<name>`."""
    try:
        yaml_text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _fail("InvalidFile", f"cannot read {file}: {exc}")
    with make_client() as client:
        key = client.submit_job(yaml_text)
        # The bare key on stdout lets scripts capture it; progress goes to stderr.
        typer.echo(key)
        if not wait:
            return
        err = _stderr()
        try:
            with err.status(f"{key}: SUBMITTED") as spinner:

                def on_state(state: str, job: dict[str, Any]) -> None:
                    spinner.update(Text.assemble(f"{key}: ", _styled_state(state)))
                    # Also one line per change, so a non-interactive log keeps the job's history.
                    err.print(Text.assemble(f"{key} ", _styled_state(state)))

                job = client.wait_for_job(key, timeout_s=timeout, on_state=on_state)
        except KeyboardInterrupt:
            # Only the waiting stops: the job belongs to the platform and keeps running.
            typer.echo(f"stopped waiting; {key} keeps running (`pai job get {key}`)", err=True)
            raise typer.Exit(130) from None
    state = job_state(job)
    typer.echo(f"{key} {state}{_exit_summary(job)}")
    if state != "SUCCEEDED":
        raise typer.Exit(1)


@job_app.command("list")
@_reports_errors
def list_jobs(
    user: Annotated[
        str | None, typer.Option("--user", help="Only this user's jobs (a,b for several)")
    ] = None,
    state: Annotated[
        str | None, typer.Option("--state", help="Only jobs in this state, e.g. RUNNING")
    ] = None,
    vc: Annotated[str | None, typer.Option("--vc", help="Only jobs of this virtual cluster")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many jobs, newest first")] = 50,
) -> None:
    """List jobs, newest first."""
    with make_client() as client:
        jobs = client.list_jobs(username=user, state=state.upper() if state else None, vc=vc, limit=limit)
    if not jobs:
        typer.echo("no jobs", err=True)
        return
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "USER", "STATE", "VC", "GPUS", "SUBMITTED"):
        # Fold rather than ellipsize: a truncated job name cannot be pasted into `pai job get`.
        table.add_column(column, overflow="fold")
    for job in jobs:
        table.add_row(
            Text(str(job.get("name", ""))),
            Text(str(job.get("username", ""))),
            _styled_state(job_state(job)),
            Text(str(job.get("virtualCluster", ""))),
            Text(str(job.get("totalGpuNumber", ""))),
            _format_time(job.get("submissionTime")),
        )
    _stdout().print(table)


@job_app.command("get")
@_reports_errors
def get_job(
    name: Annotated[str, typer.Argument(help="<user>~<job>, or <job> for your own job")],
) -> None:
    """Print a job's detail as JSON."""
    with make_client() as client:
        job = client.get_job(client.job_key(name))
    # Plain JSON (no colour) so the output can be piped into jq.
    typer.echo(json.dumps(job, indent=2))


@job_app.command("logs")
@_reports_errors
def logs(
    name: Annotated[str, typer.Argument(help="<user>~<job>, or <job> for your own job")],
    role: Annotated[str | None, typer.Option("--role", help="Task role [default: the first]")] = None,
    index: Annotated[int, typer.Option("--index", min=0, help="Task index within the role")] = 0,
    stderr: Annotated[bool, typer.Option("--stderr", help="Show stderr instead of stdout")] = False,
) -> None:
    """Print one task's stdout (or stderr)."""
    with make_client() as client:
        text = client.task_log(client.job_key(name), role, index, "stderr" if stderr else "stdout")
    typer.echo(text, nl=bool(text) and not text.endswith("\n"))


from pai_cli.up import register as _register_up  # noqa: E402  (after every command above)

_register_up(app)


if __name__ == "__main__":
    app()
