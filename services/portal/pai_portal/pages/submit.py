"""Submit: the YAML editor with the server's problems on their lines, the simple single-role form that
writes YAML, import from a file or a marketplace template, and clone of an earlier job."""

from __future__ import annotations

import re
import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from pai_portal import jobform
from pai_portal.api import ApiError
from pai_portal.web import checked_form, form_text, job_url, portal, redirect, render, user_session
from pai_portal.yaml_lines import Problem, problems_with_lines

router = APIRouter()

MAX_IMPORT_BYTES = 256 * 1024
_ACCEPTED = re.compile(r"Update job (\S+) for user (\S+) successfully")


def _page(
    request: Request,
    text: str,
    status_code: int = 200,
    problems: list[Problem] | None = None,
    simple: jobform.SimpleJob | None = None,
    source: str = "",
) -> Response:
    problems = problems or []
    by_line: dict[int, list[Problem]] = {}
    for problem in problems:
        if problem.line is not None:
            by_line.setdefault(problem.line, []).append(problem)
    return render(
        request,
        "submit.html",
        status_code,
        text=text,
        lines=text.splitlines(),
        problems=problems,
        by_line=by_line,
        whole=[p for p in problems if p.line is None],
        simple=simple or jobform.SimpleJob(),
        source=source,
    )


async def _template_yaml(request: Request, token: str, template_id: str) -> tuple[str, str]:
    api = portal(request).api
    template = await api.get(f"/api/v2/marketplace/templates/{template_id}", token)
    try:
        await api.call("POST", f"/api/v2/marketplace/templates/{template_id}/uses", token)
    except ApiError:
        pass  # a use that is not counted does not stop the user from using the template
    return str(template.get("protocol", "")), f"marketplace template “{template.get('name', template_id)}”"


async def _clone_yaml(request: Request, token: str, key: str) -> tuple[str, str]:
    config: Any = await portal(request).api.get(f"/api/v2/jobs/{key}/config", token)
    if not isinstance(config, dict):
        raise ApiError(404, "NoJobError", f"Job {key} has no config to clone.")
    name = jobform.next_name(str(config.get("name") or key.split("~", 1)[1]), secrets.token_hex(2))
    return jobform.clone_yaml(config, name), f"a copy of {key} (secrets are masked: enter them again)"


@router.get("/submit")
async def submit_page(request: Request, template: str = "", clone: str = "") -> Response:
    session = user_session(request)
    text, source = "", ""
    try:
        if template:
            text, source = await _template_yaml(request, session.token, template)
        elif clone:
            text, source = await _clone_yaml(request, session.token, clone)
    except ApiError as exc:
        session.flash(f"Could not load it: {exc.message}", "error")
    return _page(request, text, source=source)


@router.post("/submit")
async def submit(request: Request) -> Response:
    session = user_session(request)
    form = await checked_form(request)
    action = form_text(form, "action", "submit")
    if action == "form":
        simple = jobform.from_form({k: v for k, v in form.items() if isinstance(v, str)})
        if simple.problems:
            for problem in simple.problems:
                session.flash(problem, "error")
            return _page(request, form_text(form, "yaml"), 400, simple=simple)
        return _page(request, jobform.to_yaml(simple), simple=simple, source="the simple form")
    if action == "import":
        upload = form.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            session.flash("Choose a YAML file to import.", "error")
            return _page(request, form_text(form, "yaml"), 400)
        raw = await upload.read(MAX_IMPORT_BYTES + 1)
        if len(raw) > MAX_IMPORT_BYTES:
            session.flash(f"The file is larger than {MAX_IMPORT_BYTES // 1024} KiB.", "error")
            return _page(request, form_text(form, "yaml"), 400)
        try:
            return _page(request, raw.decode("utf-8"), source=f"the file {upload.filename}")
        except UnicodeDecodeError:
            session.flash("The file is not UTF-8 text.", "error")
            return _page(request, form_text(form, "yaml"), 400)
    text = form_text(form, "yaml")
    if not text.strip():
        session.flash("The YAML is empty.", "error")
        return _page(request, text, 400)
    try:
        answer = await portal(request).api.call(
            "POST", "/api/v2/jobs", session.token, content=text.encode(), content_type="text/yaml"
        )
    except ApiError as exc:
        if exc.code == "InvalidProtocolError":
            problems = problems_with_lines(text, exc.message)
            return _page(request, text, 400, problems=problems)
        problems = [Problem("(root)", f"{exc.code}: {exc.message}", None)]
        return _page(request, text, exc.status, problems=problems)
    accepted = _ACCEPTED.search(str((answer or {}).get("message", "")))
    name = accepted.group(1) if accepted else jobform.job_name_of(text)
    session.flash(f"Submitted {name}.")
    return redirect(request, job_url(f"{session.user}~{name}") if name else "/jobs")
