"""Administration: users, groups (virtual-cluster and storage ACLs), storages, application tokens, the
audit log and the exit spec. Every change is one API call made with the admin's own token: the API
decides, the portal only shows what it answered."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Annotated, Any
from urllib.parse import quote

import yaml
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from pai_portal import tokens
from pai_portal.api import ApiError
from pai_portal.web import (
    admin_session,
    checked_form,
    form_text,
    portal,
    query,
    redirect,
    render,
    user_session,
)

router = APIRouter()

STORAGE_TYPES = ("nfs", "samba", "azureFile", "azureBlob", "local", "pvc")


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


async def _act(request: Request, call: Awaitable[Any], done: str, back: str) -> Response:
    session = user_session(request)
    try:
        await call
        session.flash(done)
    except ApiError as exc:
        session.flash(f"{exc.code}: {exc.message}", "error")
    return redirect(request, back)


# ---- users ---------------------------------------------------------------------------------------------


@router.get("/admin/users")
async def users_page(request: Request) -> Response:
    session = admin_session(request)
    api = portal(request).api
    users = await api.get("/api/v2/users", session.token)
    groups = await api.get("/api/v2/groups", session.token)
    return render(request, "admin_users.html", users=users, groups=groups)


@router.post("/admin/users")
async def create_user(request: Request) -> Response:
    session = admin_session(request)
    form = await checked_form(request)
    username = form_text(form, "username").strip()
    body = {
        "username": username,
        "password": form_text(form, "password"),
        "email": form_text(form, "email").strip(),
        "admin": form_text(form, "admin") == "on",
        "virtualCluster": _names(form_text(form, "virtualClusters")),
    }
    call = portal(request).api.call("POST", "/api/v2/users", session.token, json_body=body)
    return await _act(request, call, f"Created user {username}.", "/admin/users")


@router.post("/admin/users/{username}/groups")
async def set_user_groups(request: Request, username: str) -> Response:
    session = admin_session(request)
    form = await checked_form(request)
    body = {"grouplist": _names(form_text(form, "grouplist"))}
    call = portal(request).api.call(
        "PUT", f"/api/v2/users/{username}/grouplist", session.token, json_body=body
    )
    return await _act(request, call, f"Changed the groups of {username}.", "/admin/users")


@router.post("/admin/users/{username}/delete")
async def delete_user(request: Request, username: str) -> Response:
    session = admin_session(request)
    await checked_form(request)
    call = portal(request).api.call("DELETE", f"/api/v2/users/{username}", session.token)
    return await _act(request, call, f"Deleted user {username}.", "/admin/users")


# ---- groups --------------------------------------------------------------------------------------------


@router.get("/admin/groups")
async def groups_page(request: Request) -> Response:
    session = admin_session(request)
    groups = await portal(request).api.get("/api/v2/groups", session.token)
    return render(request, "admin_groups.html", groups=groups)


def _acls(form: Any) -> dict[str, Any]:
    return {
        "admin": form_text(form, "admin") == "on",
        "virtualClusters": _names(form_text(form, "virtualClusters")),
        "storageConfigs": _names(form_text(form, "storageConfigs")),
    }


@router.post("/admin/groups")
async def create_group(request: Request) -> Response:
    session = admin_session(request)
    form = await checked_form(request)
    name = form_text(form, "groupname").strip()
    body = {
        "groupname": name,
        "description": form_text(form, "description").strip(),
        "externalName": form_text(form, "externalName").strip(),
        "extension": {"acls": _acls(form)},
    }
    call = portal(request).api.call("POST", "/api/v2/groups", session.token, json_body=body)
    return await _act(request, call, f"Created group {name}.", "/admin/groups")


@router.post("/admin/groups/{groupname}/acls")
async def set_group_acls(request: Request, groupname: str) -> Response:
    session = admin_session(request)
    form = await checked_form(request)
    call = portal(request).api.call(
        "PUT", f"/api/v2/groups/{groupname}/extension/acls", session.token, json_body={"data": _acls(form)}
    )
    return await _act(request, call, f"Changed the ACLs of {groupname}.", "/admin/groups")


@router.post("/admin/groups/{groupname}/delete")
async def delete_group(request: Request, groupname: str) -> Response:
    session = admin_session(request)
    await checked_form(request)
    call = portal(request).api.call("DELETE", f"/api/v2/groups/{groupname}", session.token)
    return await _act(request, call, f"Deleted group {groupname}.", "/admin/groups")


# ---- storages ------------------------------------------------------------------------------------------

NO_STORAGE_ROUTES = (
    "This platform's API has no storage management yet ({method} /api/v2/storages answered {status}):"
    " storages cannot be created, changed or deleted here until the storage service offers it."
)


@router.get("/admin/storages")
async def storages_page(request: Request) -> Response:
    session = admin_session(request)
    api = portal(request).api
    try:
        answer = await api.get("/api/v2/storages", session.token)
        storages, error = answer.get("storages", []) if isinstance(answer, dict) else answer, None
    except ApiError as exc:
        storages, error = [], exc.message

    async def detailed(storage: dict[str, Any]) -> dict[str, Any]:
        # The list is OpenPAI's summary; the detail adds the type, its data and read-only.
        name = quote(str(storage.get("name", "")), safe="")
        found = await _optional_detail(api.get(f"/api/v2/storages/{name}", session.token))
        return {**storage, **found}

    storages = list(await asyncio.gather(*(detailed(s) for s in storages)))
    return render(
        request,
        "admin_storages.html",
        storages=storages,
        error=error,
        types=STORAGE_TYPES,
        managed=await storage_routes_present(request, session.token),
    )


async def _optional_detail(call: Awaitable[Any]) -> dict[str, Any]:
    try:
        found = await call
    except ApiError:
        return {}
    return found if isinstance(found, dict) else {}


async def storage_routes_present(request: Request, token: str) -> bool:
    """Whether the API has the storage service's own routes (``GET /api/v2/storages/{name}`` and the
    admin routes beside it): a name that exists nowhere answers "no such storage" where they are, and
    "no such API" where they are not. Read-only, so asking changes nothing."""
    try:
        await portal(request).api.get("/api/v2/storages/pai-portal-probe", token)
    except ApiError as exc:
        return not exc.missing_route
    return True


def _storage_body(form: Any, name: str) -> dict[str, Any]:
    data_text = form_text(form, "data").strip()
    data = yaml.safe_load(data_text) if data_text else {}
    if not isinstance(data, dict):
        raise ApiError(
            400, "InvalidParametersError", "data: write the type's fields as YAML or JSON key: value"
        )
    body: dict[str, Any] = {
        "name": name,
        "type": form_text(form, "type"),
        "share": form_text(form, "share") == "on",
        "default": form_text(form, "default") == "on",
        "readOnly": form_text(form, "readOnly") == "on",
        "data": data,
    }
    options = _names(form_text(form, "mountOptions"))
    if options:
        body["mountOptions"] = options
    return body


async def _storage_call(request: Request, method: str, path: str, body: Any, done: str) -> Response:
    session = admin_session(request)
    try:
        await portal(request).api.call(method, path, session.token, json_body=body)
        session.flash(done)
    except ApiError as exc:
        if exc.missing_route:
            session.flash(NO_STORAGE_ROUTES.format(method=method, status=exc.status), "error")
        else:
            session.flash(f"{exc.code}: {exc.message}", "error")
    except yaml.YAMLError as exc:
        session.flash(f"data: not YAML or JSON ({exc})", "error")
    return redirect(request, "/admin/storages")


@router.post("/admin/storages")
async def create_storage(request: Request) -> Response:
    form = await checked_form(request)
    name = form_text(form, "name").strip()
    try:
        body = _storage_body(form, name)
    except (ApiError, yaml.YAMLError) as exc:
        admin_session(request).flash(f"Not created: {getattr(exc, 'message', exc)}", "error")
        return redirect(request, "/admin/storages")
    return await _storage_call(request, "POST", "/api/v2/storages", body, f"Created storage {name}.")


@router.post("/admin/storages/{name}/delete")
async def delete_storage(request: Request, name: str) -> Response:
    await checked_form(request)
    return await _storage_call(
        request, "DELETE", f"/api/v2/storages/{name}", None, f"Deleted storage {name}."
    )


# ---- tokens --------------------------------------------------------------------------------------------


@router.get("/tokens")
async def tokens_page(request: Request) -> Response:
    session = user_session(request)
    answer = await portal(request).api.get("/api/v2/tokens", session.token)
    rows = [tokens.describe(t, session.token) for t in (answer or {}).get("tokens", [])]
    rows.sort(key=lambda r: r["issued_ms"] or 0, reverse=True)
    return render(request, "tokens.html", tokens=rows, new_token=None)


@router.post("/tokens")
async def create_token(request: Request) -> Response:
    session = user_session(request)
    await checked_form(request)
    try:
        answer = await portal(request).api.call("POST", "/api/v2/tokens/application", session.token)
    except ApiError as exc:
        session.flash(f"{exc.code}: {exc.message}", "error")
        return redirect(request, "/tokens")
    listed = await portal(request).api.get("/api/v2/tokens", session.token)
    rows = [tokens.describe(t, session.token) for t in (listed or {}).get("tokens", [])]
    rows.sort(key=lambda r: r["issued_ms"] or 0, reverse=True)
    # An application token is shown once, to its owner, on the page that created it (as OpenPAI does).
    return render(request, "tokens.html", tokens=rows, new_token=str(answer.get("token", "")))


@router.post("/tokens/{token_id}/revoke")
async def revoke_token(request: Request, token_id: str) -> Response:
    session = user_session(request)
    await checked_form(request)
    listed = await portal(request).api.get("/api/v2/tokens", session.token)
    match = [t for t in (listed or {}).get("tokens", []) if tokens.claims(t).get("jti") == token_id]
    if not match:
        session.flash("That token is not among yours (already revoked or expired).", "error")
        return redirect(request, "/tokens")
    if match[0] == session.token:
        session.flash("That is this session's token: sign out instead.", "error")
        return redirect(request, "/tokens")
    call = portal(request).api.call("DELETE", f"/api/v2/tokens/{match[0]}", session.token)
    return await _act(request, call, "Token revoked.", "/tokens")


# ---- audit log and exit spec ---------------------------------------------------------------------------


@router.get("/admin/audit")
async def audit_page(
    request: Request,
    target: str = "",
    actor: str = "",
    page: Annotated[int, Query(ge=1)] = 1,
) -> Response:
    session = admin_session(request)
    size = 50
    answer = await portal(request).api.get(
        "/api/v2/audit-log", session.token, target=target, actor=actor, offset=(page - 1) * size, limit=size
    )
    total = int(answer.get("totalCount", 0))
    return render(
        request,
        "admin_audit.html",
        entries=answer.get("data", []),
        total=total,
        page=page,
        pages=max(1, -(-total // size)),
        filters={"target": target, "actor": actor},
        query=query,
    )


@router.get("/admin/exit-spec")
async def exit_spec_page(request: Request) -> Response:
    session = admin_session(request)
    answer = await portal(request).api.get("/api/v2/diagnosis/exit-spec", session.token)
    spec = answer.get("spec", {}) if isinstance(answer, dict) else {}
    entries = spec.get("spec", spec.get("entries", [])) if isinstance(spec, dict) else []
    return render(
        request, "admin_exit_spec.html", meta=answer, entries=entries if isinstance(entries, list) else []
    )


@router.post("/admin/exit-spec")
async def put_exit_spec(request: Request) -> Response:
    session = admin_session(request)
    form = await checked_form(request)
    mode = form_text(form, "mode")
    api = portal(request).api
    if mode == "reset":
        call = api.call("DELETE", "/api/v2/diagnosis/exit-spec", session.token)
        return await _act(request, call, "The exit spec is the shipped one again.", "/admin/exit-spec")
    mode = "overlay" if mode == "overlay" else "replace"
    call = api.call(
        "PUT",
        f"/api/v2/diagnosis/exit-spec?mode={mode}",
        session.token,
        content=form_text(form, "text").encode(),
        content_type="text/yaml",
    )
    return await _act(request, call, f"Exit spec updated ({mode}).", "/admin/exit-spec")
