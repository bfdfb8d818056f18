"""Hostile users against every route of `pai up`, from outside (HTTP, raw sockets), as attackers do.

Mallory, an ordinary user, goes after Alice's things through every route the gateway publishes (its
OpenAPI document, so a route added later is covered too): her jobs (stop, tags), her account (password,
email, groups, admin flag), her group, her storage, her tokens, the admin routes. None of it may succeed,
and afterwards everything of Alice's is as it was. Every read leaves out Alice's job secret, her token and
the storage's credentials. Paths climbing out of their folder (logs, storages) get a 4xx and no file.
Headers cannot be injected into answers, oversized and deeply nested bodies are refused on every route
that takes a body, slow-loris connections are cut off while others are served, and tokens stop working at
once after a logout and after a password change.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.acceptance.harness import JobLedger, RunningPlatform, wait_final

YAML = {"Content-Type": "text/yaml"}
# Write routes an ordinary user may call with success: they act on the caller's own things.
OWN_ACTIONS = {
    ("POST", "/api/v2/jobs"),  # submits Mallory's own job
    ("PUT", "/api/v2/users/me"),
    ("PUT", "/api/v2/user/me"),
    ("POST", "/api/v2/tokens/application"),
    ("POST", "/api/v1/token/application"),
    ("POST", "/api/v2/authn/basic/login"),
    ("POST", "/api/v1/authn/basic/login"),
    ("POST", "/api/v2/tokens"),
    ("POST", "/api/v1/token"),
}
# Not called in the sweep: they end Mallory's own session (tested on their own below).
SESSION_ENDERS = re.compile(r"/logout$")


@dataclass
class Cast:
    alice: str
    alice_password: str
    alice_token: str
    alice_app_token: str
    mallory: str
    mallory_token: str
    group: str
    storage: str
    secret: str
    storage_secret: str
    running_job: str
    done_job: str


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: {response.text}"
    )
    return response.json() if response.content else None


def _job(name: str, command: str, secret: str | None = None) -> str:
    secrets = f"secrets:\n  token: {secret}\n" if secret else ""
    return f"""protocolVersion: 2
name: {name}
type: job
{secrets}prerequisites:
  - {{type: dockerimage, uri: "python:3.11-slim", name: image}}
taskRoles:
  main:
    instances: 1
    dockerImage: image
    resourcePerInstance: {{gpu: 0, cpu: 1, memoryMB: 256}}
    commands: [{json.dumps(command)}]
"""


@pytest.fixture(scope="module")
def cast(pai: RunningPlatform, ledger: JobLedger) -> Iterator[Cast]:
    suffix = uuid.uuid4().hex[:6]
    alice, mallory = f"alice{suffix}", f"mallory{suffix}"
    group, storage = f"alices{suffix}", f"alicedata{suffix}"
    secret, storage_secret = f"S3CRET-{uuid.uuid4().hex}", f"NFS-KEY-{uuid.uuid4().hex}"
    with pai.client() as admin:
        for user in (alice, mallory):
            _ok(admin.post("/api/v2/users", json={"username": user, "password": f"{user}-pw-1"}), 201)
        _ok(
            admin.post(
                "/api/v2/storages",
                json={
                    "name": storage,
                    "type": "samba",
                    "share": True,
                    "default": False,
                    "data": {
                        "address": "//files.example/alice",
                        "username": "a",
                        "password": storage_secret,
                    },
                },
            ),
            201,
        )
        acls = {"admin": False, "virtualClusters": ["default"], "storageConfigs": [storage]}
        _ok(admin.post("/api/v2/groups", json={"groupname": group, "extension": {"acls": acls}}), 201)
        _ok(admin.put(f"/api/v2/users/{alice}/group", json={"groupname": group}), 201)
    alice_token = pai.login(alice, f"{alice}-pw-1")
    with pai.client(alice_token) as client:
        app_token = _ok(client.post("/api/v2/tokens/application", json={}))["token"]
        running, done = f"long{suffix}", f"done{suffix}"
        _ok(client.post("/api/v2/jobs", content=_job(running, "sleep 3600"), headers=YAML), 202)
        _ok(
            client.post("/api/v2/jobs", content=_job(done, "echo done-$PAI_JOB_NAME", secret), headers=YAML),
            202,
        )
        _ok(client.put(f"/api/v2/jobs/{alice}~{done}/tag", json={"value": "keep"}))
        ledger.expect(f"{alice}~{running}", "STOPPED")
        ledger.expect(f"{alice}~{done}", "SUCCEEDED")
        wait_final(client, f"{alice}~{done}")
    yield Cast(
        alice,
        f"{alice}-pw-1",
        alice_token,
        app_token,
        mallory,
        pai.login(mallory, f"{mallory}-pw-1"),
        group,
        storage,
        secret,
        storage_secret,
        f"{alice}~{running}",
        f"{alice}~{done}",
    )
    with pai.client() as admin:
        admin.put(f"/api/v2/jobs/{alice}~{running}/executionType", json={"value": "STOP"})


def _fill(path: str, cast: Cast) -> str:
    values = {
        "username": cast.alice,
        "framework_name": cast.running_job,
        "groupname": cast.group,
        "name": cast.storage,
        "token": cast.alice_app_token,
        "attribute": "acls",
        "job_attempt": "0",
        "task_role": "main",
        "index": "0",
        "task_attempt": "0",
        "stream": "stdout",
        "seq": "1",
        "vc": "default",
    }
    return re.sub(r"\{([^}]+)\}", lambda m: values.get(m.group(1), "x"), path)


def _plausible_body(method: str, path: str, cast: Cast) -> dict[str, Any]:
    """A body the route would act on if the caller were allowed to (so a refusal is about rights)."""
    if path.endswith("/executionType"):
        return {"value": "STOP"}
    if path.endswith("/tag"):
        return {"value": "keep"}
    if path.endswith("/password"):
        return {"newPassword": "taken-over-1", "oldPassword": cast.alice_password}
    if path.endswith("/admin"):
        return {"admin": True}
    if path.endswith("/email"):
        return {"email": "mallory@evil.example"}
    if path.endswith(("/grouplist",)):
        return {"grouplist": ["admingroup"]}
    if path.endswith("/group"):
        return {"groupname": "admingroup"}
    if path.endswith("/virtualcluster"):
        return {"virtualCluster": ["default"]}
    if path.endswith("/extension") or "/extension/" in path:
        return {"extension": {"acls": {"admin": True}}, "data": {"admin": True}}
    if path in ("/api/v2/users", "/api/v2/user"):
        return {
            "username": cast.alice,
            "password": "taken-over-1",
            "data": {"username": cast.alice, "admin": True},
        }
    if path.startswith("/api/v2/storages"):
        return {
            "name": cast.storage,
            "type": "nfs",
            "share": True,
            "default": True,
            "data": {"server": "evil"},
        }
    if path.startswith("/api/v2/group"):
        return {"groupname": cast.group, "extension": {"acls": {"admin": True}}}
    return {"value": "x"}


def _routes(pai: RunningPlatform) -> list[tuple[str, str]]:
    document = httpx.get(f"{pai.url}/openapi.json", timeout=30).json()
    return sorted((m.upper(), p) for p, ops in document["paths"].items() for m in ops)


def test_mallory_changes_nothing_of_alices_on_any_route(pai: RunningPlatform, cast: Cast) -> None:
    routes = _routes(pai)
    writes = [
        (m, p) for m, p in routes if m != "GET" and (m, p) not in OWN_ACTIONS and not SESSION_ENDERS.search(p)
    ]
    assert len(writes) > 40, writes
    succeeded = []
    with pai.client(cast.mallory_token) as mallory:
        for method, path in writes:
            response = mallory.request(method, _fill(path, cast), json=_plausible_body(method, path, cast))
            assert response.status_code < 500, f"{method} {path}: {response.status_code} {response.text}"
            if response.status_code < 400:
                succeeded.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
    assert not succeeded, "Mallory succeeded on Alice's things:\n" + "\n".join(succeeded)

    # Everything of Alice's is as it was.
    alice_token = pai.login(cast.alice, cast.alice_password)  # her password still works
    with pai.client(alice_token) as alice:
        me = _ok(alice.get("/api/v2/users/me"))
        assert me["admin"] is False and cast.group in me["grouplist"] and me.get("email", "") == ""
        running = _ok(alice.get(f"/api/v2/jobs/{cast.running_job}"))
        assert running["jobStatus"]["state"] in ("WAITING", "RUNNING"), running["jobStatus"]
        assert _ok(alice.get(f"/api/v2/jobs/{cast.done_job}"))["tags"] == ["keep"]
        assert _ok(alice.get(f"/api/v2/storages/{cast.storage}"))["name"] == cast.storage
    with pai.client(cast.alice_app_token) as app:
        assert app.get("/api/v2/users/me").status_code == 200
    with pai.client() as admin:
        group = _ok(admin.get(f"/api/v2/groups/{cast.group}"))
        assert group["extension"]["acls"]["admin"] is False
        mallory_now = _ok(admin.get(f"/api/v2/users/{cast.mallory}"))
        assert mallory_now["admin"] is False and "admingroup" not in mallory_now["grouplist"]


def test_no_read_gives_mallory_alices_secrets(pai: RunningPlatform, cast: Cast) -> None:
    secrets = [cast.secret, cast.storage_secret, cast.alice_token, cast.alice_app_token, cast.alice_password]
    # A GET that ends the session (OIDC logout revokes the bearer token) would leave the rest testing 401.
    gets = [
        p
        for m, p in _routes(pai)
        if m == "GET" and not p.endswith("/stream") and not SESSION_ENDERS.search(p)
    ]
    assert len(gets) > 30, gets
    with pai.client(cast.mallory_token) as mallory:
        for path in gets:
            for job in (cast.running_job, cast.done_job):
                concrete = _fill(path, cast).replace(cast.running_job, job)
                response = mallory.get(concrete)
                assert response.status_code < 500, f"{concrete}: {response.status_code} {response.text}"
                leaked = [s[:12] for s in secrets if s in response.text]
                assert not leaked, f"GET {concrete} showed Mallory {leaked}"
        # What is private is refused outright, not merely masked.
        for path in (f"/api/v2/storages/{cast.storage}", "/api/v2/audit-log", "/api/v2/dead-letters"):
            assert mallory.get(path).status_code == 403, path
        tokens = _ok(mallory.get("/api/v2/tokens"))
        assert cast.alice_app_token not in json.dumps(tokens)


def _raw_get(
    pai: RunningPlatform, path: str, token: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, list[tuple[str, str]]]:
    """A GET sent byte for byte as written: no client normalises its dots or its percent-escapes."""
    parts = urlsplit(pai.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.putheader("Authorization", f"Bearer {token}")
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read(), response.getheaders()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "path",
    [
        "/api/v2/jobs/{job}/attempts/0/taskRoles/../../../../../../etc/taskIndex/0/attempts/0/logs/stdout",
        "/api/v2/jobs/{job}/attempts/0/taskRoles/..%2F..%2F..%2Fetc/taskIndex/0/attempts/0/logs/stdout",
        "/api/v2/jobs/{job}/attempts/0/taskRoles/main/taskIndex/0/attempts/0/logs/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/v2/jobs/{job}/attempts/0/taskRoles/%2e%2e/taskIndex/0/attempts/0/logs/stdout",
        "/api/v2/jobs/{job}/attempts/0/taskRoles/main/taskIndex/..%2f..%2f0/attempts/0/logs",
        "/api/v2/jobs/..%2F..%2F..%2Fetc%2Fpasswd/config",
        "/api/v2/storages/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/v2/storages/../../etc/passwd",
        "/api/v2/storages/%2e%2e",
        "/api/v2/dead-letters/..%2F1",
    ],
)
def test_paths_that_climb_out_get_nothing(pai: RunningPlatform, cast: Cast, path: str) -> None:
    status, body, _ = _raw_get(pai, path.replace("{job}", cast.done_job), cast.mallory_token)
    assert 400 <= status < 500, (status, body[:300])
    assert b"root:" not in body and b"/bin/" not in body
    assert set(json.loads(body)) >= {"code", "message"}


def test_headers_cannot_be_injected_into_answers(pai: RunningPlatform, cast: Cast) -> None:
    # A CR LF in the path, the query or a header value must not start a header of the answer.
    for path in (
        "/api/v2/jobs/x%0d%0aSet-Cookie:%20pwned=1",
        "/api/v2/jobs?keyword=%0d%0aSet-Cookie:%20pwned=1",
        "/api/v2/storages/a%0d%0aLocation:%20http://evil.example",
    ):
        status, _, headers = _raw_get(pai, path, cast.mallory_token)
        names = {name.lower() for name, _ in headers}
        assert "set-cookie" not in names and "location" not in names, (path, headers)
        assert status < 500, path
    # A tag with CR LF is stored as text (or refused) and never becomes a header either.
    with pai.client(cast.alice_token) as alice:
        tagged = alice.put(f"/api/v2/jobs/{cast.done_job}/tag", json={"value": "a\r\nSet-Cookie: pwned=1"})
        assert tagged.status_code in (200, 400), tagged.text
        assert "set-cookie" not in {k.lower() for k in tagged.headers}
        if tagged.status_code == 200:
            alice.request(
                "DELETE", f"/api/v2/jobs/{cast.done_job}/tag", json={"value": "a\r\nSet-Cookie: pwned=1"}
            )
    # Raw bytes that are not a valid header line: the server refuses the request, and stays up.
    with socket.create_connection((urlsplit(pai.url).hostname, urlsplit(pai.url).port), timeout=60) as sock:
        sock.sendall(
            b"GET /api/v2/info HTTP/1.1\r\nHost: x\r\nX-Bad: a\rb\r\nX-Folded: a\r\n  continued\r\n\r\n"
        )
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert httpx.get(f"{pai.url}/api/v2/info", timeout=30).status_code == 200
    # A forged Host does not turn up in what the gateway answers.
    status, body, headers = _raw_get(pai, "/api/v2/info", cast.mallory_token, {"Host": "evil.example"})
    assert b"evil.example" not in body and all("evil.example" not in v for _, v in headers)


def test_oversized_and_deeply_nested_bodies_on_every_route_that_takes_one(
    pai: RunningPlatform, cast: Cast
) -> None:
    huge = b'{"value": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    writes = [
        (m, p) for m, p in _routes(pai) if m in ("POST", "PUT", "PATCH") and not SESSION_ENDERS.search(p)
    ]
    with pai.client() as admin:  # as the admin: a refusal must be about the body, not about rights
        for method, path in writes:
            concrete = _fill(path, cast)
            too_big = admin.request(
                method, concrete, content=huge, headers={"Content-Type": "application/json"}
            )
            assert too_big.status_code == 413, f"{method} {path}: {too_big.status_code} {too_big.text[:200]}"

            def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while reading
                for i in range(0, len(huge), 65536):
                    yield huge[i : i + 65536]

            streamed = admin.request(
                method, concrete, content=chunks(), headers={"Content-Type": "application/json"}
            )
            if streamed.status_code != 413:
                # Only a route that never reads a body may answer otherwise: as it does without one.
                bare = admin.request(method, concrete)
                assert streamed.status_code == bare.status_code < 500, (
                    f"{method} {path} (chunked): {streamed.status_code} {streamed.text[:200]}"
                )
            nested = admin.request(
                method, concrete, content=deep, headers={"Content-Type": "application/json"}
            )
            assert 400 <= nested.status_code < 500, (
                f"{method} {path}: {nested.status_code} {nested.text[:200]}"
            )
    assert httpx.get(f"{pai.url}/api/v2/info", timeout=30).status_code == 200


def test_slow_loris_connections_are_cut_off_while_others_are_served(pai: RunningPlatform, cast: Cast) -> None:
    host, port = urlsplit(pai.url).hostname or "127.0.0.1", urlsplit(pai.url).port
    socks = []
    for _ in range(40):
        sock = socket.create_connection((host, port), timeout=120)
        sock.sendall(b"GET /api/v2/info HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        socks.append(sock)
    try:
        # Served while forty connections hold half a request each.
        assert httpx.get(f"{pai.url}/api/v2/info", timeout=30).status_code == 200
        assert pai.login(cast.mallory, f"{cast.mallory}-pw-1")
        # Each slow connection is closed by the gateway: recv answers b"" at its close, or the connection is
        # reset where our byte reached a socket the gateway had already closed. The socket's own timeout is
        # only a guard against a gateway that never closes them (socket.timeout fails the test).
        for sock in socks:
            try:
                sock.sendall(b"a")
                assert sock.recv(1024) == b""
            except (ConnectionResetError, BrokenPipeError):
                pass
    finally:
        for sock in socks:
            sock.close()


def test_tokens_are_dead_after_logout_and_after_a_password_change(pai: RunningPlatform, cast: Cast) -> None:
    user, password = f"replay{uuid.uuid4().hex[:6]}", "replay-pw-1"
    with pai.client() as admin:
        _ok(admin.post("/api/v2/users", json={"username": user, "password": password}), 201)
    first, second, third = (pai.login(user, password) for _ in range(3))
    gets = [
        "/api/v2/users/me",
        "/api/v2/jobs",
        "/api/v2/tokens",
        "/api/v2/virtual-clusters",
        "/api/v2/storages",
    ]
    with pai.client(first) as client:
        assert client.get("/api/v2/users/me").status_code == 200
        assert client.delete("/api/v2/authn/basic/logout").status_code == 200
        for path in gets:  # replayed after the logout: refused everywhere, at once
            assert client.get(path).status_code == 401, path
        assert client.put(f"/api/v2/jobs/{cast.done_job}/tag", json={"value": "x"}).status_code == 401
    with pai.client(second) as client:
        changed = client.put(
            f"/api/v2/users/{user}/password", json={"oldPassword": password, "newPassword": "replay-pw-2"}
        )
        assert changed.status_code == 201, changed.text
    with pai.client(third) as client:  # a session from before the change
        for path in gets:
            assert client.get(path).status_code == 401, path
    with httpx.Client(base_url=pai.url, timeout=30) as anonymous:
        old = anonymous.post("/api/v2/authn/basic/login", json={"username": user, "password": password})
        assert old.status_code in (400, 401), old.text
    assert pai.login(user, "replay-pw-2")
