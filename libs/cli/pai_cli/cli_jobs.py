"""`pai job ...`: submit, list, get, stop, logs (and follow), watch, tag, untag, events, attempts, config,
clone."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Group, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.text import Text

from pai_cli.cli_common import (
    Format,
    OutputOption,
    cells,
    complete_job,
    emit,
    fail,
    format_time,
    joined,
    make_client,
    new_app,
    new_table,
    reports_errors,
    stderr,
    stdout,
    styled_state,
)
from pai_cli.client import PaiClient
from pai_cli.errors import PaiError
from pai_cli.models import FINAL_STATES, JobDetail, StreamEvent
from pai_cli.routes import LogStream

app = new_app("Submit, list, follow and manage jobs.")

JobName = Annotated[
    str, typer.Argument(help="<user>~<job>, or <job> for your own job", autocompletion=complete_job)
]
JobNames = Annotated[
    list[str], typer.Argument(help="Jobs: <user>~<job>, or <job> for your own", autocompletion=complete_job)
]
WaitOption = Annotated[
    bool, typer.Option("--wait", help="Wait for the job to end; exit 0 only if it succeeds")
]
TimeoutOption = Annotated[
    float | None, typer.Option("--timeout", help="With --wait: give up after this many seconds")
]
SECRET_MASK = "******"


def _exit_summary(job: JobDetail) -> str:
    parts: list[str] = []
    if job.job_status.app_exit_code is not None:
        parts.append(f"exit code {job.job_status.app_exit_code}")
    phrase = (job.job_status.app_exit_spec or {}).get("phrase")
    if phrase:
        parts.append(str(phrase))
    return f" ({', '.join(parts)})" if parts else ""


def _wait(client: PaiClient, key: str, timeout: float | None) -> JobDetail:
    """Follow the job to its end with a spinner, one line per state change on stderr."""
    err = stderr()
    try:
        with err.status(f"{key}: SUBMITTED") as spinner:

            def on_state(state: str, job: JobDetail) -> None:
                spinner.update(Text.assemble(f"{key}: ", styled_state(state)))
                # Also one line per change, so a non-interactive log keeps the job's history.
                err.print(Text.assemble(f"{key} ", styled_state(state)))

            return client.wait_for_job(key, timeout_s=timeout, on_state=on_state)
    except KeyboardInterrupt:
        # Only the waiting stops: the job belongs to the platform and keeps running.
        typer.echo(f"stopped waiting; {key} keeps running (`pai job get {key}`)", err=True)
        raise typer.Exit(130) from None


def _finish(job: JobDetail) -> None:
    typer.echo(f"{job.key} {job.state}{_exit_summary(job)}")
    if job.state != "SUCCEEDED":
        raise typer.Exit(1)


def _submit_text(yaml_text: str, wait: bool, timeout: float | None) -> None:
    with make_client() as client:
        key = client.submit_job(yaml_text)
        # The bare key on stdout lets scripts capture it; progress goes to stderr.
        typer.echo(key)
        if wait:
            _finish(_wait(client, key, timeout))


@app.command("submit")
@reports_errors
def submit(
    file: Annotated[Path, typer.Argument(dir_okay=False, help="Job protocol v2 YAML file, or - for stdin")],
    wait: WaitOption = False,
    timeout: TimeoutOption = None,
) -> None:
    """Submit a job; prints its key <user>~<name>."""
    try:
        yaml_text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail("InvalidFile", f"cannot read {file}: {exc}")
    _submit_text(yaml_text, wait, timeout)


@app.command("list")
@reports_errors
def list_jobs(
    user: Annotated[
        str | None, typer.Option("--user", help="Only these users' jobs (a,b for several)")
    ] = None,
    state: Annotated[
        str | None, typer.Option("--state", help="Only jobs in these states, e.g. RUNNING or WAITING,RUNNING")
    ] = None,
    vc: Annotated[str | None, typer.Option("--vc", help="Only jobs of this virtual cluster")] = None,
    keyword: Annotated[
        str | None, typer.Option("--keyword", "-k", help="Only jobs whose name or user contains this")
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="Only jobs with this tag (repeatable)")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=50000, help="At most this many jobs")] = 50,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Skip this many of the newest")] = 0,
    output: OutputOption = Format.table,
) -> None:
    """List jobs, newest first."""
    with make_client() as client:
        jobs = client.list_jobs(
            username=user,
            state=state.upper() if state else None,
            vc=vc,
            keyword=keyword,
            tags=tag or None,
            limit=limit,
            offset=offset,
        )
    if not jobs and output is Format.table:
        typer.echo("no jobs", err=True)
        return

    def table() -> RenderableType:
        rows = new_table("NAME", "USER", "STATE", "VC", "GPUS", "RETRIES", "SUBMITTED", "TAGS")
        for job in jobs:
            rows.add_row(
                *cells(job.name, job.username),
                styled_state(job.state),
                *cells(job.virtual_cluster, f"{job.total_gpu_number:g}", job.retries),
                *cells(format_time(job.submission_time), joined(job.tags)),
            )
        return rows

    emit(jobs, output, table)


def _detail_view(job: JobDetail) -> RenderableType:
    status = job.job_status
    head = new_table("FIELD", "VALUE")
    head.show_header = False
    rows: list[tuple[str, Any]] = [
        ("name", job.key),
        ("state", styled_state(job.state)),
        ("virtual cluster", status.virtual_cluster),
        ("retries", status.retries),
        ("submitted", format_time(status.submission_time)),
        ("launched", format_time(status.launched_time)),
        ("completed", format_time(status.completed_time)),
        ("tags", joined(job.tags)),
    ]
    if status.pending_reason:
        place = f" (position {status.pending_position})" if status.pending_position is not None else ""
        rows.append(("pending", f"{status.pending_reason}{place}"))
    if status.app_exit_code is not None:
        rows.append(("exit", _exit_summary(job).strip(" ()")))
    spec = status.app_exit_spec or {}
    if spec.get("reason") and job.state == "FAILED":
        rows.append(("reason", spec["reason"]))
    for name, value in rows:
        head.add_row(Text(name, style="bold"), *cells(value))
    tasks = new_table("ROLE", "INDEX", "STATE", "NODE", "GPUS", "PORTS", "EXIT", "RETRIES")
    for role_name, role in job.task_roles.items():
        for task in role.task_statuses:
            ports = ",".join(f"{k}:{v}" for k, v in (task.container_ports or {}).items())
            tasks.add_row(
                *cells(role_name, task.task_index),
                styled_state(task.task_state),
                *cells(task.container_node_name, joined(task.gpus)),
                *cells(ports or "-", task.container_exit_code, task.retries),
            )
    return Group(head, Text(""), tasks)


@app.command("get")
@reports_errors
def get_job(name: JobName, output: OutputOption = Format.json) -> None:
    """A job's detail as the API answers it (JSON, as earlier versions printed it, for scripts);
    -o table shows state, times, exit and its tasks."""
    with make_client() as client:
        job = client.get_job(name)
    emit(job, output, lambda: _detail_view(job))


@app.command("stop")
@reports_errors
def stop(
    names: JobNames,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until every job has stopped")] = False,
    timeout: TimeoutOption = None,
) -> None:
    """Stop jobs (202: stopping; --wait follows them to STOPPED)."""
    failed = 0
    with make_client() as client:
        keys = [client.job_key(n) for n in names]
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, console=stderr(), transient=True) as progress:
            asked = progress.add_task("asking to stop", total=len(keys))
            stopping: list[str] = []
            for key in keys:
                try:
                    client.stop_job(key)
                    stopping.append(key)
                except PaiError as exc:
                    failed += 1
                    typer.echo(f"error: {key}: {exc.code}: {exc.message}", err=True)
                progress.advance(asked)
            if wait and stopping:
                ended = progress.add_task("waiting for them to end", total=len(stopping))
                for key in stopping:
                    job = client.wait_for_job(key, timeout_s=timeout)
                    progress.advance(ended)
                    typer.echo(f"{key} {job.state}")
        if not wait:
            for key in stopping:
                typer.echo(f"{key} stopping")
    if failed:
        raise typer.Exit(1)


def _print_chunk(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@app.command("logs")
@reports_errors
def logs(
    name: JobName,
    role: Annotated[str | None, typer.Option("--role", help="Task role", show_default="the first")] = None,
    index: Annotated[int, typer.Option("--index", min=0, help="Task index within the role")] = 0,
    stderr_stream: Annotated[bool, typer.Option("--stderr", help="Show stderr instead of stdout")] = False,
    all_streams: Annotated[bool, typer.Option("--all", help="Show stdout and stderr as written")] = False,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends")] = False,
    tail: Annotated[
        int | None, typer.Option("--tail", min=1, help="Only the last this many bytes", show_default="1 MiB")
    ] = None,
) -> None:
    """Print one task's log; -f follows it (through the job's live stream) until the job ends."""
    stream: LogStream = "all" if all_streams else "stderr" if stderr_stream else "stdout"
    with make_client() as client:
        if follow:
            try:
                for chunk in client.follow_log(name, role, index, stream):
                    _print_chunk(chunk)
            except KeyboardInterrupt:
                raise typer.Exit(130) from None
            return
        text = client.task_log(name, role, index, stream, tail_bytes=tail)
    _print_chunk(text)


def _event_line(event: StreamEvent) -> Text:
    data = event.data
    now = time.strftime("%H:%M:%S")
    if event.event == "job":
        status = data.get("jobStatus") or {}
        state = str(status.get("state", "?"))
        extra = f"  retries {status.get('retries', 0)}"
        if status.get("pendingReason"):
            extra += f"  pending: {status['pendingReason']}"
        return Text.assemble(f"{now} job  ", styled_state(state), extra)
    if event.event == "task":
        state = str(data.get("taskState", "?"))
        where = f" on {data['containerNodeName']}" if data.get("containerNodeName") else ""
        code = data.get("containerExitCode")
        exit_text = f" exit {code}" if code is not None else ""
        task = f"{data.get('taskRoleName')}[{data.get('taskIndex')}]"
        return Text.assemble(f"{now} task {task} ", styled_state(state), where + exit_text)
    return Text.assemble(f"{now} end  ", styled_state(str(data.get("state", "?"))))


@app.command("watch")
@reports_errors
def watch(name: JobName) -> None:
    """Print the job's state and task changes as they happen, until it ends (exit 0 if it succeeded)."""
    final = None
    out = stdout()
    with make_client() as client:
        key = client.job_key(name)
        while final is None:
            try:
                for event in client.stream_job(key):
                    out.print(_event_line(event))
                    if event.event == "end":
                        final = str(event.data.get("state"))
            except KeyboardInterrupt:
                raise typer.Exit(130) from None
            if final is None:
                # The stream broke without an end (a gateway restart): the job may have ended meanwhile.
                job = client.get_job(key)
                final = job.state if job.state in FINAL_STATES else None
    if final != "SUCCEEDED":
        raise typer.Exit(1)


@app.command("tag")
@reports_errors
def tag(name: JobName, tags: Annotated[list[str], typer.Argument(help="Tags to add")]) -> None:
    """Add tags to a job."""
    with make_client() as client:
        for value in tags:
            client.add_tag(name, value)
    typer.echo(f"{name}: tagged {', '.join(tags)}")


@app.command("untag")
@reports_errors
def untag(name: JobName, tags: Annotated[list[str], typer.Argument(help="Tags to remove")]) -> None:
    """Remove tags from a job."""
    with make_client() as client:
        for value in tags:
            client.remove_tag(name, value)
    typer.echo(f"{name}: untagged {', '.join(tags)}")


@app.command("events")
@reports_errors
def events(
    name: JobName,
    warnings: Annotated[bool, typer.Option("--warnings", help="Only Warning events")] = False,
    output: OutputOption = Format.table,
) -> None:
    """The job's events: submitted, scheduled, retried, completed."""
    with make_client() as client:
        found = client.job_events(name, "Warning" if warnings else None)

    def table() -> RenderableType:
        rows = new_table("TIME", "TYPE", "REASON", "TASK", "MESSAGE")
        for event in found.data:
            whole_job = not event.taskrole_name or event.task_index is None or event.task_index < 0
            task = "-" if whole_job else f"{event.taskrole_name}[{event.task_index}]"
            rows.add_row(
                *cells(format_time(event.last_timestamp), event.type, event.reason, task, event.message)
            )
        return rows

    emit(found, output, table)


@app.command("attempts")
@reports_errors
def attempts(name: JobName, output: OutputOption = Format.table) -> None:
    """The job's attempts (each retry is one), newest first."""
    with make_client() as client:
        found = client.job_attempts(name)

    def table() -> RenderableType:
        rows = new_table("ATTEMPT", "STATE", "STARTED", "COMPLETED", "EXIT", "TYPE")
        for a in found:
            rows.add_row(
                *cells(a.attempt_index),
                styled_state(a.state),
                *cells(format_time(a.attempt_started_time), format_time(a.attempt_completed_time)),
                *cells(
                    f"{a.exit_code} {a.exit_phrase or ''}".strip() if a.exit_code is not None else "-",
                    a.exit_type,
                ),
            )
        return rows

    emit(found, output, table)


@app.command("config")
@reports_errors
def config(name: JobName, output: OutputOption = Format.yaml) -> None:
    """The job's protocol as submitted (secrets masked)."""
    with make_client() as client:
        protocol = client.job_config(name)
    emit(protocol, Format.json if output is Format.json else Format.yaml, lambda: Text(""))


@app.command("clone")
@reports_errors
def clone(
    name: JobName,
    new_name: Annotated[
        str | None, typer.Option("--name", help="The new job's name", show_default="<name>-<timestamp>")
    ] = None,
    secrets_file: Annotated[
        Path | None,
        typer.Option(
            "--secrets", dir_okay=False, help="YAML of the job's secrets (never given back by the platform)"
        ),
    ] = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = None,
) -> None:
    """Submit a copy of a job under a new name (OpenPAI never reuses a job name)."""
    with make_client() as client:
        protocol = client.job_config(name)
    if "secrets" in protocol:
        if secrets_file is None:
            fail(
                "SecretsRequired",
                f"{name} has secrets, which the platform never gives back; give them with --secrets FILE",
            )
        try:
            protocol["secrets"] = yaml.safe_load(secrets_file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            fail("InvalidFile", f"cannot read {secrets_file}: {exc}")
        if protocol["secrets"] == SECRET_MASK or SECRET_MASK in str(protocol["secrets"]):
            fail("InvalidFile", f"{secrets_file} still holds masked values ({SECRET_MASK})")
    original = str(protocol.get("name", name.split("~")[-1]))
    protocol["name"] = new_name or f"{original}-{time.strftime('%Y%m%d-%H%M%S')}"
    _submit_text(yaml.safe_dump(protocol, sort_keys=False), wait, timeout)
