"""The portal as a user sees it, in a real Chromium against `pai up`: sign in, submit by pasting YAML and
watch the job succeed without reloading, read its log, find it in the list, stop a running job, use a
marketplace template, administer users and groups, see protocol errors on their lines, see a hostile tag
as text; and the self-hosted API docs render with every other origin blocked.

Each test saves full-page screenshots (see conftest's `shots`).
"""

from __future__ import annotations

import re
import time

import httpx
from playwright.sync_api import Browser, Page, Route, expect

from tests.acceptance.harness import JobLedger, RunningPlatform, job_key, wait_final
from tests.portal.conftest import WAIT_MS, Shots, sign_in


def unique(prefix: str) -> str:
    return f"{prefix}-{int(time.time() * 1000)}"


def job_yaml(name: str, commands: list[str]) -> str:
    lines = "\n".join(f"      - {c!r}" for c in commands)
    return (
        "protocolVersion: 2\n"
        f"name: {name}\n"
        "type: job\n"
        "prerequisites:\n"
        "  - type: dockerimage\n"
        "    uri: 'python:3.11-slim'\n"
        "    name: image\n"
        "taskRoles:\n"
        "  worker:\n"
        "    instances: 1\n"
        "    dockerImage: image\n"
        "    resourcePerInstance: {gpu: 0, cpu: 1, memoryMB: 256}\n"
        "    commands:\n"
        f"{lines}\n"
    )


def paste_and_submit(page: Page, url: str, text: str) -> None:
    page.goto(f"{url}/submit")
    page.get_by_label("YAML", exact=True).fill(text)
    page.get_by_role("button", name="Submit job").click()


def test_submit_watch_logs_and_list(
    page: Page, pai: RunningPlatform, ledger: JobLedger, shots: Shots
) -> None:
    name = unique("portal-hello")
    marker = f"marker-{name}"
    shots.take(page, "home")
    paste_and_submit(page, pai.url, job_yaml(name, [f"echo {marker}", "sleep 2"]))
    ledger.expect(f"{pai.admin_user}~{name}", "SUCCEEDED")
    page.wait_for_url(re.compile(rf"/jobs/{pai.admin_user}~{name}$"))
    # A value the page would lose if it reloaded: the state must change in place (the event stream).
    page.evaluate("window.__sameDocument = 'yes'")
    expect(page.locator("#job-state")).to_have_text("SUCCEEDED", timeout=WAIT_MS)
    assert page.evaluate("window.__sameDocument") == "yes", "the job page reloaded"
    expect(page.locator("#task-table")).to_contain_text("SUCCEEDED")
    # Every event shows when it happened (the API gives ISO 8601 times; the page once showed dashes).
    events = page.locator("section[aria-labelledby=events-h] tbody tr")
    expect(events.first).to_be_visible()
    for row in events.all():
        expect(row.locator("td").first).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$"))
    shots.take(page, "job-succeeded")

    page.get_by_role("link", name="Logs of worker 0").click()
    expect(page.locator("#log")).to_contain_text(marker)
    shots.take(page, "log-stdout")
    page.get_by_role("link", name="all", exact=True).click()
    expect(page.locator("#log")).to_contain_text(marker)

    page.goto(f"{pai.url}/jobs")
    page.get_by_label("Keyword").fill(name)
    page.get_by_role("button", name="Apply filters").click()
    row = page.locator("#job-table tbody tr", has=page.get_by_role("link", name=name, exact=True))
    expect(row).to_have_count(1)
    expect(row).to_contain_text("SUCCEEDED")
    shots.take(page, "job-list")


def test_home_counts_my_jobs_by_state(
    browser: Browser, pai: RunningPlatform, ledger: JobLedger, shots: Shots
) -> None:
    """A new user's home page counts their own jobs per state (one `GET /api/v2/jobs/counts`), not
    anybody else's."""
    user, password = unique("counter"), "a-good-password"
    with pai.client() as admin:
        created = admin.post("/api/v2/users", json={"username": user, "password": password})
        assert created.status_code == 201, created.text
    with pai.client(pai.login(user, password)) as client:
        for name, commands in ((unique("home-ok"), ["true"]), (unique("home-bad"), ["exit 3"])):
            submitted = client.post(
                "/api/v2/jobs", content=job_yaml(name, commands), headers={"Content-Type": "text/yaml"}
            )
            key = ledger.expect(job_key(submitted, user, name), "FAILED" if "bad" in name else "SUCCEEDED")
            wait_final(client, key)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        tab = context.new_page()
        sign_in(tab, pai.url, user, password)
        tab.goto(f"{pai.url}/")
        counts = tab.get_by_role("region", name="My jobs by state")
        for state, n in (("Succeeded", 1), ("Failed", 1), ("Waiting", 0), ("Running", 0), ("Stopped", 0)):
            expect(counts.get_by_role("link", name=f"{state}: {n}", exact=True)).to_be_visible()
        # The quota bar is mostly green when little is used: the page says what its colours mean.
        vcs = tab.get_by_role("region", name="My virtual clusters")
        expect(vcs.get_by_text("orange is used, green is still available")).to_be_visible()
        shots.take(tab, "home-new-user")
    finally:
        context.close()


def test_stop_a_running_job(page: Page, pai: RunningPlatform, ledger: JobLedger, shots: Shots) -> None:
    name = unique("portal-long")
    paste_and_submit(page, pai.url, job_yaml(name, ["sleep 600"]))
    ledger.expect(f"{pai.admin_user}~{name}", "STOPPED")
    page.wait_for_url(re.compile(rf"/jobs/{pai.admin_user}~{name}$"))
    expect(page.locator("#job-state")).to_have_text("RUNNING", timeout=WAIT_MS)
    shots.take(page, "job-running")
    page.get_by_role("button", name="Stop job").click()
    expect(page.locator("#job-state")).to_have_text("STOPPED", timeout=WAIT_MS)
    shots.take(page, "job-stopped")


def test_bulk_stop_from_the_list(page: Page, pai: RunningPlatform, ledger: JobLedger) -> None:
    names = [unique("portal-bulk-a"), unique("portal-bulk-b")]
    with pai.client() as client:
        for name in names:
            response = client.post(
                "/api/v2/jobs", content=job_yaml(name, ["sleep 600"]), headers={"Content-Type": "text/yaml"}
            )
            assert response.status_code == 202, response.text
            ledger.expect(f"{pai.admin_user}~{name}", "STOPPED")
    page.goto(f"{pai.url}/jobs?keyword=portal-bulk")
    for name in names:
        page.get_by_label(f"Select {name}").check()
    page.get_by_role("button", name="Stop selected").click()
    expect(page.get_by_role("status")).to_contain_text("Asked 2 job(s) to stop")


def test_use_a_marketplace_template(
    page: Page, pai: RunningPlatform, ledger: JobLedger, shots: Shots
) -> None:
    page.goto(f"{pai.url}/marketplace")
    shots.take(page, "marketplace")
    card = page.locator(".template-card", has=page.get_by_role("link", name="Hello world", exact=True))
    before = int(re.search(r"used (\d+) time", card.inner_text()).group(1))  # type: ignore[union-attr]
    card.get_by_role("link", name="Use Hello world").click()
    editor = page.get_by_label("YAML", exact=True)
    expect(editor).to_have_value(re.compile(r"protocolVersion: 2"))
    expect(page.locator("#source")).to_contain_text("Hello world")
    shots.take(page, "submit-from-template")
    name = unique("portal-template")
    editor.fill(re.sub(r"(?m)^name: .*$", f"name: {name}", editor.input_value(), count=1))
    page.get_by_role("button", name="Submit job").click()
    ledger.expect(f"{pai.admin_user}~{name}", "SUCCEEDED")
    page.wait_for_url(re.compile(rf"/jobs/{pai.admin_user}~{name}$"))
    expect(page.locator("#job-state")).to_have_text("SUCCEEDED", timeout=WAIT_MS)
    page.goto(f"{pai.url}/marketplace")
    card = page.locator(".template-card", has=page.get_by_role("link", name="Hello world", exact=True))
    expect(card).to_contain_text(f"used {before + 1} time")
    card.get_by_role("button", name="Star Hello world").click()
    expect(card.get_by_role("button", name="Unstar Hello world")).to_be_visible()
    page.get_by_role("link", name="Hello world", exact=True).click()
    shots.take(page, "template")


def test_admin_creates_a_user_and_a_group(
    page: Page, browser: object, pai: RunningPlatform, shots: Shots
) -> None:
    group = unique("team").replace("-", "_")
    user = unique("alice")
    page.goto(f"{pai.url}/admin/groups")
    page.get_by_label("Group name (letters, digits, _)").fill(group)
    page.get_by_label("Description").fill("a team made in the browser")
    page.get_by_label("Virtual clusters (comma separated)").fill("default")
    page.get_by_role("button", name="Create group").click()
    expect(page.get_by_role("status")).to_contain_text(f"Created group {group}")
    expect(page.locator(f"#group-{group}")).to_contain_text("a team made in the browser")
    shots.take(page, "admin-groups")

    page.goto(f"{pai.url}/admin/users")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password (6 characters or more)").fill("a-good-password")
    page.get_by_role("button", name="Create user").click()
    expect(page.get_by_role("status")).to_contain_text(f"Created user {user}")
    row = page.locator(f"#user-{user}")
    row.get_by_label(f"Groups of {user}").fill(f"default, {group}")
    row.get_by_role("button", name="Save groups").click()
    expect(page.get_by_role("status")).to_contain_text(f"Changed the groups of {user}")
    shots.take(page, "admin-users")

    with pai.client() as client:
        body = client.get(f"/api/v2/users/{user}").json()
    assert group in body["grouplist"], body

    # The new user signs in through the page and is not offered the administration.
    context = browser.new_context()  # type: ignore[attr-defined]
    tab = context.new_page()
    sign_in(tab, pai.url, user, "a-good-password")
    expect(tab.locator("header")).to_contain_text(f"Signed in as {user}")
    expect(tab.get_by_role("link", name="Administration")).to_have_count(0)
    tab.goto(f"{pai.url}/admin/users")
    expect(tab.get_by_role("heading", name="Administrators only")).to_be_visible()
    context.close()


BAD = """protocolVersion: 2
name: portal-bad
type: job
prerequisites:
  - type: dockerimage
    uri: python:3.11-slim
    name: image
taskRoles:
  worker:
    instances: 0
    dockerImage: image
    resourcePerInstance: {gpu: 0, cpu: 1, memoryMB: 256}
    commands: [echo hi]
    taskRetryCount: -1
"""


def test_invalid_yaml_shows_field_errors_on_their_lines(
    page: Page, pai: RunningPlatform, shots: Shots
) -> None:
    paste_and_submit(page, pai.url, BAD)
    expect(page.locator("#problems-h")).to_contain_text("2 problems")
    expect(page.locator("#line-10 .problem")).to_contain_text("taskRoles.worker.instances")
    expect(page.locator("#line-10 .problem")).to_contain_text("must be at least 1")
    # (A field protocol v2 does not name is no problem: OpenPAI's schema accepts it.)
    expect(page.locator("#line-14 .problem")).to_contain_text("taskRoles.worker.taskRetryCount")
    expect(page.locator("#line-14 .problem")).to_contain_text("must be at least 0")
    expect(page.locator(".problem")).to_have_count(2)
    # The text the user typed is still there to fix.
    expect(page.get_by_label("YAML", exact=True)).to_have_value(BAD)
    shots.take(page, "submit-invalid")

    page.get_by_label("YAML", exact=True).fill("name: [unclosed\n")
    page.get_by_role("button", name="Submit job").click()
    expect(page.locator("#line-1 .problem")).to_contain_text("invalid YAML")


def test_a_script_tag_in_a_job_tag_is_shown_as_text(
    page: Page, pai: RunningPlatform, ledger: JobLedger, shots: Shots
) -> None:
    name = unique("portal-tagged")
    hostile = "<script>window.__pwned=1</script>"
    with pai.client() as client:
        response = client.post(
            "/api/v2/jobs", content=job_yaml(name, ["echo tagged"]), headers={"Content-Type": "text/yaml"}
        )
        assert response.status_code == 202, response.text
    ledger.expect(f"{pai.admin_user}~{name}", "SUCCEEDED")
    page.goto(f"{pai.url}/jobs/{pai.admin_user}~{name}")
    page.get_by_label("New tag").fill(hostile)
    page.get_by_role("button", name="Add tag").click()
    tag = page.locator("#job-tags .tag")
    expect(tag).to_have_text(hostile)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page.content()
    page.goto(f"{pai.url}/jobs?keyword={name}")
    expect(page.locator("#job-table .tag")).to_have_text(hostile)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    shots.take(page, "hostile-tag")


def test_a_tag_being_typed_survives_the_job_changing_state(
    page: Page, pai: RunningPlatform, ledger: JobLedger
) -> None:
    """The job page re-renders its live part when the job's stream says so; what the user is typing in the
    tag box stays (the full run once lost a tag typed as its job ended)."""
    name = unique("portal-typing")
    key = f"{pai.admin_user}~{name}"
    with pai.client() as client:
        response = client.post(
            "/api/v2/jobs", content=job_yaml(name, ["sleep 600"]), headers={"Content-Type": "text/yaml"}
        )
        assert response.status_code == 202, response.text
    ledger.expect(key, "STOPPED")
    page.goto(f"{pai.url}/jobs/{key}")
    expect(page.locator("#job-state")).to_have_text("RUNNING", timeout=WAIT_MS)
    page.get_by_label("New tag").fill("typed-while-it-ran")
    with pai.client() as client:
        stop = client.put(f"/api/v2/jobs/{key}/executionType", json={"value": "STOP"})
        assert stop.status_code == 202, stop.text
    # The stream's end re-renders the live part, state included.
    expect(page.locator("#job-state")).to_have_text("STOPPED", timeout=WAIT_MS)
    expect(page.get_by_label("New tag")).to_have_value("typed-while-it-ran")
    page.get_by_role("button", name="Add tag").click()
    expect(page.locator("#job-tags .tag")).to_have_text("typed-while-it-ran", timeout=WAIT_MS)


def test_every_page_renders(page: Page, pai: RunningPlatform, shots: Shots) -> None:
    pages = {
        "/virtual-clusters": "Virtual clusters",
        "/tokens": "My tokens",
        "/admin/storages": "Storages",
        "/admin/audit": "Audit log",
        "/admin/exit-spec": "Exit spec",
        "/marketplace/new": "Publish a template",
    }
    for path, heading in pages.items():
        page.goto(f"{pai.url}{path}")
        expect(page.get_by_role("heading", level=1)).to_have_text(heading)
        shots.take(page, path.strip("/").replace("/", "-"))
    # The storage page says plainly whether the API can manage storages, as the API itself answers.
    with pai.client() as client:
        probe = client.get("/api/v2/storages/pai-portal-probe")
    missing = probe.status_code == 404 and probe.json().get("code") == "NoApiError"
    page.goto(f"{pai.url}/admin/storages")
    expect(page.locator("#no-storage-routes")).to_have_count(1 if missing else 0)
    if missing:
        return
    # Where the API manages storages, an admin adds one through the page and deletes it again.
    name = unique("portalstore").replace("-", "")
    folder = pai.data_dir / name
    folder.mkdir()
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Type", exact=True).select_option("local")
    page.locator("#ns-data").fill(f"path: {folder}")
    page.get_by_role("button", name="Add storage").click()
    expect(page.get_by_role("status")).to_contain_text(f"Created storage {name}")
    row = page.locator("tbody tr", has=page.get_by_role("rowheader", name=name))
    expect(row).to_contain_text("local")
    shots.take(page, "admin-storage-added")
    row.get_by_role("button", name=f"Delete storage {name}").click()
    expect(page.get_by_role("status")).to_contain_text(f"Deleted storage {name}")
    expect(page.get_by_role("rowheader", name=name)).to_have_count(0)


def test_api_docs_render_offline(page: Page, pai: RunningPlatform, shots: Shots) -> None:
    """Swagger UI comes from the gateway itself: with every other origin blocked, it still renders."""
    blocked: list[str] = []

    def only_this_origin(route: Route) -> None:
        if route.request.url.startswith(pai.url):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_origin)
    page.goto(f"{pai.url}/api/v2/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("OpenPAI REST API v2")
    expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
    assert page.locator(".swagger-ui .opblock").count() > 20
    # Open one operation: the UI works, not only draws.
    page.locator(".swagger-ui .opblock-summary", has_text="/api/v2/marketplace/templates").first.click()
    expect(page.get_by_role("button", name="Try it out").first).to_be_visible()
    assert blocked == [], f"the docs asked other origins: {blocked}"
    shots.take(page, "api-docs", full_page=False)


def test_session_cookie_csrf_and_no_token_in_pages(pai: RunningPlatform) -> None:
    """Over plain HTTP: the cookie's flags, a form without its CSRF token refused, no token in a page."""
    with httpx.Client(base_url=pai.url, timeout=30, follow_redirects=False) as client:
        login = client.get("/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', login.text).group(1)  # type: ignore[union-attr]
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie, cookie
        refused = client.post(
            "/login", data={"username": pai.admin_user, "password": pai.admin_password, "csrf_token": "x"}
        )
        assert refused.status_code == 403, refused.text
        done = client.post(
            "/login", data={"username": pai.admin_user, "password": pai.admin_password, "csrf_token": csrf}
        )
        assert done.status_code == 303, done.text
        home = client.get("/")
        assert home.status_code == 200
        # Another browser (no cookie) is not signed in by this one's sign-in: the relay keeps no cookies.
        with httpx.Client(base_url=pai.url, timeout=30, follow_redirects=False) as stranger:
            assert stranger.get("/").status_code == 303
            assert stranger.get("/login").status_code == 200
        token = pai.login(pai.admin_user, pai.admin_password)
        # The session's token is a JWT; none of the page's text looks like one.
        assert not re.search(r"eyJ[\w-]+\.[\w-]+\.[\w-]+", home.text)
        assert token not in home.text
        new_csrf = re.search(r'name="csrf_token" value="([^"]+)"', home.text).group(1)  # type: ignore[union-attr]
        assert new_csrf != csrf, "signing in must issue a new CSRF secret"
        stop = client.post(f"/jobs/{pai.admin_user}~nothing/stop", data={})
        assert stop.status_code == 403
        # The API's own paths are never the portal's.
        missing = client.get("/api/v2/no-such-route")
        assert missing.status_code == 404 and missing.json()["code"] == "NoApiError"
