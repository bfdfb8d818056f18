"""Security of users, groups and tokens against the real gateway (the whole platform as processes).

Each attack gets OpenPAI's status and error code, and nothing secret comes back: no password, no hash,
no signing key, no other user's token, in any response or in any service's log.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from pai_cli.platform import Platform
from tests.acceptance.harness import JobLedger, wait_final, wait_until

pytestmark = pytest.mark.e2e

ADMIN_PASSWORD = "sec-admin-Pa55word"
ALICE_PASSWORD = "alice-Pa55word"
BOB_PASSWORD = "bob-Pa55word"
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----alice-only-" + uuid.uuid4().hex
GUEST = {"code": "UnauthorizedUserError", "message": "Guest is not allowed to do this operation."}
INVALID = {"code": "UnauthorizedUserError", "message": "Your token is invalid."}
NON_ADMIN = {"code": "ForbiddenUserError", "message": "Non-admin is not allow to do this operation."}

JOB = """protocolVersion: 2
name: {name}
type: job
defaults:
  virtualCluster: {vc}
prerequisites:
  - {{type: dockerimage, uri: "python:3.11-slim", name: image}}
taskRoles:
  worker:
    instances: 1
    dockerImage: image
    resourcePerInstance: {{gpu: 0, cpu: 1, memoryMB: 256}}
    commands: ["true"]
"""


class Recorder:
    """Every response body this suite saw, to look for leaks at the end."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        self.tokens: dict[str, str] = {}  # token -> its owner

    def hook(self, response: httpx.Response) -> None:
        response.read()
        self.bodies.append(response.text)


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    return Recorder()


# The gateway's identity cache lives an hour here: a change seen within EVENT_GUARD_S can only have come
# from the auth service's events (token.revoked, user.changed, group.changed), never from the cache expiring.
IDENTITY_CACHE_S = 3600
EVENT_GUARD_S = 120.0

# One node of two GPUs: one for the default VC, one for a VC that no group grants at first.
CLUSTER = """
physicalCluster:
  skuTypes:
    gpu: {gpu: 1, cpu: 8, memory: 64Gi}
  cellTypes:
    gpu-NODE: {childCellType: gpu, childCellNumber: 2, isNodeLevel: true}
  physicalCells:
    - {cellType: gpu-NODE, cellAddress: node-0}
virtualClusters:
  default:
    virtualCells:
      - {cellType: gpu-NODE.gpu, cellNumber: 1}
  restricted:
    virtualCells:
      - {cellType: gpu-NODE.gpu, cellNumber: 1}
"""


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    data_dir = tmp_path_factory.mktemp("pai-sec")
    # Not <data dir>/cluster.yaml: `pai up` writes its own default cluster there.
    cluster = tmp_path_factory.mktemp("pai-sec-cluster") / "cluster.yaml"
    cluster.write_text(CLUSTER)
    p = Platform(
        data_dir=data_dir,
        nodes=1,
        gpus_per_node=2,
        port=0,
        extra_env={
            "PAI_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "PAI_IDENTITY_CACHE_S": str(IDENTITY_CACHE_S),
            "PAI_SCHEDULER_CLUSTER": str(cluster),
        },
    )
    p.start()
    yield p
    p.stop()


def client(p: Platform, recorder: Recorder, token: str | None = None, **headers: str) -> httpx.Client:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(
        base_url=p.url, timeout=20, headers=headers, event_hooks={"response": [recorder.hook]}
    )


def login(p: Platform, recorder: Recorder, user: str, password: str) -> str:
    with client(p, recorder) as c:
        response = c.post("/api/v2/authn/basic/login", json={"username": user, "password": password})
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    recorder.tokens[token] = user
    return token


@pytest.fixture(scope="module")
def admin(platform: Platform, recorder: Recorder) -> Iterator[httpx.Client]:
    with client(platform, recorder, login(platform, recorder, "admin", ADMIN_PASSWORD)) as c:
        for name, password in (("alice", ALICE_PASSWORD), ("bob", BOB_PASSWORD)):
            created = c.post(
                "/api/v2/users", json={"username": name, "password": password, "email": f"{name}@x"}
            )
            assert created.status_code == 201, created.text
            assert created.json() == {"message": "User is created successfully"}
        yield c


@pytest.fixture(scope="module")
def ledger(admin: httpx.Client) -> Iterator[JobLedger]:
    book = JobLedger()
    yield book
    book.assert_all_as_expected(admin, every_job=True)


@pytest.fixture(scope="module")
def alice(platform: Platform, recorder: Recorder, admin: httpx.Client) -> Iterator[httpx.Client]:
    with client(platform, recorder, login(platform, recorder, "alice", ALICE_PASSWORD)) as c:
        yield c


@pytest.fixture(scope="module")
def bob(platform: Platform, recorder: Recorder, admin: httpx.Client) -> Iterator[httpx.Client]:
    with client(platform, recorder, login(platform, recorder, "bob", BOB_PASSWORD)) as c:
        yield c


def signing_key(p: Platform) -> tuple[str, str]:
    keys = json.loads((p.data_dir / "auth" / "jwt-keys.json").read_text())["keys"]
    return keys[-1]["kid"], keys[-1]["secret"]


def b64(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def refused(
    response: httpx.Response, status: int, body: dict[str, str] | None = None, code: str = ""
) -> None:
    assert response.status_code == status, response.text
    if body is not None:
        assert response.json() == body
    if code:
        assert response.json()["code"] == code


# ---- tokens --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/v2/users", "/api/v2/users/me", "/api/v2/groups", "/api/v2/tokens", "/api/v2/tokens/check"]
)
def test_no_token(platform: Platform, recorder: Recorder, path: str) -> None:
    with client(platform, recorder) as c:
        refused(c.get(path), 401, GUEST)


def test_open_routes_need_no_token(platform: Platform, recorder: Recorder) -> None:
    with client(platform, recorder) as c:
        info = c.get("/api/v2/authn/info")
    assert info.status_code == 200 and info.json()["authn_type"] == "basic"


def test_expired_token(platform: Platform, recorder: Recorder, alice: httpx.Client) -> None:
    kid, secret = signing_key(platform)
    now = int(time.time())
    payload = {"username": "alice", "application": False, "jti": uuid.uuid4().hex, "iat": now - 7200}
    expired = jwt.encode({**payload, "exp": now - 3600}, secret, algorithm="HS256", headers={"kid": kid})
    with client(platform, recorder, expired) as c:
        refused(c.get("/api/v2/tokens/check"), 401, INVALID)


def test_forged_signature_and_alg_none(platform: Platform, recorder: Recorder, alice: httpx.Client) -> None:
    kid, _ = signing_key(platform)
    real = alice.headers["Authorization"].split(" ", 1)[1]
    header, payload, _sig = real.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged = [
        # Same claims, another secret, the real key id.
        jwt.encode(claims, "not-the-secret-" * 4, algorithm="HS256", headers={"kid": kid}),
        # Claims raised to another user under the original signature.
        f"{header}.{b64({**claims, 'username': 'admin'})}.{_sig}",
        # No signature at all.
        f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{b64({**claims, 'username': 'admin'})}.",
        f"{b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        # Another algorithm with the key id of the HMAC key.
        f"{b64({'alg': 'HS512', 'typ': 'JWT', 'kid': kid})}.{payload}.{_sig}",
        "garbage",
        "a.b.c",
        "x" * 6000,
    ]
    for token in forged:
        with client(platform, recorder, token) as c:
            refused(c.get("/api/v2/tokens/check"), 401, INVALID)


def test_revoked_token_stops_working_at_once(
    platform: Platform, recorder: Recorder, admin: httpx.Client
) -> None:
    token = login(platform, recorder, "alice", ALICE_PASSWORD)
    with client(platform, recorder, token) as c:
        assert c.get("/api/v2/tokens/check").json()["username"] == "alice"  # cached by the gateway now
        out = c.delete("/api/v2/authn/basic/logout")
        assert out.status_code == 200 and out.json() == {"message": "Logout successfully"}
        # Only the token.revoked event can end the cached identity this soon.
        wait_until(
            lambda: c.get("/api/v2/tokens/check").status_code == 401,
            "the revoked token refused",
            EVENT_GUARD_S,
        )
        refused(c.get("/api/v2/tokens/check"), 401, INVALID)


def test_password_change_ends_sessions_but_not_application_tokens(
    platform: Platform, recorder: Recorder, admin: httpx.Client
) -> None:
    created = admin.post("/api/v2/users", json={"username": "carol", "password": "carol-Pa55"})
    assert created.status_code == 201
    session = login(platform, recorder, "carol", "carol-Pa55")
    other_session = login(platform, recorder, "carol", "carol-Pa55")
    with client(platform, recorder, session) as c, client(platform, recorder, other_session) as other:
        app = c.post("/api/v2/tokens/application")
        assert app.status_code == 200 and app.json()["application"] is True
        app_token = app.json()["token"]
        recorder.tokens[app_token] = "carol"
        # The same password again is no change: no session ends.
        same = c.put(
            "/api/v2/users/me", json={"data": {"oldPassword": "carol-Pa55", "newPassword": "carol-Pa55"}}
        )
        assert same.status_code == 201, same.text
        changed = c.put(
            "/api/v2/users/me", json={"data": {"oldPassword": "carol-Pa55", "newPassword": "carol-N3w-pass"}}
        )
        assert changed.status_code == 201, changed.text
        # The user's other session ends (the revocation reaches the gateway through token.revoked)...
        wait_until(
            lambda: other.get("/api/v2/tokens/check").status_code == 401,
            "the other session ended by the password change",
            EVENT_GUARD_S,
        )
        refused(other.get("/api/v2/tokens/check"), 401, INVALID)
        # ...never the one that made the change: its client goes on working.
        assert c.get("/api/v2/tokens/check").status_code == 200
        assert c.get("/api/v2/users/me").json()["username"] == "carol"
    basic = base64.b64encode(f"carol:{app_token}".encode()).decode()
    with client(platform, recorder, Authorization=f"Basic {basic}") as c:
        check = c.get("/api/v2/tokens/check")
        assert check.status_code == 200 and check.json()["application"] is True
        # Application tokens may not manage accounts or tokens.
        refused(c.get("/api/v2/tokens"), 403, code="ForbiddenUserError")
        refused(c.put("/api/v2/users/me", json={"data": {"email": "c@x"}}), 403, code="ForbiddenUserError")


def test_another_users_token(
    platform: Platform, recorder: Recorder, alice: httpx.Client, bob: httpx.Client
) -> None:
    app = alice.post("/api/v2/tokens/application")
    alice_app = app.json()["token"]
    recorder.tokens[alice_app] = "alice"
    # Basic bob:<alice's application token> is not bob.
    basic = base64.b64encode(f"bob:{alice_app}".encode()).decode()
    with client(platform, recorder, Authorization=f"Basic {basic}") as c:
        refused(c.get("/api/v2/tokens/check"), 401, INVALID)
    # Bob may not revoke alice's token, and does not see it.
    refused(bob.delete(f"/api/v2/tokens/{alice_app}"), 403, code="ForbiddenUserError")
    assert alice_app not in bob.get("/api/v2/tokens").text
    assert alice_app in alice.get("/api/v2/tokens").json()["tokens"]
    with client(platform, recorder, alice_app) as c:
        check = c.get("/api/v2/tokens/check").json()
        assert check["username"] == "alice" and check["application"] is True and check["admin"] is False
        assert "exp" not in check and isinstance(check["iat"], int)  # application tokens never expire


# ---- rights --------------------------------------------------------------------------------------------


def test_non_admin_on_admin_routes(bob: httpx.Client) -> None:
    calls = [
        bob.post("/api/v2/users", json={"username": "mallory", "password": "mallory-1"}),
        bob.delete("/api/v2/users/alice"),
        bob.put("/api/v2/users/bob/admin", json={"admin": True}),
        bob.put("/api/v2/users/bob/grouplist", json={"grouplist": ["admingroup"]}),
        bob.put("/api/v2/users", json={"data": {"username": "bob", "admin": True}}),
        bob.post("/api/v2/groups", json={"groupname": "evil", "extension": {"acls": {"admin": True}}}),
        bob.delete("/api/v2/groups/default"),
        bob.get("/api/v2/groups/admingroup/userlist"),
        bob.get("/api/v2/audit-log"),
    ]
    for response in calls:
        refused(response, 403, NON_ADMIN)
    assert bob.get("/api/v2/users/bob").json()["admin"] is False


def test_reading_another_users_secrets(alice: httpx.Client, bob: httpx.Client, admin: httpx.Client) -> None:
    ext = {"extension": {"jobSSH": {"key": PRIVATE_KEY, "pubKey": "ssh-rsa AAAA alice"}}}
    assert alice.put("/api/v2/users/alice/extension", json=ext).status_code == 201
    assert alice.get("/api/v2/users/me").json()["extension"]["jobSSH"]["key"] == PRIVATE_KEY
    for reader in (bob, admin):
        one = reader.get("/api/v2/users/alice")
        assert one.status_code == 200
        assert one.json()["extension"]["jobSSH"] == {"key": "******", "pubKey": "ssh-rsa AAAA alice"}
        assert PRIVATE_KEY not in reader.get("/api/v2/users").text
        assert PRIVATE_KEY not in reader.get("/api/v1/user/alice").text
    refused(bob.put("/api/v2/users/alice/extension", json=ext), 403, code="ForbiddenUserError")
    refused(bob.put("/api/v2/users/alice/email", json={"email": "b@x"}), 403, code="ForbiddenUserError")
    for response in (bob.get("/api/v2/users/alice"), bob.get("/api/v2/users")):
        assert "password" not in response.text and "$argon2" not in response.text


def test_submitting_to_a_vc_the_groups_do_not_grant(
    alice: httpx.Client, admin: httpx.Client, ledger: JobLedger
) -> None:
    # A VC that does not exist: OpenPAI's 404 at submission, for anyone.
    for who in (alice, admin):
        missing = who.post(
            "/api/v2/jobs",
            content=JOB.format(name="sec-novc", vc="nowhere"),
            headers={"Content-Type": "text/yaml"},
        )
        refused(
            missing,
            404,
            {"code": "NoVirtualClusterError", "message": "Virtual cluster nowhere is not found."},
        )
    text = JOB.format(name="sec-vc", vc="restricted")
    response = alice.post("/api/v2/jobs", content=text, headers={"Content-Type": "text/yaml"})
    refused(response, 403, code="ForbiddenUserError")
    # A group that grants it changes that (through group.changed, despite the gateway's long cache).
    group = {"groupname": "restricted", "extension": {"acls": {"virtualClusters": ["restricted"]}}}
    assert admin.post("/api/v2/groups", json=group).status_code == 201
    assert admin.put("/api/v2/users/alice/group", json={"groupname": "restricted"}).status_code == 201
    assert "restricted" in alice.get("/api/v2/users/alice").json()["virtualCluster"]

    def submitted() -> httpx.Response | None:
        again = alice.post("/api/v2/jobs", content=text, headers={"Content-Type": "text/yaml"})
        if again.status_code == 403:  # the gateway has not seen group.changed yet; nothing was created
            refused(again, 403, code="ForbiddenUserError")
            return None
        return again

    accepted = wait_until(submitted, "the new grant reaching the gateway", EVENT_GUARD_S)
    assert accepted.status_code == 202, accepted.text
    job = wait_final(alice, ledger.expect("alice~sec-vc", "SUCCEEDED"))
    assert job["jobStatus"]["virtualCluster"] == "restricted"
    assert job["jobStatus"]["state"] == "SUCCEEDED", job["jobStatus"]


def test_brute_force_login_is_throttled(platform: Platform, recorder: Recorder, admin: httpx.Client) -> None:
    assert admin.post("/api/v2/users", json={"username": "dave", "password": "dave-Pa55"}).status_code == 201
    with client(platform, recorder) as c:
        for i in range(5):
            wrong = c.post("/api/v2/authn/basic/login", json={"username": "dave", "password": f"guess-{i}"})
            refused(wrong, 400, {"code": "IncorrectPasswordError", "message": "Password is incorrect."})
        right = c.post("/api/v2/authn/basic/login", json={"username": "dave", "password": "dave-Pa55"})
        refused(right, 429, code="TooManyRequestsError")
        assert "token" not in right.json()
        # The delay crosses the bus from the auth service to the HTTP header.
        assert int(right.headers["Retry-After"]) >= 1
        unknown = c.post("/api/v2/authn/basic/login", json={"username": "nobody", "password": "x" * 8})
        refused(unknown, 400, {"code": "NoUserError", "message": "User nobody is not found."})


def test_oversized_and_malformed_bodies(platform: Platform, recorder: Recorder, admin: httpx.Client) -> None:
    big = json.dumps({"username": "big", "password": "x" * (300 * 1024)})
    refused(
        admin.post("/api/v2/users", content=big, headers={"Content-Type": "application/json"}),
        413,
        code="PayloadTooLargeError",
    )
    with client(platform, recorder) as c:
        refused(c.post("/api/v2/authn/basic/login", content=big), 413, code="PayloadTooLargeError")
        bad_login = c.post(
            "/api/v2/authn/basic/login", content="{nope", headers={"Content-Type": "application/json"}
        )
        refused(bad_login, 400, code="InvalidParametersError")
        weird = c.post("/api/v2/authn/basic/login", json={"username": "a b", "password": "p4ssword-secret"})
        refused(weird, 400, code="InvalidParametersError")
        assert "p4ssword-secret" not in weird.text
    for body in (
        "{nope",
        "[1, 2]",
        '"text"',
        json.dumps({"username": "x", "password": "longenough", "root": 1}),
    ):
        response = admin.post("/api/v2/users", content=body, headers={"Content-Type": "application/json"})
        refused(response, 400, code="InvalidParametersError")
    refused(admin.post("/api/v2/users", json={"username": "../etc", "password": "longenough"}), 400)
    refused(admin.post("/api/v2/users", json={"username": "short", "password": "12345"}), 400)
    refused(admin.post("/api/v2/users", json={"username": "alice", "password": "long-enough"}), 409)
    refused(
        admin.get("/api/v2/users/ghost"), 400, {"code": "NoUserError", "message": "User ghost is not found."}
    )
    refused(admin.get("/api/v2/groups/ghost"), 400, code="NoGroupError")
    refused(admin.delete("/api/v2/users/admin"), 403, code="RemoveAdminError")
    huge_ext = {"extension": {"blob": "y" * (100 * 1024)}}
    refused(admin.put("/api/v2/users/admin/extension", json=huge_ext), 400, code="InvalidParametersError")


def test_the_audit_log_records_who_did_what(admin: httpx.Client, alice: httpx.Client) -> None:
    log = admin.get("/api/v2/audit-log", params={"target": "alice", "limit": 1000})
    assert log.status_code == 200
    entries = log.json()["data"]
    assert log.json()["totalCount"] == len(entries)
    actions = {(e["actor"], e["action"]) for e in entries}
    assert ("admin", "user.created") in actions
    assert ("alice", "user.updated") in actions
    assert ("admin", "user.updated") in actions  # the group grant
    assert all(isinstance(e["at"], int) for e in entries)


# ---- nothing leaked ------------------------------------------------------------------------------


def test_nothing_secret_in_responses_or_logs(
    platform: Platform, recorder: Recorder, admin: httpx.Client
) -> None:
    _, secret = signing_key(platform)
    forbidden = [
        ADMIN_PASSWORD,
        ALICE_PASSWORD,
        BOB_PASSWORD,
        "carol-Pa55",
        "carol-N3w-pass",
        "dave-Pa55",
        secret,
    ]
    forbidden += ["$argon2", "password_hash"]
    responses = "\n".join(recorder.bodies)
    for text in forbidden:
        assert text not in responses, f"a response holds {text[:12]}…"
    # A token shows up in a response only where its owner asked for it: login, application, token list.
    logs = "\n".join(
        p.read_text(errors="replace") for p in sorted((platform.data_dir / "logs").glob("*.log"))
    )
    assert "service ready" in logs
    for text in [*forbidden, PRIVATE_KEY, *recorder.tokens]:
        assert text not in logs, f"a service log holds {text[:12]}…"


def test_data_dir_keeps_keys_private(platform: Platform) -> None:
    mode = (platform.data_dir / "auth" / "jwt-keys.json").stat().st_mode & 0o777
    assert mode == 0o600
    assert not (Path(platform.data_dir) / "admin-credentials.json").exists()  # the password was given
