"""Single sign-on in the portal, in a real Chromium against a `pai up` of its own whose auth service
trusts a real OpenID provider on loopback (tests/oidc_provider.py), with password login turned off
(`PAI_BASIC_LOGIN=false`): `pai up` runs and says its CLI is not logged in; the sign-in page offers only
the "Sign in with …" button, which signs a user in; a sign-in the provider refuses comes back to the
sign-in page with the reason the platform gives (`?pai_login_error=`), shown as text; a link made
elsewhere cannot put its words on that page."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.acceptance.harness import RunningPlatform, running_platform
from tests.oidc_provider import OpenIdProvider
from tests.portal.conftest import WAIT_MS, Shots

IDP = "Loopback IdP"
HOSTILE = '<script>window.__pwned = 1</script><b id="injected">bold</b>'

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def provider() -> Iterator[OpenIdProvider]:
    with OpenIdProvider() as op:
        yield op


@pytest.fixture(scope="module")
def sso_pai(tmp_path_factory: pytest.TempPathFactory, provider: OpenIdProvider) -> Iterator[RunningPlatform]:
    data = tmp_path_factory.mktemp("portal-sso")
    secret = data / "oidc-client-secret"
    secret.write_text(provider.client_secret + "\n")
    env = {
        "PAI_OIDC_ISSUER": provider.issuer,
        "PAI_OIDC_CLIENT_ID": provider.client_id,
        "PAI_OIDC_CLIENT_SECRET_FILE": str(secret),
        "PAI_OIDC_NAME": IDP,
        "PAI_BASIC_LOGIN": "false",
    }
    with running_platform(data / "pai", nodes=1, gpus_per_node=1, env=env, cli_login=False) as platform:
        # The platform's port is known once it runs; the provider accepts only registered return URIs.
        provider.redirect_uris.append(f"{platform.url}/api/v2/authn/oidc/return")
        yield platform


@pytest.fixture()
def tab(browser: Browser, provider: OpenIdProvider) -> Iterator[Page]:
    provider.reset_faults()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the pages: {errors}"


def test_pai_up_runs_with_password_login_off(sso_pai: RunningPlatform) -> None:
    said = " ".join(sso_pai.log_path.read_text(errors="replace").split())  # rich wraps long lines
    assert f"Basic login is turned off here; sign in with {IDP}" in said, said[-2000:]
    assert "The CLI is not logged in: `pai login --sso`." in said
    assert not sso_pai.cli_config.exists()
    config = httpx.get(f"{sso_pai.url}/api/v2/authn/oidc/config", timeout=30)
    assert config.json() == {"enabled": True, "name": IDP, "basicLogin": False}
    refused = httpx.post(
        f"{sso_pai.url}/api/v2/authn/basic/login",
        json={"username": sso_pai.admin_user, "password": sso_pai.admin_password},
        timeout=30,
    )
    assert refused.status_code == 403, refused.text


def test_the_sso_button_signs_a_user_in(
    tab: Page, sso_pai: RunningPlatform, provider: OpenIdProvider, shots: Shots
) -> None:
    provider.next_identity = {"sub": "sub-sso-ann", "preferred_username": "ssoann"}
    tab.goto(f"{sso_pai.url}/login?next=/jobs")
    expect(tab.get_by_label("Password")).to_have_count(0)  # password login is off
    shots.take(tab, "sso-login")
    tab.get_by_role("link", name=f"Sign in with {IDP}").click()
    tab.wait_for_url(f"{sso_pai.url}/jobs")
    expect(tab.locator("header")).to_contain_text("Signed in as ssoann")


def test_a_refused_sign_in_shows_the_reason_as_text(
    tab: Page, sso_pai: RunningPlatform, provider: OpenIdProvider, shots: Shots
) -> None:
    provider.deny = "access_denied"
    provider.deny_description = HOSTILE
    tab.goto(f"{sso_pai.url}/login")
    tab.get_by_role("link", name=f"Sign in with {IDP}").click()
    tab.wait_for_url(re.compile(r"/login/sso/done/"))
    error = tab.get_by_role("alert")
    expect(error).to_contain_text("Single sign-on failed")
    expect(error).to_contain_text("access_denied")
    # The provider's words, shown as they are: as text, never as markup or script.
    expect(error).to_contain_text(HOSTILE)
    expect(tab.locator("#injected")).to_have_count(0)
    assert tab.evaluate("window.__pwned") is None
    expect(tab.get_by_role("link", name=f"Sign in with {IDP}")).to_be_visible()
    shots.take(tab, "sso-refused")


def test_a_reason_in_a_link_made_elsewhere_is_not_shown(tab: Page, sso_pai: RunningPlatform) -> None:
    tab.goto(f"{sso_pai.url}/login/sso/done/made-elsewhere?pai_login_error=Call+555-0100+to+unlock")
    expect(tab.get_by_role("alert")).to_contain_text("did not start in this browser")
    expect(tab.get_by_text("555-0100")).to_have_count(0)
