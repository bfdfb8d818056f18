"""The Python SDK (`PaiClient`, `AsyncPaiClient`) against `pai up`: every route, typed answers, the error
type of each failure, Retry-After honoured (the platform's login throttle answers 429 with it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pai_cli import (
    AsyncPaiClient,
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    PaiClient,
    PaiTimeoutError,
    RateLimitedError,
    RetryPolicy,
    UnauthorizedError,
    acls,
)
from pai_cli.models import JobDetail, JobSummary, StreamEvent
from tests.acceptance.harness import JobLedger, RunningPlatform
from tests.acceptance.samples import job_yaml, unique, unique_group


@pytest.fixture
def client(pai: RunningPlatform) -> Iterator[PaiClient]:
    with PaiClient(pai.url) as c:
        c.login(pai.admin_user, pai.admin_password)
        yield c


def test_meta_and_sign_in(client: PaiClient, pai: RunningPlatform) -> None:
    assert client.info().name == "PAI RESTful API"
    assert client.authn_info().authn_type == "basic"
    assert client.oidc_config().enabled is False and client.oidc_config().basic_login is True
    check = client.check_token()
    assert (check.username, check.admin, check.application) == (pai.admin_user, True, False)
    assert client.me().username == pai.admin_user
    assert client.token in client.list_tokens()


def test_a_jobs_whole_life(client: PaiClient, ledger: JobLedger) -> None:
    name = unique("sdk-life")
    key = client.submit_job(job_yaml(name, "echo one", "echo two >&2", "sleep 1", "echo three"))
    ledger.expect(key, "SUCCEEDED")
    followed = "".join(client.follow_log(name))
    seen: list[str] = []
    job = client.wait_for_job(key, on_state=lambda state, _job: seen.append(state))
    assert isinstance(job, JobDetail) and job.state == "SUCCEEDED" and seen[-1] == "SUCCEEDED"
    assert followed == "one\nthree\n"
    assert client.task_log(name) == "one\nthree\n"
    assert client.task_log(name, "worker", 0, "stderr") == "two\n"
    assert client.task_log(name, tail_bytes=6) == "three\n"
    # The routes under the job.
    task = job.task_roles["worker"].task_statuses[0]
    assert task.container_exit_code == 0 and task.container_node_name
    summary = client.list_jobs(keyword=name)
    assert [type(s) for s in summary] == [JobSummary] and summary[0].key == key
    page = client.list_jobs_page(keyword=name, limit=1)
    assert page.total_count == 1 and page.data[0].name == name
    assert client.list_jobs(keyword=name, state=["RUNNING", "WAITING"]) == []
    assert client.get_job_attempt_detail(name, 0).state == "SUCCEEDED"
    attempts = client.job_attempts(name)
    assert [a.attempt_index for a in attempts] == [0] and client.job_attempt(name, 0).is_latest
    assert client.job_attempts_healthz(name) is True
    tasks = client.task_attempts(name, 0, "worker", 0)
    assert tasks.task_state == "SUCCEEDED" and [a.attempt_id for a in tasks.attempts] == [0]
    locations = client.task_log_locations(name, 0, "worker", 0, 0, tail_mode=True)
    assert {loc.name for loc in locations.locations} == {"stdout", "stderr", "all"}
    assert all("tail_bytes=" in loc.uri for loc in locations.locations)
    # stdout and stderr come through two pipes: the combined log keeps each stream's order, not the order
    # between two lines written to different streams at the same moment ("one" and "two" here).
    combined = client.task_attempt_log(name, 0, "worker", 0, 0, "all")
    assert sorted(combined.splitlines()) == ["one", "three", "two"] and combined.endswith("three\n")
    config = client.job_config(name)
    assert config["name"] == name
    events = client.job_events(name)
    assert events.total_count == len(events.data) and "Submitted" in {e.reason for e in events.data}
    assert client.job_events(name, "Warning").data == []
    client.add_tag(name, "sdk")
    assert client.get_job(name).tags == ["sdk"] and client.list_jobs(tags="sdk", keyword=name)[0].name == name
    client.remove_tag(name, "sdk")
    assert client.get_job(name).tags == []


def test_stream_and_stop(client: PaiClient, ledger: JobLedger) -> None:
    key = ledger.expect(client.submit_job(job_yaml(unique("sdk-stop"), "sleep 600")), "STOPPED")
    client.wait_for_job(key, states={"RUNNING"})
    with pytest.raises(PaiTimeoutError) as waited:  # the stream is quiet: the deadline ends the wait
        client.wait_for_job(key, timeout_s=1.0)
    assert waited.value.state == "RUNNING"
    assert client.stop_job(key).status == 202
    events: list[StreamEvent] = list(client.stream_job(key))
    assert events[-1].event == "end" and events[-1].data == {"state": "STOPPED"}
    assert events[0].event == "job" and all(e.id is not None for e in events)


def test_each_failure_has_its_type(client: PaiClient, pai: RunningPlatform, ledger: JobLedger) -> None:
    with pytest.raises(NotFoundError) as missing:
        client.get_job("nobody~nothing")
    assert missing.value.code == "NoJobError" and missing.value.status == 404
    with pytest.raises(InvalidRequestError) as bad:
        client.submit_job("protocolVersion: 2\nname: broken\ntype: job\n")
    assert bad.value.code == "InvalidProtocolError" and "taskRoles" in bad.value.message
    name = unique("sdk-dup")
    ledger.expect(client.submit_job(job_yaml(name, "true")), "SUCCEEDED")
    with pytest.raises(ConflictError):
        client.submit_job(job_yaml(name, "echo another job of the same name"))
    with PaiClient(pai.url, token="not-a-token") as stranger, pytest.raises(UnauthorizedError):
        stranger.me()
    user = unique("sdk-plain")
    client.create_user(user, "plain-password")
    with PaiClient(pai.url) as plain:
        plain.login(user, "plain-password")
        with pytest.raises(ForbiddenError) as refused:
            plain.create_user(unique("x"), "whatever-pw")
        assert refused.value.code == "ForbiddenUserError"
    client.delete_user(user)


def test_users_groups_and_the_audit_log(client: PaiClient, pai: RunningPlatform) -> None:
    user, group = unique("sdk-u"), unique_group("sdk_g")
    client.create_group(
        group, description="d", external_name="ext-1", extension=acls(virtual_clusters=["default"])
    )
    assert client.get_group(group).acls["virtualClusters"] == ["default"]
    client.update_group(group, description="d2")
    client.set_group_description(group, "d3")
    client.set_group_external_name(group, "ext-2")
    client.set_group_extension_attribute(group, "acls/storageConfigs", ["local"])
    got = client.get_group(group)
    assert (got.description, got.external_name, got.acls["storageConfigs"]) == ("d3", "ext-2", ["local"])
    client.set_group_extension(group, {"acls": {"virtualClusters": ["default"]}, "note": 1})
    assert client.get_group(group).extension["note"] == 1
    assert group in {g.groupname for g in client.list_groups()}
    client.create_user(user, "user-password-1", email="a@b", virtual_clusters=["default"])
    client.add_user_to_group(user, group)
    assert [m.username for m in client.group_members(group)] == [user]
    client.remove_user_from_group(user, group)
    client.set_user_grouplist(user, ["default", group])
    client.set_user_virtual_clusters(user, ["default"])
    client.set_user_email(user, "c@d")
    client.set_user_extension(user, {"k": "v"})
    client.update_user(user, email="e@f")
    client.set_user_admin(user, True)
    client.set_user_admin(user, False)
    got_user = client.get_user(user)
    assert (got_user.email, got_user.extension, got_user.admin) == ("e@f", {"k": "v"}, False)
    client.set_user_password(user, "user-password-2")
    with PaiClient(pai.url) as them:
        them.login(user, "user-password-2")
        them.update_me(email="me@x", extension={"mine": True})
        them.update_me(new_password="user-password-3", old_password="user-password-2")
        them.login(user, "user-password-3")
        assert them.me().email == "me@x" and them.me().extension["mine"] is True
    assert user in {u.username for u in client.list_users()}
    log = client.audit_log(target=user, limit=50)
    actions = [e.action for e in log.data]
    assert log.total_count >= len(log.data) and "user.created" in actions and "user.updated" in actions
    client.delete_user(user)
    client.delete_group(group)
    with pytest.raises(InvalidRequestError) as gone:  # OpenPAI answers a missing user with 400
        client.get_user(user)
    assert gone.value.code == "NoUserError"


def test_application_tokens(client: PaiClient, pai: RunningPlatform) -> None:
    created = client.create_application_token()
    with PaiClient(pai.url, token=created.token, username=pai.admin_user) as app:
        assert app.check_token().application is True
        assert app.list_jobs(limit=1) is not None
        with pytest.raises(ForbiddenError):
            app.create_application_token()
    client.revoke_token(created.token)
    with PaiClient(pai.url, token=created.token) as app, pytest.raises(UnauthorizedError):
        app.me()


def test_cluster_routes(client: PaiClient) -> None:
    vcs = client.virtual_clusters()
    assert vcs["default"].resources_total["gpu"] == client.virtual_cluster("default").resources_total["gpu"]
    assert client.sku_types()["gpu"].gpu == 1 and set(client.sku_types("default")) == {"gpu", "CPU"}


def test_storages(client: PaiClient, tmp_path: Path) -> None:
    name = unique_group("sdk_store")
    definition = {
        "name": name,
        "type": "local",
        "share": True,
        "default": False,
        "data": {"path": str(tmp_path)},
    }
    client.create_storage(definition)
    try:
        assert name in {s.name for s in client.storages()}  # an admin may use every storage
        assert name not in {s.name for s in client.storages(default=True)}
        got = client.storage(name)
        assert (got.storage_type, got.read_only) == ("local", False)
        client.replace_storage(name, {**definition, "readOnly": True})
        assert client.storage(name).read_only is True
        with pytest.raises(ConflictError):
            client.create_storage(definition)
    finally:
        client.delete_storage(name)
    with pytest.raises(NotFoundError):
        client.storage(name)


def test_kubernetes_views(client: PaiClient, ledger: JobLedger) -> None:
    """OpenPAI's `GET /api/v2/kubernetes/nodes` and `/pods` (issue 12 adds them to the gateway)."""
    nodes = client.nodes()
    assert sorted(n.name for n in nodes) == ["node-0", "node-1"]
    assert all(n.ready and n.schedulable for n in nodes)
    key = ledger.expect(client.submit_job(job_yaml(unique("sdk-pod"), "sleep 600")), "STOPPED")
    try:
        client.wait_for_job(key, states={"RUNNING"})
        debug_id = client.get_job(key).debug_id
        assert any(p.name.startswith(str(debug_id)) for p in client.pods())
    finally:
        client.stop_job(key)


def test_marketplace(client: PaiClient) -> None:
    name = unique("sdk-template")
    made = client.create_template(name, job_yaml(name, "echo from a template"), description="d", tags=["sdk"])
    try:
        assert made.author and made.editable and made.protocol
        listed = client.list_templates(keyword=name)
        assert listed.total_count == 1 and listed.data[0].id == made.id and listed.data[0].protocol is None
        assert client.star_template(made.id).star_count == 1
        assert client.star_template(made.id, starred=False).star_count == 0
        used = client.use_template(made.id)
        assert used.use_count == 1 and used.protocol == made.protocol
        assert (
            client.update_template(made.id, description="d2", groups=["default"]).visibility["type"]
            == "groups"
        )
        assert client.get_template(made.id).description == "d2"
    finally:
        client.delete_template(made.id)
    with pytest.raises(NotFoundError):
        client.get_template(made.id)


def test_exit_spec(client: PaiClient) -> None:
    shipped = client.exit_spec(builtin=True)
    assert shipped.source == "builtin" and shipped.spec["spec"]
    entry = {
        "code": 250,
        "phrase": "SdkTestExit",
        "issuer": "USER_CONTAINER",
        "causer": "USER_CONTAINER",
        "type": "USER_FAILURE",
        "stage": "RUNNING",
        "behavior": "PERMANENT",
        "reaction": "NEVER_RETRY",
        "reason": "a test's own exit code",
    }
    overlay = yaml.safe_dump({"version": 1, "spec": [entry]})
    try:
        changed = client.put_exit_spec(overlay, "overlay")
        assert changed.source == "uploaded" and 250 in {e["code"] for e in changed.spec["spec"]}
    finally:
        reset = client.reset_exit_spec()
    # The shipped entries again (the diagnosis service calls a stored reset "uploaded" too).
    assert [e["code"] for e in reset.spec["spec"]] == [e["code"] for e in shipped.spec["spec"]]


def test_retry_after_is_honoured_on_a_real_429(client: PaiClient, pai: RunningPlatform) -> None:
    """Five wrong passwords: the platform throttles the user, answering 429 with Retry-After (1 s first)."""
    user = unique("sdk-throttled")
    client.create_user(user, "right-password")
    with PaiClient(pai.url, retry=RetryPolicy(max_retries=0)) as impatient:
        for _ in range(5):
            with pytest.raises(InvalidRequestError):
                impatient.login(user, "wrong-password")
        with pytest.raises(RateLimitedError) as throttled:
            impatient.login(user, "right-password")
    assert throttled.value.retry_after_s is not None and 1 <= throttled.value.retry_after_s <= 2
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        import time

        time.sleep(seconds)

    with PaiClient(pai.url, sleep=sleep) as patient:
        assert patient.login(user, "right-password")
    assert slept and all(1 <= s <= 2 for s in slept)
    client.delete_user(user)


async def test_the_async_client(pai: RunningPlatform, ledger: JobLedger) -> None:
    async with AsyncPaiClient(pai.url) as client:
        await client.login(pai.admin_user, pai.admin_password)
        name = unique("sdk-async")
        key = await client.submit_job(job_yaml(name, "echo async-out"))
        ledger.expect(key, "SUCCEEDED")
        chunks = [chunk async for chunk in client.follow_log(name)]
        job = await client.wait_for_job(key)
        assert job.state == "SUCCEEDED" and "".join(chunks) == "async-out\n"
        events: list[Any] = [e async for e in client.stream_job(key)]
        assert events[-1].event == "end"
        assert (await client.task_log(name)) == "async-out\n"
        assert [j.name for j in await client.list_jobs(keyword=name)] == [name]
        assert (await client.me()).username == pai.admin_user
        with pytest.raises(NotFoundError):
            await client.get_job("nobody~nothing")
        await client.logout()
        assert client.token is None
