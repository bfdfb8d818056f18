"""Two auth replicas on one shared signing keys file (a Kubernetes Secret): either one verifies what the
other issued, and a replica never invents a key of its own."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from pai_auth import keys as signing_keys
from pai_auth.shell import AuthService, AuthSettings
from pai_common.bus import Bus
from pai_common.contract.rpc import LoginReply, LoginRequest, VerifyTokenRequest
from pai_common.embedded import ServerProcess
from pai_common.service import ServiceApp

ADMIN_PASSWORD = "admin-password-1"


def _settings(nats: ServerProcess, mongo: ServerProcess, data_dir: Path, keys_file: Path) -> AuthSettings:
    return AuthSettings(
        nats_url=nats.url,
        mongo_url=mongo.url,
        data_dir=data_dir,
        admin_password=ADMIN_PASSWORD,
        auth_keys_file=keys_file,
        argon2_time_cost=1,
        argon2_memory_kib=8 * 1024,
        argon2_parallelism=1,
    )


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret" / "jwt-keys.json"
    signing_keys.main(["rotate", str(path)])
    path.chmod(0o400)  # as a Secret volume mounts it
    return path


async def test_two_replicas_verify_each_others_tokens(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, keys_file: Path, tmp_path: Path
) -> None:
    database = f"auth_{uuid.uuid4().hex[:8]}"
    replicas = []
    for i in range(2):
        settings = _settings(fresh_nats, mongo_server, tmp_path / f"replica-{i}", keys_file)
        app = ServiceApp("auth", settings)
        service = AuthService(app, settings)
        app.name = database  # one database, as two pods of one Deployment
        replicas.append((app, service))
    bus = await Bus.connect(fresh_nats.url, "test")
    try:
        for app, _ in replicas:
            await app.start()
        # Requests go to either replica (one queue group): with keys of their own, about half would fail.
        tokens = []
        for i in range(12):
            reply = await bus.request(
                LoginRequest(username="admin", password=ADMIN_PASSWORD, client=f"10.1.0.{i}"), LoginReply
            )
            tokens.append(reply.token)
        for token in tokens:
            for _ in range(3):
                identity = await bus.request(VerifyTokenRequest(token=token), VerifyTokenRequest.REPLY)
                assert identity.username == "admin"  # type: ignore[attr-defined]
        shared = signing_keys.load(keys_file)
        assert (
            [k.kid for k in replicas[0][1].keys]
            == [k.kid for k in replicas[1][1].keys]
            == [k.kid for k in shared]
        )
        # Nothing was written beside the data directories: the replicas did not make keys of their own.
        assert not any((tmp_path / f"replica-{i}" / "auth" / "jwt-keys.json").exists() for i in range(2))
    finally:
        await bus.close()
        for app, _ in replicas:
            await app.stop()


def test_a_missing_or_malformed_shared_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent.json"
    with pytest.raises(signing_keys.KeysFileError, match="does not exist"):
        signing_keys.load(missing)
    assert not missing.exists()  # never created in the operator's place
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"keys": [{"kid": "k", "secret": "short"}]}))
    with pytest.raises(signing_keys.KeysFileError, match="at least 32"):
        signing_keys.load(bad)
    bad.write_text("{not json")
    with pytest.raises(signing_keys.KeysFileError, match="cannot be read"):
        signing_keys.load(bad)


def test_an_empty_admin_password_means_generate_one() -> None:
    assert AuthSettings(admin_password="").admin_password is None
