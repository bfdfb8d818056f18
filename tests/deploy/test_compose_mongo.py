"""The Compose deployment's MongoDB users (deploy/compose/credentials.py, mongo_users.py; the one-shot
mongo-users container's pai_common.mongo_provision): one user per service with readWrite on its own
database only, TLS only, against a real MongoDB-wire server (SecantusDB with access control and TLS, with
the generated certificate, tests/deploy/secure_mongo.py). About 5 s.

What is not run here (no Docker engine): the mongo:7 image itself — its entrypoint making root on an empty
volume, the keyfile copy (mongo/entrypoint.sh), the replica set and the health check (mongo/healthcheck.js)
— only checked for their wiring below. That every service runs a job with these users is shown by
test_compose.py's on-host run.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml
from cryptography import x509
from pymongo import MongoClient
from pymongo.errors import OperationFailure, ServerSelectionTimeoutError
from pymongo.uri_parser import parse_uri

from pai_common import mongo_provision
from tests.deploy import secure_mongo
from tests.deploy.manifests import REPO, compose_credentials, compose_mongo_users, compose_nats_users

COMPOSE_DIR = REPO / "deploy" / "compose"
UNAUTHORIZED, AUTHENTICATION_FAILED = 13, 18


def _compose() -> dict[str, Any]:
    doc = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def _database_containers() -> dict[str, str]:
    """Compose container -> the service whose database user it is (a node agent: runtime)."""
    platform = compose_nats_users.platform_containers(_compose())
    return {name: service for name, service in platform.items() if service != "portal"}


@pytest.fixture(scope="module")
def mongo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[secure_mongo.SecureMongo]:
    root = tmp_path_factory.mktemp("compose-mongo")
    compose_credentials.generate(root / "bus")
    server = secure_mongo.start_secure_mongo(root, root / "bus")
    yield server
    server.stop()


def _client(url: str) -> MongoClient[dict[str, Any]]:
    return MongoClient(url, serverSelectionTimeoutMS=3000)


# ---- what is generated ----------------------------------------------------------------------------------


def test_each_container_gets_its_own_service_user_over_tls(mongo: secure_mongo.SecureMongo) -> None:
    bus = mongo.bus
    passwords = json.loads((bus / "mongo-passwords.json").read_text())
    services = set(compose_mongo_users.SERVICES)
    # The Kubernetes deployment's list (deploy/k8s/base/mongo/replicaset-init-job.yaml), no more, no fewer.
    k8s_job = (REPO / "deploy" / "k8s" / "base" / "mongo" / "replicaset-init-job.yaml").read_text()
    [k8s_services] = re.findall(r'name: SERVICES, value: "([^"]+)"', k8s_job)
    assert services == set(k8s_services.split())
    assert set(passwords) == services | {"root"}
    assert len(set(passwords.values())) == len(passwords)
    # At least 32 characters, and none that a URL, an env file or Compose's interpolation would change.
    assert all(len(p) >= 32 and re.fullmatch(r"[A-Za-z0-9_-]+", p) for p in passwords.values())
    containers = _database_containers()
    assert set(containers.values()) == services and containers["runtime-node-1"] == "runtime"
    for container, service in containers.items():
        url = secure_mongo.read_env(bus / f"{container}.env")["PAI_MONGO_URL"]
        parts = urlsplit(url)
        assert (parts.scheme, parts.hostname, parts.port) == ("mongodb", "mongo", 27017), container
        assert (unquote(parts.username or ""), unquote(parts.password or "")) == (service, passwords[service])
        assert parts.path == f"/pai_{service}", container  # where its user is defined: its own database
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        assert query == {
            "directConnection": "true",
            "tls": "true",
            "tlsCAFile": compose_mongo_users.CA_IN_CONTAINER,
        }, container
    assert not (bus / "portal.env").exists()  # the portal uses no database
    # The one-shot container's settings and the mongo container's root.
    provision = mongo_provision.plan_from_env(secure_mongo.read_env(bus / "mongo-users.env"))
    assert dict(provision.passwords) == {s: passwords[s] for s in services}
    assert (provision.root_user, provision.root_password, provision.root_previous) == (
        "root",
        passwords["root"],
        None,
    )
    assert "@" not in provision.url and "tls=true" in provision.url
    initdb = secure_mongo.read_env(bus / "mongo.env")
    assert initdb == {"MONGO_INITDB_ROOT_USERNAME": "root", "MONGO_INITDB_ROOT_PASSWORD": passwords["root"]}
    # mongod's keyfile: 6 to 1024 base64 characters.
    key = (bus / "mongo-keyfile").read_text().strip()
    assert 6 <= len(key) <= 1024 and base64.b64decode(key, validate=True)
    # The server's certificate: signed by the generated CA, for the container's name and the loopback.
    ca = x509.load_pem_x509_certificate((bus / "mongo-ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((bus / "mongo-server.pem").read_bytes())
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"mongo", "localhost"}
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert b"PRIVATE KEY" in (bus / "mongo-server.pem").read_bytes()
    assert b"PRIVATE KEY" not in (bus / "mongo-ca.crt").read_bytes()


def test_a_password_is_quoted_in_its_url() -> None:
    url = compose_mongo_users.service_url("jobs", "p@ss:w/rd%?&=")
    assert url.startswith("mongodb://jobs:p%40ss%3Aw%2Frd%25%3F%26%3D@mongo:27017/pai_jobs?")
    url = url.split("?")[0]  # the query names the container's CA file, which the parser opens
    parsed = parse_uri(url)
    assert (parsed["username"], parsed["password"], parsed["database"]) == (
        "jobs",
        "p@ss:w/rd%?&=",
        "pai_jobs",
    )


def test_compose_runs_mongo_with_access_control_and_tls_only() -> None:
    compose = _compose()
    mongo = compose["services"]["mongo"]
    command = mongo["command"]
    for flag in (
        "--keyFile=/tmp/pai-mongo/keyfile",
        "--tlsMode=requireTLS",
        "--tlsCertificateKeyFile=/tmp/pai-mongo/server.pem",
        "--tlsCAFile=/tmp/pai-mongo/ca.crt",
    ):
        assert flag in command, flag
    assert "--replSet" in command and "--auth" not in command  # the entrypoint adds it after making root
    assert mongo["env_file"] == ["./bus/mongo.env"]
    # The wrapper copies each mounted secret to the path the command names, as the mongodb user, 0400.
    [entrypoint] = [
        m for m in mongo["volumes"] if isinstance(m, dict) and m["target"] == mongo["entrypoint"][-1]
    ]
    script = (COMPOSE_DIR / entrypoint["source"]).read_text()
    for mount in mongo["volumes"]:
        if isinstance(mount, dict) and mount["target"].startswith("/run/pai-mongo/"):
            name = mount["target"].removeprefix("/run/pai-mongo/")
            assert f'/run/pai-mongo/{name} "$dir/{name}"' in script, name
            assert mount["read_only"] is True and mount["bind"]["create_host_path"] is False, name
    assert 'install -o mongodb -g mongodb -m 0400 /run/pai-mongo/keyfile "$dir/keyfile"' in script
    assert script.rstrip().endswith('exec docker-entrypoint.sh "$@"')
    # The health check speaks TLS and runs the mounted script.
    test = mongo["healthcheck"]["test"]
    assert "--tls" in test and "--tlsCAFile=/tmp/pai-mongo/ca.crt" in test
    assert test[-1].endswith(".js")  # mongosh runs a file named last, then exits with its quit() code
    assert any(isinstance(m, dict) and m["target"] == test[-1] for m in mongo["volumes"])
    # The one-shot provisioning: this module, in a platform image (every image holds pai_common), after
    # the server is healthy; the services wait for it to have succeeded (test_compose.py).
    users = compose["services"]["mongo-users"]
    assert users["command"] == ["python", "-m", "pai_common.mongo_provision"]
    assert users["env_file"] == ["./bus/mongo-users.env"] and users["restart"] == "no"
    assert users["depends_on"] == {"mongo": {"condition": "service_healthy"}}
    assert users["image"] == "${REGISTRY:-}openpai-py/" + users["build"]["args"]["SERVICE"] + ":${TAG:-dev}"
    service_project = (REPO / "services" / users["build"]["args"]["SERVICE"] / "pyproject.toml").read_text()
    assert '"pai-common"' in service_project
    # No password, no user in the committed file.
    text = (COMPOSE_DIR / "compose.yaml").read_text()
    assert "@mongo" not in text and "MONGO_INITDB_ROOT_PASSWORD" not in text


# ---- against the server -----------------------------------------------------------------------------------


def test_each_container_reads_and_writes_its_own_database_only(mongo: secure_mongo.SecureMongo) -> None:
    containers = _database_containers()
    for container, service in containers.items():
        with _client(mongo.url(f"{container}.env")) as client:
            own = client[f"pai_{service}"]["compose_check"]
            own.insert_one({"by": container})
            assert own.count_documents({"by": container}) == 1, container
            other = client["pai_jobs" if service != "jobs" else "pai_auth"]["jobs"]
            for refused in (
                other.find_one,
                lambda: other.insert_one({"by": "intruder"}),  # noqa: B023 (called within the loop)
                lambda: client.admin.command("listDatabases"),
                lambda: own.database.command("createUser", "extra", pwd="x" * 32, roles=[]),  # noqa: B023
            ):
                with pytest.raises(OperationFailure) as refusal:
                    refused()
                assert refusal.value.code == UNAUTHORIZED, (container, refusal.value.details)


def test_a_wrong_password_a_plain_connection_and_an_unknown_ca_are_refused(
    mongo: secure_mongo.SecureMongo, tmp_path: Path
) -> None:
    jobs = parse_uri(mongo.url("jobs.env"))
    auth_password = secure_mongo.read_env(mongo.bus / "mongo-users.env")["PAI_MONGO_PASSWORD_AUTH"]
    wrong = mongo.url("jobs.env").replace(f":{jobs['password']}@", f":{auth_password}@")
    with _client(wrong) as client, pytest.raises(OperationFailure) as refusal:
        client.pai_jobs.jobs.find_one()
    assert refusal.value.code == AUTHENTICATION_FAILED
    # Without TLS the server closes the connection: no server is found.
    plain = mongo.url("jobs.env").split("?")[0] + "?directConnection=true"
    with (
        MongoClient(plain, serverSelectionTimeoutMS=500) as client,
        pytest.raises(ServerSelectionTimeoutError),
    ):
        client.pai_jobs.jobs.find_one()
    # A server whose certificate another CA signed is not trusted.
    other = compose_mongo_users.tls_files(tmp_path, {})
    (tmp_path / "other-ca.crt").write_bytes(other[compose_mongo_users.CA_CERT])
    untrusted = mongo.url("jobs.env").replace(str(mongo.bus / "mongo-ca.crt"), str(tmp_path / "other-ca.crt"))
    with (
        MongoClient(untrusted, serverSelectionTimeoutMS=500) as client,
        pytest.raises(ServerSelectionTimeoutError),
    ):
        client.pai_jobs.jobs.find_one()


def test_provisioning_without_its_settings_or_with_a_wrong_root_password_fails_clearly(
    mongo: secure_mongo.SecureMongo, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mongo_provision.main({"PAI_MONGO_PASSWORD_JOBS": "x"}) == 2
    assert "not set: PAI_MONGO_PROVISION_URL, PAI_MONGO_ROOT_USER" in capsys.readouterr().err
    env = mongo.provision_env()
    env["PAI_MONGO_ROOT_PASSWORD"] = "not-root's-password-" * 2
    assert mongo_provision.main(env, attempts=3, pause_s=0) == 1
    printed = capsys.readouterr()
    assert "the server refused root's password" in printed.err
    assert not [v for k, v in env.items() if "PASSWORD" in k and v in printed.out + printed.err]


def test_provisioning_again_changes_nothing_and_a_rotation_takes_effect(
    mongo: secure_mongo.SecureMongo, capsys: pytest.CaptureFixture[str]
) -> None:
    """Last in this file: it rotates the module's passwords."""
    before = {c: mongo.url(f"{c}.env") for c in _database_containers()}
    assert mongo.provision() == 0  # the fixture provisioned once already
    printed = capsys.readouterr().out
    assert "user jobs (updated) may read and write pai_jobs only" in printed
    root = mongo.provision_env()
    with MongoClient(
        root["PAI_MONGO_PROVISION_URL"],
        username="root",
        password=root["PAI_MONGO_ROOT_PASSWORD"],
        serverSelectionTimeoutMS=3000,
    ) as admin:
        for service in compose_mongo_users.SERVICES:
            [user] = admin[f"pai_{service}"].command("usersInfo", service)["users"]
            assert user["roles"] == [{"role": "readWrite", "db": f"pai_{service}"}], service
    for container, url in before.items():
        with _client(url) as client:
            client[f"pai_{_database_containers()[container]}"]["compose_check"].count_documents({})

    old_root = root["PAI_MONGO_ROOT_PASSWORD"]
    compose_credentials.generate(mongo.bus, rotate=True)
    # Running the step again before `up` keeps the new passwords and root's former one.
    compose_credentials.generate(mongo.bus)
    rotated = mongo.provision_env()
    assert rotated["PAI_MONGO_ROOT_PASSWORD_PREVIOUS"] == old_root != rotated["PAI_MONGO_ROOT_PASSWORD"]
    assert mongo.provision() == 0
    printed = capsys.readouterr()
    assert "root: password rotated" in printed.out
    secrets = [v for k, v in rotated.items() if "PASSWORD" in k]
    assert not [p for p in secrets if p in printed.out + printed.err]
    for container, old_url in before.items():
        service = _database_containers()[container]
        with _client(old_url) as client, pytest.raises(OperationFailure) as refusal:
            client[f"pai_{service}"]["compose_check"].find_one()
        assert refusal.value.code == AUTHENTICATION_FAILED, container
        with _client(mongo.url(f"{container}.env")) as client:
            assert client[f"pai_{service}"]["compose_check"].count_documents({}) >= 0, container
    for password, works in ((old_root, False), (rotated["PAI_MONGO_ROOT_PASSWORD"], True)):
        with MongoClient(
            rotated["PAI_MONGO_PROVISION_URL"],
            username="root",
            password=password,
            serverSelectionTimeoutMS=3000,
        ) as admin:
            if works:
                admin.admin.command("usersInfo", "root")
            else:
                with pytest.raises(OperationFailure):
                    admin.admin.command("usersInfo", "root")
    # Once root's new password is set, provisioning again logs in with it directly.
    assert mongo.provision() == 0
    assert "root: password rotated" not in capsys.readouterr().out
