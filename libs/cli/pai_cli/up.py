"""``pai up``: the whole platform on this machine, with an example job if asked, until Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pai_cli.client import FINAL_STATES, PaiClient, PaiError
from pai_cli.config import save_config
from pai_cli.errors import ForbiddenError

# No hard wrapping: its lines often end up in a log file, where a wrapped line cannot be searched for.
console = Console(stderr=True, soft_wrap=True)


def unique_name(yaml_text: str, suffix: str) -> str:
    """Give the example job a fresh name: OpenPAI never reuses a job name, even after it finished."""
    return re.sub(
        r"(?m)^name:\s*['\"]?([\w-]+)['\"]?\s*$", lambda m: f"name: {m.group(1)}-{suffix}", yaml_text, count=1
    )


def up(
    nodes: Annotated[
        int, typer.Option("--nodes", min=1, max=64, help="Runtime agents (simulated nodes)")
    ] = 2,
    gpus_per_node: Annotated[int, typer.Option("--gpus-per-node", min=1, max=64)] = 4,
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="REST API port")] = 9186,
    data_dir: Annotated[
        Path,
        typer.Option("--data-dir", help="Where jobs, logs and the databases live (kept across restarts)"),
    ] = Path(os.environ.get("PAI_DATA_DIR", ".pai")),
    submit: Annotated[
        Path | None, typer.Option("--submit", help="A job YAML to submit once the platform is up")
    ] = None,
    exit_after_job: Annotated[
        bool, typer.Option("--exit-after-job", help="Stop once the submitted job ends")
    ] = False,
    simulate: Annotated[
        bool, typer.Option("--simulate", help="Simulated GPUs even where NVML finds real ones")
    ] = False,
    monitoring: Annotated[
        bool,
        typer.Option(
            "--monitoring", help="Also run Prometheus and Alertmanager (Debian's prometheus packages)"
        ),
    ] = False,
    cluster: Annotated[
        Path | None,
        typer.Option(
            "--cluster",
            help="The scheduler's cluster file: a HiveD config (YAML: VCs, borrowing, teams) or a node"
            " inventory (CSV), naming the nodes node-0, node-1, ... (default: one VC over the simulated"
            " nodes)",
        ),
    ] = None,
) -> None:
    """Start NATS, the MongoDB-wire server, every service and the runtime agents; stop them all on Ctrl-C."""
    # Imported here: the platform's modules bring the bus and database clients, which cost every other
    # `pai` command about 0.7 s of start-up (measured with python -X importtime).
    from pai_cli.monitoring_stack import MonitoringStack, MonitoringUnavailable, alertmanager_token
    from pai_cli.platform import Platform, PlatformError

    platform = Platform(
        data_dir=data_dir,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        port=port,
        nats_url=os.environ.get("PAI_NATS_URL"),
        mongo_url=os.environ.get("PAI_MONGO_URL"),
        use_real_gpus=not simulate,
        cluster_file=cluster,
    )
    started = time.monotonic()
    stopping = False
    stack = MonitoringStack(data_dir.resolve(), platform.url)
    supervising = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        if not supervising:  # still starting (or running the example): abandon that at once
            raise KeyboardInterrupt

    # Installed before anything starts, so that Ctrl-C, a kill or a closed terminal always stop the
    # platform through `finally` below (and a SIGKILL, which nothing can catch, takes the children down
    # with their parent-death signal).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        with console.status("starting the platform") as status:
            platform.start(progress=lambda msg: status.update(msg))
        if platform.takeover is not None:
            left = ", ".join(platform.takeover.stopped) or "none of its processes was still running"
            console.print(
                f"[yellow]the platform that pid {platform.takeover.pid} ran here ({platform.takeover.url})"
                f" was not stopped cleanly; cleaned up: {left}[/]"
            )
        if platform.mongo_note is not None:
            console.print(f"[yellow]{platform.mongo_note}[/]")
        # Written before the CLI's login is saved: whoever waits on that (scripts, the acceptance tests)
        # then finds the configuration too.
        stack.gateway_url = platform.url
        prometheus_yml = stack.write_config()
        console.print(f"[green]ready[/] in {time.monotonic() - started:.1f}s: {platform.url}")
        console.print(f"open {platform.url}/ in a browser for the web portal (API docs: /api/v2/docs)")
        user, password = platform.admin_credentials()
        console.print(f"admin user: [bold]{user}[/]  password: [bold]{password}[/]")
        console.print(f"data and logs: {platform.data_dir}")
        token: str | None = None
        with PaiClient(platform.url) as client:
            try:
                token = client.login(user, password)
            except ForbiddenError as exc:  # basic login turned off (PAI_BASIC_LOGIN=false)
                console.print(f"[yellow]{exc.message}[/] The CLI is not logged in: `pai login --sso`.")
        if token is not None:
            save_config(platform.url, user, token)
            console.print("the `pai` CLI is logged in as the admin (try `pai job list`)")
        console.print(f"Prometheus configuration: {prometheus_yml}")
        if monitoring:
            try:
                stack.start(alertmanager_token(platform.url, token, stack.token_file))
                for name, url in stack.urls.items():
                    console.print(f"{name}: {url}")
            except MonitoringUnavailable as exc:
                console.print(f"[yellow]--monitoring: {exc}[/]")
        exit_code = 0
        if submit is not None and token is not None:
            exit_code = _run_example(platform.url, user, token, submit)
            if exit_after_job:
                raise typer.Exit(exit_code)
        console.print("running; Ctrl-C stops everything")
        supervising = True
        while not stopping:
            for line in platform.supervise():
                console.print(f"[yellow]{line}[/]")
            time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("interrupted")
        raise typer.Exit(130) from None
    except (PlatformError, PaiError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    finally:
        supervising = True  # a second signal while stopping changes nothing
        with console.status("stopping"):
            stack.stop()
            platform.stop()
        console.print("stopped")


def _run_example(url: str, user: str, token: str, path: Path) -> int:
    text = unique_name(path.read_text(), time.strftime("%Y%m%d-%H%M%S"))
    with PaiClient(url, token=token, username=user) as client:
        key = client.submit_job(text)
        console.print(f"submitted [bold]{key}[/]")
        with console.status(f"{key}: submitted") as status:
            job = client.wait_for_job(
                key, timeout_s=600, on_state=lambda state, _job: status.update(f"{key}: {state}")
            )
        state = job.state
        color = "green" if state == "SUCCEEDED" else "red"
        console.print(f"{key}: [{color}]{state}[/] (exit code {job.job_status.app_exit_code})")
        roles = list(job.task_roles)
        if roles:
            console.print(f"its stdout (`pai job logs {key}`):")
            console.print(client.task_log(key, roles[0], 0), markup=False, highlight=False)
        return 0 if state in FINAL_STATES and state == "SUCCEEDED" else 1


def register(app: typer.Typer) -> None:
    app.command("up")(up)
