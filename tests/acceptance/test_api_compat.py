"""OpenPAI's REST API as its clients use it, against `pai up`: every request through `/rest-server`, every
response validated against OpenPAI's swagger (openpai_api.SwaggerCheck), OpenPAI's codes and words.

Users, groups, tokens, virtual clusters, the Kubernetes node and pod lists, and a job's whole life.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes.client import ApiClient

from tests.acceptance.harness import JobLedger, RunningPlatform, wait_final
from tests.acceptance.openpai_api import REFERENCE_SWAGGER, SWAGGER, SwaggerCheck

ROOT = Path(__file__).resolve().parents[2]
OPENPAI_PROTOCOL = ROOT / "services" / "jobs" / "tests" / "data" / "openpai" / "protocol-v2-schema.yaml"
YAML = {"Content-Type": "text/yaml"}
NON_ADMIN = {"code": "ForbiddenUserError", "message": "Non-admin is not allow to do this operation."}
RUN = uuid.uuid4().hex[:6]
USER, USER_PASSWORD = f"compat_{RUN}", "compat-Pa55word"

# Requests of this module that OpenPAI's swagger has no operation for: this platform's additions and
# OpenPAI's routes its swagger leaves out. Their error bodies are still checked as OpenPAI's `Response`.
UNLISTED = {
    ("GET", "/api/v2"),
    ("GET", "/api/v2/tokens/check"),
    ("GET", "/api/v2/cluster/sku-types"),
    ("GET", "/api/v2/virtual-clusters/{name}/sku-types"),
    ("GET", "/api/v2/jobs/{user}~{job}/attempts/0/taskRoles/worker/taskIndex/0/attempts/0/logs/stdout"),
}

# Swagger operations this module leaves to others: OIDC (basic mode here), alerts (the monitoring
# service's tests), a storage's detail (the storage service's routes).
NOT_EXERCISED = {
    ("GET", "/api/v2/authn/oidc/login"),
    ("GET", "/api/v2/authn/oidc/logout"),
    ("GET", "/api/v2/alerts"),
    ("GET", "/api/v2/storages/{storage}"),
}


@pytest.fixture(scope="module")
def check() -> Iterator[SwaggerCheck]:
    found = SwaggerCheck()
    yield found
    assert not found.problems, "responses unlike OpenPAI's swagger:\n" + "\n".join(map(str, found.problems))
    assert found.unlisted <= UNLISTED, f"requests the swagger does not describe: {found.unlisted - UNLISTED}"
    operations = {
        (method.upper(), path)
        for path, ops in found.document["paths"].items()
        for method in ops
        if method != "parameters"
    }
    missed = operations - found.operations_seen - NOT_EXERCISED
    assert not missed, f"swagger operations this module did not exercise: {sorted(missed)}"


def client(pai: RunningPlatform, check: SwaggerCheck, token: str | None = None) -> httpx.Client:
    """A client of `<host>/rest-server`, as OpenPAI's clients address a cluster."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(
        base_url=f"{pai.url}/rest-server", timeout=60, headers=headers, event_hooks={"response": [check.hook]}
    )


def login(pai: RunningPlatform, check: SwaggerCheck, user: str, password: str) -> str:
    with client(pai, check) as anon:
        # OpenPAI's SDK logs in with a form.
        response = anon.post(
            "/api/v2/authn/basic/login", data={"username": user, "password": password, "expiration": 4000}
        )
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


@pytest.fixture(scope="module")
def admin(pai: RunningPlatform, check: SwaggerCheck) -> Iterator[httpx.Client]:
    with client(pai, check, login(pai, check, pai.admin_user, pai.admin_password)) as c:
        created = c.post("/api/v2/users", json={"username": USER, "password": USER_PASSWORD, "email": "c@x"})
        assert (created.status_code, created.json()) == (201, {"message": "User is created successfully"})
        yield c


@pytest.fixture(scope="module")
def user(pai: RunningPlatform, check: SwaggerCheck, admin: httpx.Client) -> Iterator[httpx.Client]:
    with client(pai, check, login(pai, check, USER, USER_PASSWORD)) as c:
        yield c


def refused(response: httpx.Response, status: int, code: str, message: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    if message is not None:
        assert body["message"] == message, body


# ---- meta ---------------------------------------------------------------------------------------------


def test_the_swagger_copy_is_the_reference() -> None:
    if not REFERENCE_SWAGGER.exists():
        pytest.skip(f"extra check not run: {REFERENCE_SWAGGER} is absent (the in-repo copy is used)")
    assert SWAGGER.read_bytes() == REFERENCE_SWAGGER.read_bytes()


def test_info_through_the_prefix(pai: RunningPlatform, check: SwaggerCheck) -> None:
    with client(pai, check) as anon:
        info = anon.get("/api/v2/info")
        assert info.status_code == 200
        assert info.json()["launcherType"] == "k8s" and info.json()["authnMethod"] == "basic"
        assert anon.get("/api/v2").text == "PAI RESTful API v2 (beta version)"
        refused(
            anon.get("/api/v2/users"),
            401,
            "UnauthorizedUserError",
            "Guest is not allowed to do this operation.",
        )
        missing = anon.post(
            "/api/v2/authn/basic/login", data={"username": "nobody_here", "password": "secret1"}
        )
        refused(missing, 400, "NoUserError", "User nobody_here is not found.")


# ---- users, groups, tokens -----------------------------------------------------------------------------


def test_users_as_openpai_answers(admin: httpx.Client, user: httpx.Client) -> None:
    listed = admin.get("/api/v2/users")
    assert listed.status_code == 200 and USER in {u["username"] for u in listed.json()}
    one = admin.get(f"/api/v2/users/{USER}")
    assert one.status_code == 200 and one.json()["admin"] is False
    conflict = admin.post("/api/v2/users", json={"username": USER, "password": USER_PASSWORD})
    refused(conflict, 409, "ConflictUserError")
    patched = admin.put("/api/v2/users", json={"data": {"username": USER, "email": "new@x"}, "patch": True})
    assert patched.status_code == 201, patched.text
    assert admin.get(f"/api/v2/users/{USER}").json()["email"] == "new@x"

    ghost = "ghost_" + RUN
    missing = f"User {ghost} is not found."
    refused(
        admin.put("/api/v2/users", json={"data": {"username": ghost, "email": "g@x"}, "patch": True}),
        404,
        "NoUserError",
        missing,
    )
    refused(admin.delete(f"/api/v2/users/{ghost}"), 404, "NoUserError", missing)
    refused(
        admin.put(f"/api/v2/users/{ghost}/group/", json={"groupname": "default"}), 404, "NoUserError", missing
    )
    refused(
        admin.request("DELETE", f"/api/v2/users/{ghost}/group/", json={"groupname": "default"}),
        404,
        "NoUserError",
        missing,
    )
    refused(
        admin.put(f"/api/v2/users/{ghost}/grouplist/", json={"grouplist": ["default"]}),
        404,
        "NoUserError",
        missing,
    )

    for response in (
        user.post("/api/v2/users", json={"username": "x_" + RUN, "password": "secret12"}),
        user.put(
            "/api/v2/users", json={"data": {"username": pai_admin(admin), "email": "x@y"}, "patch": True}
        ),
        user.delete(f"/api/v2/users/{pai_admin(admin)}"),
        user.put(f"/api/v2/users/{USER}/group/", json={"groupname": "admingroup"}),
        user.put(f"/api/v2/users/{USER}/grouplist/", json={"grouplist": ["admingroup"]}),
    ):
        assert (response.status_code, response.json()) == (403, NON_ADMIN), response.request.url
    other = user.put("/api/v2/users/me", json={"data": {"username": pai_admin(admin), "email": "x@y"}})
    refused(other, 403, "ForbiddenUserError")


def pai_admin(admin: httpx.Client) -> str:
    check = admin.get("/api/v2/tokens/check")
    name: str = check.json()["username"]
    return name


def test_a_password_change_keeps_the_session_making_it(
    pai: RunningPlatform, check: SwaggerCheck, admin: httpx.Client
) -> None:
    name, password = f"pw_{RUN}", "first-Pa55"
    assert admin.post("/api/v2/users", json={"username": name, "password": password}).status_code == 201
    with (
        client(pai, check, login(pai, check, name, password)) as me,
        client(pai, check, login(pai, check, name, password)) as elsewhere,
    ):
        same = me.put(
            "/api/v2/users/me",
            json={
                "data": {"username": name, "oldPassword": password, "newPassword": password},
                "patch": True,
            },
        )
        assert same.status_code == 201, same.text
        assert elsewhere.get("/api/v2/tokens").status_code == 200  # nothing changed, nothing ended
        changed = me.put(
            "/api/v2/users/me",
            json={
                "data": {"username": name, "oldPassword": password, "newPassword": "second-Pa55"},
                "patch": True,
            },
        )
        assert changed.status_code == 201, changed.text
        assert me.get("/api/v2/tokens").status_code == 200
        deadline = time.monotonic() + 30
        while elsewhere.get("/api/v2/tokens").status_code != 401:
            assert time.monotonic() < deadline, "the user's other session survived the password change"
            time.sleep(0.2)
        assert me.get(f"/api/v2/users/{name}").status_code == 200
    login(pai, check, name, "second-Pa55")


def test_logout_ends_the_session(pai: RunningPlatform, check: SwaggerCheck) -> None:
    with client(pai, check, login(pai, check, USER, USER_PASSWORD)) as session:
        out = session.delete("/api/v2/authn/basic/logout")
        assert (out.status_code, out.json()) == (200, {"message": "Logout successfully"})
        deadline = time.monotonic() + 30
        while session.get("/api/v2/tokens").status_code != 401:
            assert time.monotonic() < deadline, "a session survived its logout"
            time.sleep(0.2)
        refused(session.get("/api/v2/tokens"), 401, "UnauthorizedUserError", "Your token is invalid.")


def test_tokens(admin: httpx.Client) -> None:
    app = admin.post("/api/v2/tokens/application")
    assert app.status_code == 200 and app.json()["application"] is True
    tokens = admin.get("/api/v2/tokens")
    assert tokens.status_code == 200 and app.json()["token"] in tokens.json()["tokens"]
    revoked = admin.delete(f"/api/v2/tokens/{app.json()['token']}")
    assert (revoked.status_code, revoked.json()) == (200, {"message": "revoke successfully"})


def test_groups(admin: httpx.Client, user: httpx.Client) -> None:
    name = f"compat_g_{RUN}"
    created = admin.post("/api/v2/groups", json={"groupname": name, "description": "d", "externalName": "e"})
    assert created.status_code == 201, created.text
    assert name in {g["groupname"] for g in admin.get("/api/v2/groups").json()}
    got = admin.get(f"/api/v2/groups/{name}")
    assert got.status_code == 200 and got.json()["description"] == "d"
    updated = admin.put(
        "/api/v2/groups", json={"data": {"groupname": name, "description": "d2"}, "patch": True}
    )
    assert updated.status_code == 201
    assert admin.put(f"/api/v2/users/{USER}/group/", json={"groupname": name}).status_code == 201
    members = admin.get(f"/api/v2/groups/{name}/userlist")
    assert members.json() == [{"username": USER, "clusterAdmin": False}]
    nobody = admin.get(f"/api/v2/groups/nothing_{RUN}/userlist")
    assert (nobody.status_code, nobody.json()) == (200, [])
    refused(user.post("/api/v2/groups", json={"groupname": "x" + RUN}), 403, "ForbiddenUserError")
    assert admin.delete(f"/api/v2/groups/{name}").status_code == 200


# ---- cluster -------------------------------------------------------------------------------------------


def test_virtual_clusters_and_sku_types(user: httpx.Client) -> None:
    vcs = user.get("/api/v2/virtual-clusters")
    assert vcs.status_code == 200 and "default" in vcs.json()
    assert user.get("/api/v2/virtual-clusters/default").status_code == 200
    refused(
        user.get("/api/v2/virtual-clusters/nowhere"),
        404,
        "NoVirtualClusterError",
        "Virtual cluster nowhere is not found.",
    )
    skus = user.get("/api/v2/cluster/sku-types", params={"vc": "default"})
    assert skus.status_code == 200 and skus.json()
    assert user.get("/api/v2/virtual-clusters/default/sku-types").json() == skus.json()


def test_storages_list(user: httpx.Client) -> None:
    listed = user.get("/api/v2/storages")
    assert listed.status_code == 200 and isinstance(listed.json()["storages"], list)


def _k8s(kind: str, body: dict[str, Any]) -> Any:
    """Read a response as Kubernetes' official client does (required fields and types enforced)."""
    return ApiClient().deserialize(json.dumps(body), kind, "application/json")


def test_kubernetes_nodes(admin: httpx.Client, user: httpx.Client) -> None:
    refused(user.get("/api/v2/kubernetes/nodes"), 403, "ForbiddenUserError", NON_ADMIN["message"])
    nodes = admin.get("/api/v2/kubernetes/nodes")
    assert nodes.status_code == 200
    parsed = _k8s("V1NodeList", nodes.json())
    assert sorted(n.metadata.name for n in parsed.items) == ["node-0", "node-1"]
    for node in parsed.items:
        assert node.status.capacity["nvidia.com/gpu"] == "4"
        ready = next(c for c in node.status.conditions if c.type == "Ready")
        assert ready.status == "True"
        assert any(a.type == "InternalIP" for a in node.status.addresses)


# ---- jobs ----------------------------------------------------------------------------------------------

MARKETPLACE_JOB = """protocolVersion: 2
name: {name}
type: job
version: '1.0'
contributor: OpenPAI
description: a marketplace-style job, as OpenPAI's templates are written
parameters:
  seconds: 600
prerequisites:
  - protocolVersion: 2
    name: image
    type: dockerimage
    version: 1.0-r1.4
    contributor: OpenPAI
    description: the image of the template
    uri: python:3.11-slim
taskRoles:
  worker:
    instances: 1
    dockerImage: image
    resourcePerInstance: {{cpu: 1, memoryMB: 512, gpu: 2, ports: {{http: 1}}}}
    commands:
      - echo started
      - sleep <% $parameters.seconds %>
defaults:
  virtualCluster: default
extras:
  submitFrom: acceptance
"""


def test_a_job_life_through_the_prefix(pai: RunningPlatform, admin: httpx.Client, ledger: JobLedger) -> None:
    name = f"life_{RUN}"
    text = MARKETPLACE_JOB.format(name=name)
    submitted = admin.post("/api/v2/jobs", content=text, headers=YAML)
    assert submitted.status_code == 202, submitted.text
    me = pai_admin(admin)
    key = ledger.expect(f"{me}~{name}", "STOPPED")
    # At once, as OpenPAI: attempt 0 exists and every attempts route answers.
    detail = admin.get(f"/api/v2/jobs/{key}")
    assert detail.status_code == 200 and detail.json()["jobStatus"]["attemptId"] == 0
    assert admin.get(f"/api/v2/jobs/{key}/attempts/0").status_code == 200
    attempts = admin.get(f"/api/v2/jobs/{key}/job-attempts")
    assert attempts.status_code == 200 and attempts.json()[0]["attemptIndex"] == 0
    assert admin.get(f"/api/v2/jobs/{key}/job-attempts/0").status_code == 200
    assert admin.get(f"/api/v2/jobs/{key}/job-attempts/healthz").text == "ok"
    # The identical submission again: the same 202 (a retrying client is not refused).
    again = admin.post("/api/v2/jobs", content=text, headers=YAML)
    assert (again.status_code, again.json()) == (202, submitted.json())
    refused(
        admin.post("/api/v2/jobs", content=text.replace("echo started", "echo other"), headers=YAML),
        409,
        "ConflictJobError",
    )

    config = admin.get(f"/api/v2/jobs/{key}/config")
    assert config.status_code == 200
    stored = yaml.safe_load(config.text)
    assert stored["prerequisites"][0]["contributor"] == "OpenPAI" and stored["extras"] == {
        "submitFrom": "acceptance"
    }

    running = _wait_running(admin, key)
    task = running["taskRoles"]["worker"]["taskStatuses"][0]
    assert isinstance(task["containerGpus"], int) and bin(task["containerGpus"]).count("1") == 2
    assert running["jobStatus"]["appExitMessages"] is None or not isinstance(
        running["jobStatus"]["appExitMessages"].get("runtime"), dict
    )
    pods = admin.get("/api/v2/kubernetes/pods")
    parsed = _k8s("V1PodList", pods.json())
    mine = [p for p in parsed.items if p.metadata.labels.get("jobName") == name]
    assert len(mine) == 1 and mine[0].spec.node_name == task["containerNodeName"]
    assert mine[0].status.phase == "Running" and mine[0].metadata.labels["userName"] == me
    assert admin.get("/api/v2/kubernetes/pods", params={"namespace": "elsewhere"}).json()["items"] == []

    assert admin.put(f"/api/v2/jobs/{key}/tag", json={"value": "compat"}).status_code == 200
    assert admin.request("DELETE", f"/api/v2/jobs/{key}/tag", json={"value": "compat"}).status_code == 200
    refused(
        admin.request("DELETE", f"/api/v2/jobs/{key}/tag", json={"value": "compat"}),
        404,
        "NoTagError",
        f"Tag compat is not found for job {key} .",
    )
    events = admin.get(f"/api/v2/jobs/{key}/events")
    assert events.status_code == 200 and events.json()["totalCount"] >= 1
    tasks = admin.get(f"/api/v2/jobs/{key}/attempts/0/taskRoles/worker/taskIndex/0/attempts")
    assert tasks.status_code == 200
    logs = admin.get(f"/api/v2/jobs/{key}/attempts/0/taskRoles/worker/taskIndex/0/attempts/0/logs")
    assert logs.status_code == 200 and {loc["name"] for loc in logs.json()["locations"]} >= {
        "stdout",
        "stderr",
    }
    _wait_for_output(
        admin, f"/api/v2/jobs/{key}/attempts/0/taskRoles/worker/taskIndex/0/attempts/0/logs/stdout", "started"
    )
    listed = admin.get("/api/v2/jobs", params={"username": me, "withTotalCount": "true"})
    assert listed.status_code == 200 and name in {j["name"] for j in listed.json()["data"]}

    stopped = admin.put(f"/api/v2/jobs/{key}/executionType", json={"value": "STOP"})
    assert stopped.status_code == 202
    final = wait_final(admin, key)
    assert final["jobStatus"]["state"] == "STOPPED"
    (latest, *_) = admin.get(f"/api/v2/jobs/{key}/job-attempts").json()
    assert isinstance(latest["exitDiagnostics"], dict) and latest["exitDiagnostics"]["diagnosticsSummary"]


def _wait_running(c: httpx.Client, key: str) -> dict[str, Any]:
    deadline = time.monotonic() + 240
    while True:
        detail: dict[str, Any] = c.get(f"/api/v2/jobs/{key}").json()
        if (
            detail["jobStatus"]["state"] == "RUNNING"
            and detail["taskRoles"]["worker"]["taskStatuses"][0]["containerNodeName"]
        ):
            return detail
        assert detail["jobStatus"]["state"] == "WAITING", detail["jobStatus"]
        assert time.monotonic() < deadline, f"{key} never ran"
        time.sleep(0.5)


def _wait_for_output(c: httpx.Client, path: str, text: str) -> None:
    deadline = time.monotonic() + 60
    while text not in c.get(path).text:
        assert time.monotonic() < deadline, f"{text!r} never appeared in {path}"
        time.sleep(0.5)


def test_a_failed_job_explains_itself_in_openpai_types(
    pai: RunningPlatform, admin: httpx.Client, ledger: JobLedger
) -> None:
    name = f"fails_{RUN}"
    text = (ROOT / "examples" / "exit-3.yaml").read_text().replace("name: exit-three", f"name: {name}")
    assert admin.post("/api/v2/jobs", content=text, headers=YAML).status_code == 202
    key = ledger.expect(f"{pai_admin(admin)}~{name}", "FAILED")
    final = wait_final(admin, key)
    status = final["jobStatus"]
    assert status["state"] == "FAILED" and status["appExitCode"] == 3
    runtime = status["appExitMessages"]["runtime"]
    assert runtime is None or isinstance(runtime, str)
    attempts = admin.get(f"/api/v2/jobs/{key}/job-attempts").json()
    assert isinstance(attempts[0]["exitDiagnostics"], dict)


def test_unknown_virtual_cluster_is_404_at_submission(admin: httpx.Client, user: httpx.Client) -> None:
    text = MARKETPLACE_JOB.format(name=f"lost_{RUN}").replace(
        "virtualCluster: default", "virtualCluster: nowhere"
    )
    for who in (admin, user):
        refused(
            who.post("/api/v2/jobs", content=text, headers=YAML),
            404,
            "NoVirtualClusterError",
            "Virtual cluster nowhere is not found.",
        )
    listed = admin.get("/api/v2/jobs", params={"keyword": f"lost_{RUN}"})
    assert listed.json() == []


def test_openpai_schema_example_job_is_accepted(
    pai: RunningPlatform, admin: httpx.Client, ledger: JobLedger
) -> None:
    """The job OpenPAI's protocol schema gives as its example, with a field of the submitter's own."""
    components = yaml.safe_load(OPENPAI_PROTOCOL.read_text())["components"]["schemas"]
    fields = components["JobProtocol"]["allOf"][1]["properties"]
    doc: dict[str, Any] = {
        k: v["example"] for k, v in components["PrerequisiteInfo"]["properties"].items() if "example" in v
    }
    doc.update({k: v["example"] for k, v in fields.items() if "example" in v})
    doc["name"] = f"schema_example_{RUN}"
    doc["x-submitted-by"] = {"tool": "acceptance"}
    response = admin.post("/api/v2/jobs", content=yaml.safe_dump(doc, sort_keys=False), headers=YAML)
    assert response.status_code == 202, response.text
    key = ledger.expect(f"{pai_admin(admin)}~{doc['name']}", "FAILED", "SUCCEEDED")
    config = yaml.safe_load(admin.get(f"/api/v2/jobs/{key}/config").text)
    assert config["x-submitted-by"] == {"tool": "acceptance"}
    assert config["prerequisites"] == doc["prerequisites"]
    assert config["secrets"] == {k: "******" for k in doc["secrets"]}
    final = wait_final(admin, key)
    # Its commands need the example's scripts and data, which this machine lacks: it is scheduled and
    # runs, and its failure is explained.
    if final["jobStatus"]["state"] == "FAILED":
        assert final["jobStatus"]["appExitDiagnostics"], final["jobStatus"]
