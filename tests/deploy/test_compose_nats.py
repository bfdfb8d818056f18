"""The Compose deployment's NATS users (deploy/compose/nats_users.py): the configuration it writes is the
platform's permission table (pai_common.bus_permissions) user for user, compose.yaml gives each platform
container its own credential and no other, and a real nats-server started with the generated
configuration lets each container's user in and refuses what its user may not do. About 3 s.

That every service runs a job with these credentials is shown by test_compose.py's on-host run, which
starts its NATS server with the same generated configuration.
"""

from __future__ import annotations

import json
import stat
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import nats
import pytest
import yaml

from pai_common import bus_permissions
from pai_common.embedded import ServerProcess, start_nats
from tests.deploy.manifests import REPO, compose_credentials, compose_nats_users
from tests.test_bus_security import Session

COMPOSE_DIR = REPO / "deploy" / "compose"
NODES = ("runtime-node-0", "runtime-node-1")


def _compose() -> dict[str, Any]:
    doc = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def _config(out: Path) -> dict[str, dict[str, Any]]:
    """user -> its entry in the generated nats.conf (the authorization block is JSON)."""
    text = "".join(
        line for line in (out / "nats.conf").read_text().splitlines(True) if not line.startswith("#")
    )
    assert text.startswith("authorization: ")
    return {u["user"]: u for u in json.loads(text.removeprefix("authorization: "))["users"]}


def _env_url(path: Path) -> str:
    [url] = [
        line.split("=", 1)[1] for line in path.read_text().splitlines() if line.startswith("PAI_NATS_URL=")
    ]
    return url


def on_host(url: str, server: ServerProcess) -> str:
    """A URL naming the compose network's `nats` container, pointed at this machine's server."""
    parts = urlsplit(url)
    assert (parts.hostname, parts.port) == ("nats", 4222), url
    netloc = f"{parts.username}:{parts.password}@127.0.0.1:{server.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compose") / "bus"
    compose_credentials.generate(out)
    return out


def test_the_generated_users_are_the_permission_table(generated: Path) -> None:
    users = _config(generated)
    expected = {s: bus_permissions.service_permissions(s) for s in bus_permissions.PLATFORM_SERVICES}
    expected |= {bus_permissions.node_durable(n): bus_permissions.node_permissions(n) for n in NODES}
    expected[bus_permissions.OPERATOR] = bus_permissions.operator_permissions()
    expected[bus_permissions.EXTENSION] = bus_permissions.extension_permissions(bus_permissions.EXTENSION)
    # The users `pai up` makes for the same nodes, no more, no fewer.
    assert set(users) == set(expected) == set(bus_permissions.embedded_users(list(NODES)))
    for user, permissions in expected.items():
        assert users[user]["permissions"] == permissions.to_nats(), user
    # A node agent may not publish a job event; the extension may publish nothing but JetStream requests.
    node = users["runtime-runtime-node-0"]["permissions"]["publish"]["allow"]
    assert "pai.evt.job.completed" not in node and "pai.hb.runtime-node-0" in node
    ext = users["extension"]["permissions"]["publish"]["allow"]
    assert all(s.startswith("$JS.") for s in ext), ext

    passwords = {u: e["password"] for u, e in users.items()}
    assert len(set(passwords.values())) == len(passwords) and min(map(len, passwords.values())) >= 32
    assert json.loads((generated / "passwords.json").read_text()) == passwords
    for container, user in compose_nats_users.bus_containers(_compose()).items():
        url = urlsplit(_env_url(generated / f"{container}.env"))
        assert (url.username, url.password, url.hostname) == (user, passwords[user], "nats"), container
    for user in ("operator", "extension"):
        url = urlsplit((generated / f"{user}.url").read_text().strip())
        assert (url.username, url.password) == (user, passwords[user])
    # The folder and every file in it: the owner's only (but the database CA's certificate, public).
    assert stat.S_IMODE(generated.stat().st_mode) == 0o700
    for path in generated.iterdir():
        public = path.name == "mongo-ca.crt"
        assert stat.S_IMODE(path.stat().st_mode) == (0o644 if public else 0o600), path.name


def test_running_it_again_keeps_the_passwords_and_rotate_replaces_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bus"
    assert compose_credentials.main(["--out", str(out)]) == 0
    first = {u: e["password"] for u, e in _config(out).items()}
    (out / "gone-container.env").write_text("PAI_NATS_URL=nats://x:y@nats:4222\n")
    assert compose_credentials.main(["--out", str(out)]) == 0
    assert {u: e["password"] for u, e in _config(out).items()} == first
    assert not (out / "gone-container.env").exists()  # a password nobody uses any more
    assert compose_credentials.main(["--out", str(out), "--rotate"]) == 0
    rotated = {u: e["password"] for u, e in _config(out).items()}
    assert set(rotated) == set(first) and not set(rotated.values()) & set(first.values())
    printed = capsys.readouterr()
    # Paths and user names, never a secret.
    assert "runtime-node-1.env: NATS user runtime-runtime-node-1, MongoDB user runtime" in printed.out
    mongo = json.loads((out / "mongo-passwords.json").read_text()).values()
    for password in [*first.values(), *rotated.values(), *mongo]:
        assert password not in printed.out + printed.err


def test_compose_gives_each_container_its_own_credential_only(generated: Path) -> None:
    compose = _compose()
    containers = compose_nats_users.bus_containers(compose)
    # The platform's containers: those running a service (mongo-users runs a tool from a service's image).
    platform = set(compose_nats_users.platform_containers(compose))
    assert "mongo-users" not in platform and "jobs" in platform
    assert set(containers) == platform - {"portal"}, "every platform container but the portal is on the bus"
    assert {containers[n] for n in NODES} == {bus_permissions.node_durable(n) for n in NODES}
    for name, container in compose["services"].items():
        env = container.get("environment") or {}
        assert "PAI_NATS_URL" not in env, f"{name}: the bus URL comes from its own env file only"
        env_files = container.get("env_file") or []
        if name in containers:
            assert env_files == [f"./bus/{name}.env"], name
            user = urlsplit(_env_url(generated / f"{name}.env")).username
            service = container["build"]["args"]["SERVICE"]
            node = env.get("PAI_NODE_NAME")
            assert user == (bus_permissions.node_durable(node) if service == "runtime" else service), name
            if service == "runtime":
                assert env["PAI_CREATE_STREAMS"] == "false", f"{name}: its user may not create streams"
        else:
            own = {"mongo": ["./bus/mongo.env"], "mongo-users": ["./bus/mongo-users.env"]}
            assert env_files == own.get(name, []), name
        # Of the generated folder, the NATS server mounts its configuration, the database its keyfile and
        # TLS files, every client of the database the CA's certificate, nobody anything else.
        mounts = [
            m["source"] if isinstance(m, dict) else str(m).split(":")[0]
            for m in container.get("volumes") or []
        ]
        bus_mounts = sorted(m for m in mounts if m.lstrip("./").startswith("bus"))
        expected = {
            "nats": ["./bus/nats.conf"],
            "mongo": ["./bus/mongo-ca.crt", "./bus/mongo-keyfile", "./bus/mongo-server.pem"],
            "mongo-users": ["./bus/mongo-ca.crt"],
        }
        database_client = name in containers  # every service on the bus has a database
        assert bus_mounts == expected.get(name, ["./bus/mongo-ca.crt"] if database_client else []), name
    nats_container = compose["services"]["nats"]
    [mount] = [
        m for m in nats_container["volumes"] if isinstance(m, dict) and m["source"] == "./bus/nats.conf"
    ]
    assert mount["bind"]["create_host_path"] is False and mount["read_only"] is True
    command = nats_container["command"]
    assert command[command.index("-c") + 1] == mount["target"]
    # No secret in the committed file, and the generated folder is never committed.
    assert "@nats" not in (COMPOSE_DIR / "compose.yaml").read_text()
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "deploy/compose/bus/jobs.env"], cwd=REPO, check=False, timeout=30
    )
    assert ignored.returncode == 0, "deploy/compose/bus/ must be ignored by git"
    # Nor sent to an image build (compose.yaml's build context is the repository).
    rules = [r for r in (REPO / ".dockerignore").read_text().splitlines() if r and not r.startswith("#")]
    assert rules[0] == "*" and not [r for r in rules if r.startswith("!") and "deploy" in r], rules


@pytest.fixture(scope="module")
def server(generated: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_nats(
        tmp_path_factory.mktemp("compose-nats"), authorization=(generated / "nats.conf").read_text()
    )
    yield process
    process.stop()


@pytest.fixture
async def as_container(server: ServerProcess, generated: Path) -> AsyncIterator[Any]:
    opened: list[Session] = []

    async def connect(name: str) -> Session:
        path = generated / (f"{name}.url" if name in ("operator", "extension") else f"{name}.env")
        url = path.read_text().strip() if path.suffix == ".url" else _env_url(path)
        session = Session(nc=None)  # type: ignore[arg-type]

        async def on_error(exc: Exception) -> None:
            session.errors.append(str(exc))

        user = urlsplit(url).username or ""
        session.nc = await nats.connect(
            on_host(url, server),
            error_cb=on_error,
            inbox_prefix=bus_permissions.inbox_prefix(user),
            allow_reconnect=False,
        )
        opened.append(session)
        return session

    yield connect
    for session in opened:
        await session.nc.close()


async def test_a_real_server_with_the_generated_config_admits_each_container_as_itself(
    as_container: Any, generated: Path, server: ServerProcess
) -> None:
    for name in [*compose_nats_users.bus_containers(_compose()), "operator", "extension"]:
        session = await as_container(name)
        await session.nc.flush(timeout=5)
        assert session.nc.is_connected and not session.errors, (name, session.errors)
    # Another user's name with this container's password, or no credentials at all: refused.
    jobs = urlsplit(_env_url(generated / "jobs.env"))
    wrong = urlunsplit(jobs._replace(netloc=f"auth:{jobs.password}@127.0.0.1:{server.port}"))
    for url in (wrong, server.url):
        with pytest.raises(Exception, match="Authorization Violation"):
            await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0)


async def test_a_real_server_with_the_generated_config_refuses_what_a_user_may_not_do(
    as_container: Any,
) -> None:
    node = await as_container("runtime-node-0")
    await node.nc.publish("pai.hb.runtime-node-0", b"{}")  # its own heartbeat: allowed
    await node.nc.publish("pai.evt.job.completed", b"{}")  # a job event: not a node agent's
    await node.refused("pai.evt.job.completed")
    await node.nc.subscribe("pai.cmd.runtime.runtime-node-1.>")  # another node's commands
    await node.refused("pai.cmd.runtime.runtime-node-1.>")
    assert not any("pai.hb.runtime-node-0" in e for e in node.errors), node.errors

    extension = await as_container("extension")
    for subject in ("pai.evt.job.completed", "pai.rpc.jobs.submit", "pai.cmd.runtime.runtime-node-0.kill"):
        await extension.nc.publish(subject, b"{}")
        await extension.refused(subject)

    jobs = await as_container("jobs")
    await jobs.nc.publish("pai.evt.task.running", b"{}")  # the runtime's event, not the jobs service's
    await jobs.refused("pai.evt.task.running")
