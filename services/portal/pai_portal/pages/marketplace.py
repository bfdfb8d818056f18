"""The marketplace: search shared job templates, view one, star it, use it (Submit opens with its YAML),
publish one (from scratch or from a job), edit or delete one's own."""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import quote

import yaml
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from pai_portal.api import ApiError
from pai_portal.web import checked_form, form_text, portal, query, redirect, render, user_session

router = APIRouter()
PATH = "/api/v2/marketplace/templates"
ORDERS = (("stars", "Most starred"), ("uses", "Most used"), ("updated", "Recently updated"), ("name", "Name"))
PAGE = 24


def _tags(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _body(form: Any) -> dict[str, Any]:
    visibility = "groups" if form_text(form, "visibility") == "groups" else "all"
    return {
        "name": form_text(form, "name").strip(),
        "description": form_text(form, "description").strip(),
        "tags": _tags(form_text(form, "tags")),
        "protocol": form_text(form, "protocol"),
        "visibility": {"type": visibility, "groups": _tags(form_text(form, "groups"))},
    }


def _template_url(template_id: str) -> str:
    return f"/marketplace/{quote(template_id, safe='')}"


@router.get("/marketplace")
async def marketplace_page(
    request: Request,
    keyword: str = "",
    tag: str = "",
    order: str = "stars",
    page: Annotated[int, Query(ge=1)] = 1,
) -> Response:
    session = user_session(request)
    order = order if order in dict(ORDERS) else "stars"
    answer = await portal(request).api.get(
        PATH, session.token, keyword=keyword, tag=tag, order=order, offset=(page - 1) * PAGE, limit=PAGE
    )
    total = int(answer.get("totalCount", 0))
    return render(
        request,
        "marketplace.html",
        templates=answer.get("data", []),
        total=total,
        page=page,
        pages=max(1, -(-total // PAGE)),
        filters={"keyword": keyword, "tag": tag, "order": order},
        orders=ORDERS,
        query=query,
        template_url=_template_url,
    )


@router.get("/marketplace/new")
async def new_template_page(request: Request, job: str = "") -> Response:
    session = user_session(request)
    draft: dict[str, Any] = {"name": "", "description": "", "tags": "", "protocol": "", "groups": ""}
    if job and re.match(r"^[\w.-]+~[\w-]+$", job):
        try:
            config = await portal(request).api.get(f"/api/v2/jobs/{job}/config", session.token)
            if isinstance(config, dict):
                config.pop("secrets", None)  # a template never carries a job's secrets, even masked
                draft["protocol"] = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
                draft["name"] = str(config.get("name", ""))
                draft["description"] = str(config.get("description", "") or "")
        except ApiError as exc:
            session.flash(f"Could not read {job}: {exc.message}", "error")
    return render(request, "template_form.html", draft=draft, template=None, error=None)


@router.post("/marketplace/new")
async def publish(request: Request) -> Response:
    session = user_session(request)
    form = await checked_form(request)
    body = _body(form)
    try:
        created = await portal(request).api.call("POST", PATH, session.token, json_body=body)
    except ApiError as exc:
        draft = {**body, "tags": ", ".join(body["tags"]), "groups": ", ".join(body["visibility"]["groups"])}
        draft["visibility"] = body["visibility"]["type"]
        return render(request, "template_form.html", 400, draft=draft, template=None, error=exc.message)
    session.flash(f"Published {created['name']}.")
    return redirect(request, _template_url(created["id"]))


@router.get("/marketplace/{template_id}")
async def template_page(request: Request, template_id: str, edit: bool = False) -> Response:
    session = user_session(request)
    template = await portal(request).api.get(f"{PATH}/{quote(template_id, safe='')}", session.token)
    if edit and template.get("editable"):
        draft = {
            "name": template["name"],
            "description": template["description"],
            "tags": ", ".join(template["tags"]),
            "protocol": template["protocol"],
            "visibility": template["visibility"]["type"],
            "groups": ", ".join(template["visibility"]["groups"]),
        }
        return render(request, "template_form.html", draft=draft, template=template, error=None)
    return render(request, "template.html", template=template)


@router.post("/marketplace/{template_id}")
async def change_template(request: Request, template_id: str) -> Response:
    session = user_session(request)
    form = await checked_form(request)
    action = form_text(form, "action")
    api = portal(request).api
    path = f"{PATH}/{quote(template_id, safe='')}"
    try:
        if action == "star":
            await api.call("PUT", f"{path}/star", session.token)
        elif action == "unstar":
            await api.call("DELETE", f"{path}/star", session.token)
        elif action == "delete":
            await api.call("DELETE", path, session.token)
            session.flash("Template deleted.")
            return redirect(request, "/marketplace")
        elif action == "save":
            await api.call("PUT", path, session.token, json_body=_body(form))
            session.flash("Template saved.")
    except ApiError as exc:
        session.flash(f"{exc.code}: {exc.message}", "error")
    back = form_text(form, "back")
    return redirect(request, back if back.startswith("/marketplace") else _template_url(template_id))
