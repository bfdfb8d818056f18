"""The portal's browser tests: one `pai up` for the session (the acceptance harness), Debian's Chromium
driven by Playwright, a page signed in as the admin, and screenshots kept as test artefacts.

Screenshots go under the session's tmp dir (`portal-shots*`), and also to `$PAI_PORTAL_SHOTS` when that is
set, for a person to look at.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

# The acceptance suite's platform and job ledger (one `pai up`, driven from outside).
from tests.acceptance.conftest import ledger, pai
from tests.acceptance.harness import RunningPlatform

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# A hang guard for one browser wait, not a performance assertion.
WAIT_MS = 120_000

pytestmark = pytest.mark.e2e


# Module scope: Playwright's sync API holds an event loop in this thread while it runs, which later
# tests' asyncio.run() would trip over; it is stopped when the browser tests' module ends.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (requirements-system.txt)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Shots:
    """Full-page screenshots, named in the order taken."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.extra = Path(os.environ["PAI_PORTAL_SHOTS"]) if os.environ.get("PAI_PORTAL_SHOTS") else None
        self.count = 0

    def take(self, page: Page, name: str, full_page: bool = True) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        if self.extra is not None:
            self.extra.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, self.extra / path.name)
        return path


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Shots:
    return Shots(tmp_path_factory.mktemp("portal-shots"))


def sign_in(page: Page, url: str, username: str, password: str) -> None:
    page.goto(f"{url}/login")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(lambda u: "/login" not in u, timeout=WAIT_MS)


@pytest.fixture()
def page(browser: Browser, pai: RunningPlatform) -> Iterator[Page]:
    """A fresh browser context signed in as the admin through the sign-in page."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(tab, pai.url, pai.admin_user, pai.admin_password)
    yield tab
    context.close()
    assert not errors, f"JavaScript errors on the pages: {errors}"


__all__ = ["ledger", "pai"]
