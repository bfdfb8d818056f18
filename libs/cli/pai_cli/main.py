"""The `pai` command line: sign in (password or single sign-on), jobs, virtual clusters, nodes, users,
groups, tokens and contexts (several clusters), in kubectl's style: `pai <noun> <verb>`, `-o json|yaml`.

Shell completion: `pai --install-completion` (bash, zsh, fish, PowerShell); job and context names complete.
`pai completion SHELL` prints the script for a named shell, where the running one cannot be found out (a
Dockerfile's `RUN`, a CI step, a process started without a shell).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import RenderableType
from rich.text import Text

from pai_cli import cli_admin, cli_cluster, cli_context, cli_dlq, cli_jobs
from pai_cli.cli_common import (
    Format,
    OutputOption,
    Settings,
    cells,
    complete_context,
    emit,
    fail,
    joined,
    make_client,
    new_table,
    reports_errors,
)
from pai_cli.client import PaiClient
from pai_cli.config import forget_token, load_config, read_file, save_config
from pai_cli.errors import UnauthorizedError

app = typer.Typer(
    name="pai",
    help="Command line for the OpenPAI-in-Python platform.",
    no_args_is_help=True,
    # Help text is shown as written (see cli_common.new_app).
    rich_markup_mode=None,
    # Expected errors are reported by reports_errors; anything else is a bug whose plain traceback helps.
    pretty_exceptions_enable=False,
)
app.add_typer(cli_jobs.app, name="job")
app.add_typer(cli_cluster.vc_app, name="vc")
app.add_typer(cli_cluster.node_app, name="node")
app.add_typer(cli_admin.user_app, name="user")
app.add_typer(cli_admin.group_app, name="group")
app.add_typer(cli_admin.token_app, name="token")
app.add_typer(cli_context.app, name="context")
app.add_typer(cli_dlq.admin_app, name="admin")


@app.callback()
def main(
    context: Annotated[
        str | None,
        typer.Option(
            "--context",
            "-c",
            help="Talk to this context instead of the current one (also $PAI_CONTEXT)",
            autocompletion=complete_context,
        ),
    ] = None,
) -> None:
    Settings.context = context


@app.command()
@reports_errors
def login(
    url: Annotated[
        str | None, typer.Option("--url", help="Platform URL", show_default="the context's")
    ] = None,
    user: Annotated[str | None, typer.Option("--user", help="User name (prompted when omitted)")] = None,
    password: Annotated[
        str | None, typer.Option("--password", help="Password (prompted, not echoed, when omitted)")
    ] = None,
    sso: Annotated[
        bool, typer.Option("--sso", help="Single sign-on: open a URL in a browser, paste the code")
    ] = False,
    code: Annotated[
        str | None, typer.Option("--code", help="With --sso: the one-time code (prompted when omitted)")
    ] = None,
    save_as: Annotated[
        str | None,
        typer.Option(
            "--save-as",
            help="Context to keep the login in",
            show_default="the one on that URL, else a new one",
        ),
    ] = None,
) -> None:
    """Log in and keep the URL, user and token in a context for later commands."""
    chosen = save_as or Settings.context
    known = read_file().contexts
    base = url or load_config(context=chosen if chosen in known else None).url
    with PaiClient(base) as client:
        if sso:
            offer = client.oidc_config()
            if not offer.enabled:
                fail("NoSingleSignOn", f"{client.base_url} offers no single sign-on; log in with a password")
            typer.echo(
                f"Open this URL in a browser and sign in with {offer.name}:\n\n  {client.login_url()}\n",
                err=True,
            )
            result = client.oidc_exchange((code or typer.prompt("One-time code")).strip())
            username, token = result.user, result.token
        else:
            username = user or typer.prompt("User")
            token = client.login(username, password or typer.prompt("Password", hide_input=True))
            username = client.username or username
        path = save_config(client.base_url, username, token, context=chosen)
    name = read_file(path).current
    typer.echo(f"logged in to {client.base_url} as {username} (context {name}, saved to {path})")


@app.command()
@reports_errors
def logout() -> None:
    """Revoke this context's token and forget it."""
    config = load_config(context=Settings.context)
    if not config.token:
        typer.echo("not logged in", err=True)
        return
    with make_client() as client:
        try:
            client.logout()
        except UnauthorizedError:
            pass  # expired or revoked already: forgetting it is all that is left to do
    if config.context is not None:
        forget_token(config.context)
    typer.echo(f"logged out of {config.url}")


@app.command()
@reports_errors
def whoami(output: OutputOption = Format.table) -> None:
    """Who this context is logged in as, and with which rights."""
    config = load_config(context=Settings.context)
    with make_client() as client:
        check = client.check_token()
        me = client.me()
    data = {
        "context": config.context,
        "url": config.url,
        "user": me.username,
        "admin": check.admin,
        "application": check.application,
        "groups": me.grouplist,
        "virtualClusters": me.virtual_cluster,
        "storages": me.storage_config,
    }

    def table() -> RenderableType:
        rows = new_table("FIELD", "VALUE")
        rows.show_header = False
        for key, value in data.items():
            shown = (
                joined(value)
                if isinstance(value, list)
                else ("yes" if value is True else "no" if value is False else value)
            )
            rows.add_row(Text(key, style="bold"), *cells(shown))
        return rows

    emit(data, output, table)


COMPLETION_SHELLS = ("bash", "zsh", "fish", "pwsh", "powershell")


@app.command()
def completion(
    shell: Annotated[str, typer.Argument(help=f"One of: {', '.join(COMPLETION_SHELLS)}")],
) -> None:
    """Print the shell completion script for SHELL (to source it, or to save it where the shell reads it)."""
    from typer._completion_classes import completion_init
    from typer._completion_shared import get_completion_script

    if shell not in COMPLETION_SHELLS:
        fail("UnknownShell", f"no completion for shell {shell!r}: use one of {', '.join(COMPLETION_SHELLS)}")
    # --show-completion finds the shell from the process tree and gives up without one.
    completion_init()
    typer.echo(get_completion_script(prog_name="pai", complete_var="_PAI_COMPLETE", shell=shell))


from pai_cli.up import register as _register_up  # noqa: E402  (after every command above)

_register_up(app)


if __name__ == "__main__":
    app()
