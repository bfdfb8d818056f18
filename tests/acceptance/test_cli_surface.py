"""The `pai` command line over its whole surface, as a user runs it, against `pai up` (the session's
platform; single sign-on against a second one with an OpenID provider of the test's own).

Each test runs the real `pai` executable with a CLI config file of its own (a copy of the admin's login
that `pai up` wrote), so contexts made here do not disturb other modules.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml

from tests.acceptance.harness import JOB_GUARD_S, JobLedger, RunningPlatform, pai_executable, running_platform
from tests.acceptance.samples import job_yaml, unique, unique_group
from tests.oidc_provider import OpenIdProvider


class Cli:
    """The `pai` executable with a config file of its own."""

    def __init__(self, pai: RunningPlatform, config: Path) -> None:
        self.pai = pai
        self.config = config

    def __call__(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None, ok: bool | None = True
    ) -> subprocess.CompletedProcess[str]:
        """Run `pai args...`; ``ok``: True must succeed, False must fail, None either."""
        full_env = {**os.environ, "PAI_CLI_CONFIG": str(self.config), "NO_COLOR": "1", "COLUMNS": "250"}
        for name in ("PAI_TOKEN", "PAI_URL", "PAI_USER", "PAI_CONTEXT"):
            full_env.pop(name, None)
        full_env.update(env or {})
        done = subprocess.run(
            [str(pai_executable()), *args],
            env=full_env,
            input=input,
            capture_output=True,
            text=True,
            timeout=JOB_GUARD_S,
        )
        if ok is not None and (done.returncode == 0) != ok:
            raise AssertionError(
                f"pai {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done

    def json(self, *args: str, env: dict[str, str] | None = None) -> Any:
        return json.loads(self(*args, "-o", "json", env=env).stdout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        env = {**os.environ, "PAI_CLI_CONFIG": str(self.config), "NO_COLOR": "1", "COLUMNS": "250"}
        return subprocess.Popen(
            [str(pai_executable()), *args],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture
def cli(pai: RunningPlatform, tmp_path: Path) -> Cli:
    config = tmp_path / "cli.json"
    shutil.copy(pai.cli_config, config)
    return Cli(pai, config)


@pytest.fixture
def job_file(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "job.yaml"


def submit(cli: Cli, ledger: JobLedger, job_file: Path, text: str, *states: str, wait: bool = False) -> str:
    job_file.write_text(text)
    done = cli("job", "submit", str(job_file), *(["--wait"] if wait else []), ok=None)
    key = done.stdout.splitlines()[0]
    ledger.expect(key, *states)
    return key


# ---- help, login, logout, whoami ------------------------------------------------------------------------


def test_help_shows_defaults_in_brackets(cli: Cli) -> None:
    shown = cli("job", "logs", "--help").stdout
    assert "[default: (the first)]" in " ".join(shown.split())
    assert "Task role" in shown


def test_login_prompts_without_echo_saves_owner_only_and_a_wrong_password_keeps_the_old(
    cli: Cli, pai: RunningPlatform
) -> None:
    before = cli.config.read_text()
    wrong = cli("login", "--url", pai.url, input=f"{pai.admin_user}\nnot-the-password\n", ok=False)
    assert "IncorrectPasswordError" in wrong.stderr and "not-the-password" not in wrong.stdout + wrong.stderr
    assert cli.config.read_text() == before
    done = cli("login", "--url", pai.url, input=f"{pai.admin_user}\n{pai.admin_password}\n")
    assert pai.admin_password not in done.stdout + done.stderr
    assert f"as {pai.admin_user}" in done.stdout
    assert stat.S_IMODE(cli.config.stat().st_mode) == 0o600
    me = cli.json("whoami")
    assert (me["user"], me["admin"], me["url"]) == (pai.admin_user, True, pai.url)


def test_logout_revokes_the_token_and_forgets_it(cli: Cli, pai: RunningPlatform) -> None:
    cli("login", "--url", pai.url, "--user", pai.admin_user, "--password", pai.admin_password)
    token = json.loads(cli.config.read_text())["contexts"]["default"]["token"]
    assert "logged out" in cli("logout").stdout
    assert json.loads(cli.config.read_text())["contexts"]["default"]["token"] is None
    with pai.client(token) as client:
        assert client.get("/api/v2/users/me").status_code == 401
    refused = cli("whoami", ok=False)
    assert "UnauthorizedUserError" in refused.stderr and "Traceback" not in refused.stderr


def test_an_unreachable_platform_is_one_clear_line(cli: Cli) -> None:
    done = cli("job", "list", env={"PAI_URL": "http://127.0.0.1:9"}, ok=False)
    assert done.stderr.startswith("error: ConnectionError: cannot connect to http://127.0.0.1:9")
    assert "Traceback" not in done.stderr


# ---- jobs ----------------------------------------------------------------------------------------------


def test_submit_wait_list_get_and_the_output_formats(cli: Cli, ledger: JobLedger, job_file: Path) -> None:
    name = unique("cli-ok")
    key = submit(
        cli, ledger, job_file, job_yaml(name, "echo out-line", "echo err-line >&2"), "SUCCEEDED", wait=True
    )
    assert key.endswith(f"~{name}")
    table = cli("job", "list", "--keyword", name).stdout
    assert name in table and "SUCCEEDED" in table
    listed = cli.json("job", "list", "--keyword", name, "--state", "succeeded")
    assert [j["name"] for j in listed] == [name] and listed[0]["state"] == "SUCCEEDED"
    assert cli.json("job", "list", "--keyword", name, "--state", "RUNNING") == []
    as_yaml = yaml.safe_load(cli("job", "list", "--keyword", name, "-o", "yaml").stdout)
    assert as_yaml == listed
    detail = cli.json("job", "get", name)
    with cli.pai.client() as client:
        assert detail == client.get(f"/api/v2/jobs/{key}").json()  # exactly what the API answers
    shown = cli("job", "get", key, "-o", "table").stdout
    assert "SUCCEEDED" in shown and "worker" in shown and "exit code 0" in shown
    assert cli("job", "logs", name).stdout == "out-line\n"
    assert cli("job", "logs", name, "--stderr").stdout == "err-line\n"
    assert set(cli("job", "logs", name, "--all").stdout.splitlines()) == {"out-line", "err-line"}
    assert cli("job", "logs", name, "--tail", "5").stdout == "line\n"
    config = yaml.safe_load(cli("job", "config", name).stdout)
    assert config["name"] == name and config["taskRoles"]["worker"]["commands"][0] == "echo out-line"
    attempts = cli.json("job", "attempts", name)
    assert [(a["attemptIndex"], a["state"]) for a in attempts] == [(0, "SUCCEEDED")]
    events = cli.json("job", "events", name)
    assert "Submitted" in [e["reason"] for e in events["data"]]
    assert "Submitted" in cli("job", "events", name).stdout


def test_a_failing_job_exits_one_and_says_why(cli: Cli, ledger: JobLedger, job_file: Path) -> None:
    done = subprocess_submit_wait(cli, ledger, job_file, job_yaml(unique("cli-fail"), "exit 3"))
    assert done.returncode == 1
    assert re.search(r"FAILED \(exit code 3", done.stdout), done.stdout
    assert "WAITING" in done.stderr or "RUNNING" in done.stderr  # the states it went through


def subprocess_submit_wait(
    cli: Cli, ledger: JobLedger, job_file: Path, text: str
) -> subprocess.CompletedProcess[str]:
    job_file.write_text(text)
    done = cli("job", "submit", str(job_file), "--wait", ok=None)
    ledger.expect(done.stdout.splitlines()[0], "FAILED")
    return done


def test_bad_input_gets_the_servers_precise_error(cli: Cli, ledger: JobLedger, job_file: Path) -> None:
    job_file.write_text("protocolVersion: 2\nname: broken\ntype: job\n")
    bad = cli("job", "submit", str(job_file), ok=False)
    assert bad.stderr.startswith("error: InvalidProtocolError:") and "taskRoles" in bad.stderr
    name = unique("cli-dup")
    submit(cli, ledger, job_file, job_yaml(name, "true"), "SUCCEEDED")
    job_file.write_text(job_yaml(name, "echo another job of the same name"))
    dup = cli("job", "submit", str(job_file), ok=False)
    assert "ConflictJobError" in dup.stderr and "Traceback" not in dup.stderr
    missing = cli("job", "get", "nobody~nothing", ok=False)
    assert missing.stderr.strip() == "error: NoJobError: Job nobody~nothing is not found."
    no_role = cli("job", "logs", name, "--role", "ps", ok=False)
    assert "NoTaskRoleError" in no_role.stderr and "worker" in no_role.stderr


def test_logs_follow_prints_while_the_job_runs_and_ends_with_it(
    cli: Cli, ledger: JobLedger, job_file: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "go-on"
    wait_marker = f"i=0; while [ ! -e {marker} ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done"
    name = unique("cli-follow")
    submit(cli, ledger, job_file, job_yaml(name, "echo before", wait_marker, "echo after"), "SUCCEEDED")
    follower = cli.popen("job", "logs", name, "-f")
    assert follower.stdout is not None
    try:
        # The first line comes while the job still runs (it waits for the marker): followed, not read after.
        assert follower.stdout.readline() == "before\n"
        with cli.pai.client() as client:
            assert (
                client.get(f"/api/v2/jobs/{cli.pai.admin_user}~{name}").json()["jobStatus"]["state"]
                == "RUNNING"
            )
        marker.touch()
        rest, err = follower.communicate(timeout=JOB_GUARD_S)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    assert rest == "after\n"


def test_watch_prints_changes_until_the_end(cli: Cli, ledger: JobLedger, job_file: Path) -> None:
    name = unique("cli-watch")
    submit(cli, ledger, job_file, job_yaml(name, "sleep 1", "echo done"), "SUCCEEDED")
    done = cli("job", "watch", name)
    lines = done.stdout.splitlines()
    assert re.search(r"task worker\[0\] SUCCEEDED on node-\d exit 0", done.stdout), done.stdout
    assert lines[-1].endswith("end  SUCCEEDED")
    failing = unique("cli-watch-fail")
    submit(cli, ledger, job_file, job_yaml(failing, "exit 2"), "FAILED")
    assert cli("job", "watch", failing, ok=False).stdout.splitlines()[-1].endswith("end  FAILED")


def test_tags_are_shown_as_text_and_filter_the_list(cli: Cli, ledger: JobLedger, job_file: Path) -> None:
    name = unique("cli-tag")
    submit(cli, ledger, job_file, job_yaml(name, "true"), "SUCCEEDED")
    cli("job", "tag", name, "<script>x</script>", "[red]not-markup[/]")
    table = cli("job", "list", "--tag", "[red]not-markup[/]").stdout
    assert name in table and "[red]not-markup[/]" in table and "<script>x</script>" in table
    cli("job", "untag", name, "[red]not-markup[/]")
    assert cli.json("job", "get", name)["tags"] == ["<script>x</script>"]
    assert cli.json("job", "list", "--tag", "[red]not-markup[/]") == []


def test_stop_several_jobs_and_wait(cli: Cli, ledger: JobLedger, job_file: Path) -> None:
    names = [unique("cli-stop") for _ in range(2)]
    for name in names:
        submit(cli, ledger, job_file, job_yaml(name, "sleep 600"), "STOPPED")
    done = cli("job", "stop", *names, "--wait")
    assert sorted(done.stdout.split()) == sorted(
        [*(f"{cli.pai.admin_user}~{n}" for n in names), "STOPPED", "STOPPED"]
    )
    bad = cli("job", "stop", "nobody~nothing", ok=False)
    assert "NoJobError" in bad.stderr


def test_clone(cli: Cli, ledger: JobLedger, job_file: Path, tmp_path: Path) -> None:
    name = unique("cli-clone")
    submit(cli, ledger, job_file, job_yaml(name, "echo cloned"), "SUCCEEDED")
    copy = f"{name}-copy"
    done = cli("job", "clone", name, "--name", copy, "--wait")
    ledger.expect(f"{cli.pai.admin_user}~{copy}", "SUCCEEDED")
    assert done.stdout.splitlines()[-1].startswith(f"{cli.pai.admin_user}~{copy} SUCCEEDED")
    assert cli("job", "logs", copy).stdout == "cloned\n"
    secret_job = unique("cli-secret")
    text = job_yaml(secret_job, "echo <% $secrets.word %> | wc -c", secrets={"word": "hush"})
    submit(cli, ledger, job_file, text, "SUCCEEDED")
    refused = cli("job", "clone", secret_job, ok=False)
    assert "SecretsRequired" in refused.stderr
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("word: hush\n")
    again = cli("job", "clone", secret_job, "--secrets", str(secrets), "--wait")
    key = again.stdout.splitlines()[0]
    ledger.expect(key, "SUCCEEDED")
    assert cli("job", "logs", key).stdout.strip() == "5"


# ---- virtual clusters and nodes ------------------------------------------------------------------------


def test_vc_list_and_get(cli: Cli) -> None:
    vcs = cli.json("vc", "list")
    with cli.pai.client() as client:
        assert vcs == client.get("/api/v2/virtual-clusters").json()
    one = cli.json("vc", "get", "default")
    assert one["virtualCluster"] == vcs["default"] and "gpu" in one["skuTypes"]
    assert "default" in cli("vc", "list").stdout
    assert "NoVirtualClusterError" in cli("vc", "get", "nope", ok=False).stderr


def test_node_list(cli: Cli) -> None:
    nodes = cli.json("node", "list")
    assert sorted(n["metadata"]["name"] for n in nodes) == ["node-0", "node-1"]
    table = cli("node", "list").stdout
    assert "node-0" in table and "node-1" in table


# ---- users, groups, tokens ------------------------------------------------------------------------------


def test_users_and_groups(cli: Cli, pai: RunningPlatform, tmp_path: Path) -> None:
    user, group = unique("u"), unique_group("g")
    cli("group", "create", group, "--vc", "default", "--external-name", "idp-team", "--description", "a team")
    got = cli.json("group", "get", group)
    assert got["externalName"] == "idp-team" and got["extension"]["acls"]["virtualClusters"] == ["default"]
    cli("group", "update", group, "--description", "the team", "--admin")
    assert cli.json("group", "get", group)["extension"]["acls"]["admin"] is True
    cli("group", "update", group, "--no-admin")
    cli("user", "create", user, "--password", "first-password", "--email", "u@example.org")
    cli("user", "add-group", user, group)
    assert cli.json("user", "get", user)["grouplist"] == ["default", group]
    assert [m["username"] for m in cli.json("group", "members", group)] == [user]
    cli("user", "update", user, "--email", "new@example.org")
    assert cli.json("user", "get", user)["email"] == "new@example.org"
    cli("user", "set-groups", user, "default")
    assert cli.json("user", "get", user)["grouplist"] == ["default"]
    cli("user", "add-group", user, group)
    cli("user", "remove-group", user, group)
    assert user in [u["username"] for u in cli.json("user", "list")]
    # The user logs in on a context of their own, and changes their password there.
    mine = Cli(pai, tmp_path / "user-cli.json")
    mine("login", "--url", pai.url, "--user", user, "--password", "first-password")
    assert mine.json("whoami")["admin"] is False
    assert (
        "ForbiddenUserError"
        in mine("user", "create", unique("x"), "--password", "whatever1", ok=False).stderr
    )
    mine("user", "passwd", "--old-password", "first-password", "--new-password", "second-password")
    assert mine.json("whoami")["user"] == user  # logged in again with the new password
    assert pai.login(user, "second-password")
    cli("user", "delete", user, "--yes")
    assert "NoUserError" in cli("user", "get", user, ok=False).stderr
    cli("group", "delete", group, "--yes")
    assert "NoGroupError" in cli("group", "get", group, ok=False).stderr


def test_application_tokens(cli: Cli) -> None:
    token = cli("token", "create").stdout.strip()
    assert token in cli.json("token", "list")
    assert cli("job", "list", "--limit", "1", env={"PAI_TOKEN": token}).returncode == 0
    with_app = cli("whoami", "-o", "json", env={"PAI_TOKEN": token})
    assert json.loads(with_app.stdout)["application"] is True
    refused = cli("token", "create", env={"PAI_TOKEN": token}, ok=False)
    assert "Applications are not allowed" in refused.stderr
    assert "revoke successfully" in cli("token", "revoke", token).stdout
    assert "UnauthorizedUserError" in cli("whoami", env={"PAI_TOKEN": token}, ok=False).stderr


# ---- contexts ------------------------------------------------------------------------------------------


def test_contexts_and_the_old_single_cluster_file(cli: Cli, pai: RunningPlatform) -> None:
    saved = json.loads(cli.config.read_text())
    current = saved["contexts"][saved["current"]]
    # Today's single-cluster file, as earlier versions wrote it.
    cli.config.write_text(
        json.dumps({"url": current["url"], "username": current["username"], "token": current["token"]})
    )
    assert cli.json("whoami")["context"] == "default"
    cli("context", "add", "elsewhere", "--url", "http://127.0.0.1:9")
    contexts = {c["name"]: c for c in cli.json("context", "list")}
    assert contexts["default"]["current"] and not contexts["elsewhere"]["loggedIn"]
    migrated = json.loads(cli.config.read_text())
    assert migrated["version"] == 2 and set(migrated["contexts"]) == {"default", "elsewhere"}
    cli("context", "use", "elsewhere")
    assert "ConnectionError" in cli("job", "list", ok=False).stderr
    assert cli.json("-c", "default", "whoami")["user"] == pai.admin_user  # one command on another context
    assert cli.json("whoami", env={"PAI_CONTEXT": "default"})["context"] == "default"
    cli("context", "delete", "elsewhere")
    assert [c["name"] for c in cli.json("context", "list")] == ["default"]
    assert "no context named 'nope'" in cli("context", "use", "nope", ok=False).stderr


def test_shell_completion(cli: Cli) -> None:
    env = {"_PAI_COMPLETE": "complete_bash", "COMP_WORDS": "pai context use de", "COMP_CWORD": "3"}
    done = cli(env=env)
    assert "default" in done.stdout.split()
    # Named, not found out: the test may run with no shell among its ancestors (typer's --show-completion
    # then says "Shell  not supported").
    for shell, marker in (
        ("bash", "complete -o default -F"),
        ("zsh", "#compdef pai"),
        ("fish", "complete --command pai"),
    ):
        script = cli("completion", shell)
        assert "_PAI_COMPLETE" in script.stdout and marker in script.stdout, shell
    refused = cli("completion", "tcsh", ok=False)
    assert "no completion for shell 'tcsh'" in refused.stderr


# ---- single sign-on ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningPlatform, OpenIdProvider]]:
    """A platform of its own whose auth service signs users in with a provider the test runs."""
    data = tmp_path_factory.mktemp("pai-sso")
    with OpenIdProvider() as op:
        secret = data / "oidc-secret"
        secret.write_text(op.client_secret)
        env = {
            "PAI_OIDC_ISSUER": op.issuer,
            "PAI_OIDC_CLIENT_ID": op.client_id,
            "PAI_OIDC_CLIENT_SECRET_FILE": str(secret),
            "PAI_OIDC_NAME": "Test IdP",
        }
        with running_platform(data / "platform", nodes=1, env=env) as platform:
            op.redirect_uris.append(f"{platform.url}/api/v2/authn/oidc/return")
            yield platform, op


def test_login_with_single_sign_on(sso: tuple[RunningPlatform, OpenIdProvider], tmp_path: Path) -> None:
    platform, op = sso
    with platform.client() as admin:
        made = admin.post(
            "/api/v2/groups",
            json={"groupname": "researchers", "externalName": "idp-researchers", "extension": {"acls": {}}},
        )
        assert made.status_code == 201, made.text
    op.next_identity = {"sub": "s-rita", "preferred_username": "rita", "groups": ["idp-researchers"]}
    cli = Cli(platform, tmp_path / "sso-cli.json")
    login = cli.popen("login", "--url", platform.url, "--sso")
    assert login.stderr is not None and login.stdin is not None
    try:
        url = ""
        while not url.startswith("http"):
            line = login.stderr.readline()
            assert line, "pai login --sso ended before printing the URL"
            url = line.strip() if "/api/v2/authn/oidc/login" in line else ""
        assert parse_qs(urlsplit(url).query)["redirect"] == ["/api/v2/authn/oidc/code"]
        # The user's browser: the platform, the provider, back to the platform's page with the code.
        with httpx.Client(follow_redirects=True, timeout=30) as browser:
            page = browser.get(url)
        assert page.status_code == 200 and "Signed in" in page.text, page.text
        code = re.search(r"<code>([A-Za-z0-9_-]{20,})</code>", page.text)
        assert code is not None, page.text
        out, err = login.communicate(code.group(1) + "\n", timeout=60)
    finally:
        login.kill()
    assert login.returncode == 0, err
    assert "as rita" in out
    me = cli.json("whoami")
    assert (me["user"], me["admin"], me["groups"]) == ("rita", False, ["default", "researchers"])
    # The code worked once: pasting it again is refused.
    again = cli("login", "--url", platform.url, "--sso", "--code", code.group(1), ok=False)
    assert "This login code is unknown, expired or already used" in again.stderr


def test_sso_is_refused_where_the_platform_has_none(cli: Cli, pai: RunningPlatform) -> None:
    done = cli("login", "--url", pai.url, "--sso", ok=False)
    assert "offers no single sign-on" in done.stderr
    assert cli.json("whoami")["user"] == pai.admin_user


def test_the_portals_sign_in_button_uses_single_sign_on(sso: tuple[RunningPlatform, OpenIdProvider]) -> None:
    """The agreed interface end to end with the web portal's sign-in page (issue 13's other half): the
    button, the provider, the code back to the portal, the portal's session."""
    platform, op = sso
    op.next_identity = {"sub": "s-paula", "preferred_username": "paula", "email": "paula@example.org"}
    with httpx.Client(base_url=platform.url, follow_redirects=True, timeout=30) as browser:
        page = browser.get("/login")
        assert page.status_code == 200 and "Sign in with Test IdP" in page.text, page.text
        # A link (a form could not be redirected to the provider under the pages' form-action 'self').
        assert 'href="/login/sso?next=/"' in page.text, page.text
        home = browser.get("/login/sso", params={"next": "/"})
        assert home.status_code == 200, home.text
        hops = [str(r.url) for r in home.history]
        assert any(op.issuer in hop for hop in hops) and any("pai_login_code=" in hop for hop in hops)
        assert "Signed in as paula" in home.text
