"""`pai user ...`, `pai group ...`, `pai token ...`: accounts, their groups and rights, and tokens."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import RenderableType

from pai_cli import routes
from pai_cli.cli_common import (
    Format,
    OutputOption,
    Settings,
    cells,
    emit,
    joined,
    make_client,
    new_app,
    new_table,
    reports_errors,
)
from pai_cli.config import load_config, save_config
from pai_cli.models import Group, User

user_app = new_app("Users (creating and changing them is for admins; a user may change their own password).")
group_app = new_app("Groups and the rights they give: admin, virtual clusters, storages (admins).")
token_app = new_app("Your tokens: list, create application tokens, revoke.")

UserName = Annotated[str, typer.Argument(help="User name")]
GroupName = Annotated[str, typer.Argument(help="Group name")]
Names = Annotated[list[str] | None, typer.Option(help="Repeat for several")]


def _say(message: str) -> None:
    typer.echo(message)


# ---- users ---------------------------------------------------------------------------------------------


def _users_table(users: list[User]) -> RenderableType:
    rows = new_table("USER", "ADMIN", "GROUPS", "VIRTUAL CLUSTERS", "EMAIL")
    for u in users:
        rows.add_row(
            *cells(
                u.username,
                "yes" if u.admin else "no",
                joined(u.grouplist),
                joined(u.virtual_cluster),
                u.email or "-",
            )
        )
    return rows


@user_app.command("list")
@reports_errors
def user_list(output: OutputOption = Format.table) -> None:
    """Every user."""
    with make_client() as client:
        users = client.list_users()
    emit(users, output, lambda: _users_table(users))


@user_app.command("get")
@reports_errors
def user_get(username: UserName, output: OutputOption = Format.table) -> None:
    """One user: groups, rights, email."""
    with make_client() as client:
        user = client.get_user(username)
    emit(user, output, lambda: _users_table([user]))


@user_app.command("create")
@reports_errors
def user_create(
    username: UserName,
    password: Annotated[
        str,
        typer.Option(
            "--password",
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            help="Password (prompted when omitted)",
        ),
    ],
    email: Annotated[str, typer.Option("--email", help="Email address")] = "",
    admin: Annotated[bool, typer.Option("--admin", help="Make the user an admin")] = False,
    vc: Annotated[
        list[str] | None, typer.Option("--vc", help="A virtual cluster the user may use (repeatable)")
    ] = None,
) -> None:
    """Create a user (admins)."""
    with make_client() as client:
        reply = client.create_user(username, password, email=email, admin=admin, virtual_clusters=vc or [])
    _say(f"{username}: {reply.message}")


@user_app.command("update")
@reports_errors
def user_update(
    username: UserName,
    email: Annotated[str | None, typer.Option("--email", help="New email address")] = None,
    admin: Annotated[
        bool | None, typer.Option("--admin/--no-admin", help="Grant or take admin rights")
    ] = None,
    vc: Annotated[
        list[str] | None, typer.Option("--vc", help="Replace the user's virtual clusters (repeatable)")
    ] = None,
) -> None:
    """Change a user's email, admin rights or virtual clusters (admins)."""
    if email is None and admin is None and vc is None:
        typer.echo("nothing to change: give --email, --admin/--no-admin or --vc", err=True)
        raise typer.Exit(2)
    with make_client() as client:
        reply = client.update_user(username, email=email, admin=admin, virtual_clusters=vc)
    _say(f"{username}: {reply.message}")


@user_app.command("delete")
@reports_errors
def user_delete(
    username: UserName,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
) -> None:
    """Delete a user (admins); their tokens stop working at once."""
    if not yes:
        typer.confirm(f"delete user {username}?", abort=True)
    with make_client() as client:
        reply = client.delete_user(username)
    _say(f"{username}: {reply.message}")


@user_app.command("set-groups")
@reports_errors
def user_set_groups(username: UserName, groups: Annotated[list[str], typer.Argument(help="Groups")]) -> None:
    """Replace the user's groups (admins)."""
    with make_client() as client:
        client.set_user_grouplist(username, groups)
    _say(f"{username}: groups {', '.join(groups)}")


@user_app.command("add-group")
@reports_errors
def user_add_group(username: UserName, group: GroupName) -> None:
    """Add the user to a group (admins)."""
    with make_client() as client:
        client.add_user_to_group(username, group)
    _say(f"{username}: added to {group}")


@user_app.command("remove-group")
@reports_errors
def user_remove_group(username: UserName, group: GroupName) -> None:
    """Remove the user from a group (admins)."""
    with make_client() as client:
        client.remove_user_from_group(username, group)
    _say(f"{username}: removed from {group}")


@user_app.command("passwd")
@reports_errors
def user_passwd(
    username: Annotated[str | None, typer.Argument(help="User name", show_default="yourself")] = None,
    old: Annotated[
        str | None, typer.Option("--old-password", help="Your current password (asked for your own account)")
    ] = None,
    new: Annotated[
        str,
        typer.Option(
            "--new-password", prompt=True, hide_input=True, confirmation_prompt=True, help="The new password"
        ),
    ] = "",
) -> None:
    """Change a password: your own (with the current one) or, as an admin, anyone's. Ends their sessions."""
    with make_client() as client:
        target = username or client.username
        if not target:
            typer.echo("log in first, or name the user", err=True)
            raise typer.Exit(2)
        if target == client.username and old is None:
            old = typer.prompt("Current password", hide_input=True)
        client.set_user_password(target, new, old)
        if target != client.username:
            _say(f"{target}: password changed; their login sessions have ended")
            return
        # A new password ends your login sessions, this one included: log in again with it.
        token = client.login(target, new)
        save_config(client.base_url, target, token, context=load_config(context=Settings.context).context)
    _say(f"{target}: password changed; logged in again")


# ---- groups --------------------------------------------------------------------------------------------


def _groups_table(groups: list[Group]) -> RenderableType:
    rows = new_table("GROUP", "ADMIN", "VIRTUAL CLUSTERS", "STORAGES", "EXTERNAL NAME", "DESCRIPTION")
    for g in groups:
        acls = g.acls
        rows.add_row(
            *cells(
                g.groupname,
                "yes" if acls.get("admin") else "no",
                joined(acls.get("virtualClusters") or []),
                joined(acls.get("storageConfigs") or []),
                g.external_name or "-",
                g.description or "-",
            )
        )
    return rows


@group_app.command("list")
@reports_errors
def group_list(output: OutputOption = Format.table) -> None:
    """Every group and its rights."""
    with make_client() as client:
        groups = client.list_groups()
    emit(groups, output, lambda: _groups_table(groups))


@group_app.command("get")
@reports_errors
def group_get(groupname: GroupName, output: OutputOption = Format.table) -> None:
    """One group and its rights."""
    with make_client() as client:
        group = client.get_group(groupname)
    emit(group, output, lambda: _groups_table([group]))


AdminFlag = Annotated[bool | None, typer.Option("--admin/--no-admin", help="Whether members are admins")]
VcOption = Annotated[
    list[str] | None, typer.Option("--vc", help="A virtual cluster members may use (repeatable)")
]
StorageOption = Annotated[
    list[str] | None, typer.Option("--storage", help="A storage members may mount (repeatable)")
]
ExternalOption = Annotated[
    str | None,
    typer.Option("--external-name", help="The identity provider's group this one maps (single sign-on)"),
]
DescriptionOption = Annotated[str | None, typer.Option("--description", help="What the group is for")]


@group_app.command("create")
@reports_errors
def group_create(
    groupname: GroupName,
    description: DescriptionOption = None,
    external_name: ExternalOption = None,
    admin: AdminFlag = None,
    vc: VcOption = None,
    storage: StorageOption = None,
) -> None:
    """Create a group with its rights (admins)."""
    with make_client() as client:
        reply = client.create_group(
            groupname,
            description=description or "",
            external_name=external_name or "",
            extension=routes.acls(bool(admin), vc, storage),
        )
    _say(f"{groupname}: {reply.message}")


@group_app.command("update")
@reports_errors
def group_update(
    groupname: GroupName,
    description: DescriptionOption = None,
    external_name: ExternalOption = None,
    admin: AdminFlag = None,
    vc: VcOption = None,
    storage: StorageOption = None,
) -> None:
    """Change a group's description, external name or rights (the rights given replace those it had)."""
    with make_client() as client:
        acls: dict[str, object] = {}
        if admin is not None:
            acls["admin"] = admin
        if vc is not None:
            acls["virtualClusters"] = vc
        if storage is not None:
            acls["storageConfigs"] = storage
        if description is None and external_name is None and not acls:
            typer.echo(
                "nothing to change: give --description, --external-name, --admin, --vc or --storage", err=True
            )
            raise typer.Exit(2)
        reply = client.update_group(
            groupname,
            description=description,
            external_name=external_name,
            extension={"acls": acls} if acls else None,
        )
    _say(f"{groupname}: {reply.message}")


@group_app.command("delete")
@reports_errors
def group_delete(
    groupname: GroupName,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
) -> None:
    """Delete a group (admins); its members lose the rights it gave."""
    if not yes:
        typer.confirm(f"delete group {groupname}?", abort=True)
    with make_client() as client:
        reply = client.delete_group(groupname)
    _say(f"{groupname}: {reply.message}")


@group_app.command("members")
@reports_errors
def group_members(groupname: GroupName, output: OutputOption = Format.table) -> None:
    """The users of a group (admins)."""
    with make_client() as client:
        members = client.group_members(groupname)

    def table() -> RenderableType:
        rows = new_table("USER", "ADMIN")
        for member in members:
            rows.add_row(*cells(member.username, "yes" if member.cluster_admin else "no"))
        return rows

    emit(members, output, table)


# ---- tokens --------------------------------------------------------------------------------------------


@token_app.command("list")
@reports_errors
def token_list(output: OutputOption = Format.table) -> None:
    """Your valid tokens (login and application)."""
    with make_client() as client:
        tokens = client.list_tokens()
        mine = client.token

    def table() -> RenderableType:
        rows = new_table("TOKEN", "THIS CLI'S")
        for token in tokens:
            rows.add_row(*cells(token, "yes" if token == mine else ""))
        return rows

    emit(tokens, output, table)


@token_app.command("create")
@reports_errors
def token_create() -> None:
    """Create an application token (never expires; cannot manage users, groups or tokens). Prints it."""
    with make_client() as client:
        created = client.create_application_token()
    typer.echo(created.token)


@token_app.command("revoke")
@reports_errors
def token_revoke(token: Annotated[str, typer.Argument(help="The token to revoke")]) -> None:
    """Revoke one of your tokens; it stops working at once."""
    with make_client() as client:
        reply = client.revoke_token(token)
    _say(reply.message)
