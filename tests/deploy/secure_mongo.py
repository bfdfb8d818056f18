"""A MongoDB-wire server (SecantusDB, through pai_common.mongo_server) run as compose.yaml runs its mongo
container: access control on and TLS only, with the certificate deploy/compose/credentials.py generated,
root made as the mongo image's entrypoint makes it on an empty volume (the server started once without
access control, root created, the server started again with it), then every service's user made by the
mongo-users container's own code (pai_common.mongo_provision.main, with the settings of its env file).

SecantusDB has no localhost exception (a server with --auth and no user refuses createUser), so the mongo
container's health check path for a volume from before users (root created under that exception) is not
run here; nor is anything of the mongo:7 image (its entrypoint, mongosh, the keyfile, the replica set).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pymongo import MongoClient

from pai_common import mongo_provision
from pai_common.embedded import ServerProcess, launch_mongo

IN_CONTAINER = "/etc/pai/tls/mongo-ca.crt"


def read_env(path: Path) -> dict[str, str]:
    """A Compose env file (KEY=value lines, # comments)."""
    pairs = (
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    return {key: value for key, value in pairs}


def on_host(url: str, port: int, bus: Path) -> str:
    """A URL naming the compose network's `mongo` container and the CA where containers mount it, pointed
    at this machine's server and the generated file. The certificate names localhost and 127.0.0.1 too, so
    the host name is verified as in a container (no tlsAllowInvalidHostnames)."""
    assert "@mongo:27017/" in url or "//mongo:27017/" in url, url
    assert f"tlsCAFile={IN_CONTAINER}" in url, url
    url = url.replace("mongo:27017/", f"127.0.0.1:{port}/", 1)
    return url.replace(f"tlsCAFile={IN_CONTAINER}", f"tlsCAFile={bus / 'mongo-ca.crt'}")


@dataclass
class SecureMongo:
    server: ServerProcess
    bus: Path

    def url(self, env_file: str) -> str:
        """The PAI_MONGO_URL of the generated `<env_file>`, pointed at this server."""
        return on_host(read_env(self.bus / env_file)["PAI_MONGO_URL"], self.server.port, self.bus)

    def provision_env(self) -> dict[str, str]:
        """The mongo-users container's settings, pointed at this server."""
        env = read_env(self.bus / "mongo-users.env")
        env["PAI_MONGO_PROVISION_URL"] = on_host(env["PAI_MONGO_PROVISION_URL"], self.server.port, self.bus)
        return env

    def provision(self) -> int:
        """What the mongo-users container runs (a refused login or a bad setting returns at once)."""
        return mongo_provision.main(self.provision_env(), attempts=3, pause_s=0.5)

    def stop(self) -> None:
        self.server.stop()


def start_secure_mongo(root: Path, bus: Path, timeout_s: float = 60.0) -> SecureMongo:
    """The server with root in place and every service's user provisioned."""
    tls = ["--tls-pem-file", str(bus / "mongo-server.pem")]
    server = launch_mongo(root, store="mongo", options=tls)
    mongo = SecureMongo(server, bus)
    try:
        server.wait_listening(timeout_s)
        # The image's first start on an empty volume: root from mongo.env, created without access control.
        initdb = read_env(bus / "mongo.env")
        url = on_host(
            f"mongodb://mongo:27017/?directConnection=true&tls=true&tlsCAFile={IN_CONTAINER}",
            server.port,
            bus,
        )
        with MongoClient(url, serverSelectionTimeoutMS=int(timeout_s * 1000)) as client:
            client.admin.command(
                "createUser",
                initdb["MONGO_INITDB_ROOT_USERNAME"],
                pwd=initdb["MONGO_INITDB_ROOT_PASSWORD"],
                roles=["root"],
            )
        server.stop()
        server.argv.append("--auth")
        server.respawn()
        server.wait_listening(timeout_s)
        assert mongo.provision() == 0, "provisioning the users failed (its errors are above)"
    except BaseException:
        server.stop()
        raise
    return mongo
