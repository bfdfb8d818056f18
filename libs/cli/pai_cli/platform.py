"""The embedded platform on one machine: NATS, MongoDB-wire servers, every service, N runtime agents.

Used by ``pai up``, by the end-to-end tests and by the benchmarks, so that all three run the same thing.
Each service is its own process (``python -m pai_<service>``), exactly as in a cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pai_cli import bytecode, mongo_layout
from pai_cli.lock import DataDirBusyError, DataDirLock, Takeover
from pai_cli.store_watch import StoreWatch
from pai_common import bus_permissions
from pai_common.embedded import (
    ServerProcess,
    die_with_parent,
    launch_mongo,
    launch_nats,
    wait_for_port,
)
from pai_common.responder_watch import STARTED_MARGIN_MS

SERVICES = (
    "auth",
    "storage",
    "jobs",
    "scheduler",
    "orchestrator",
    "diagnosis",
    "monitoring",
    "marketplace",
    "gateway",
    "portal",
)
CREDENTIALS_FILE = "admin-credentials.json"
ENDPOINTS_FILE = "endpoints.json"
# The restart loop's back-off: a process that ran this long before it died is restarted at once; one that
# keeps dying sooner waits 1 s, 2 s, 4 s... up to BACKOFF_MAX_S between tries.
STABLE_AFTER_S = 30.0
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
# CPU capacity of each simulated node beside its GPUs, for tasks asking for no GPU (``cluster_config``):
# CPU leaves per GPU (8, like the cores declared per GPU: 2 nodes x 4 GPUs get 64, the slots the Slurm of
# benchmarks/vs_slurm.py is given) of one core and 8 GiB each. "CPU" is the leaf type the scheduler reserves
# for units of CPU and memory (SKU gpu: 0).
CPU_LEAF_TYPE = "CPU"
CPU_LEAVES_PER_GPU = 8
CPU_LEAF_MEMORY_MB = 8192
# Ctrl-C: how long the services get to drain before they are killed (whatever is down by then).
STOP_GRACE_S = 10.0
# A service that died is started again no sooner than this after its death is seen. A request the dead
# one had taken gets no answer; the asker gives up on it once no instance that could have taken it runs,
# and an instance started more than STARTED_MARGIN_MS after the request was sent could not have
# (responder_watch.py). A replacement started within that margin was taken for a possible holder, and the
# request waited out its timeout (a submission: 60 s; 2 of 9 kill-jobs runs of benchmarks/chaos.py).
REPLACEMENT_GAP_S = STARTED_MARGIN_MS / 1000


class PlatformError(RuntimeError):
    """A part of the platform did not start or stopped unexpectedly."""


@dataclass
class Backoff:
    """When a supervised process that died may be started again."""

    failures: int = 0
    started_at: float = 0.0
    next_start_at: float = 0.0
    # The death was seen and the next start is scheduled.
    dead: bool = False

    def started(self, now: float) -> None:
        self.started_at = now
        self.dead = False

    def died(self, now: float, least_s: float = 0.0) -> float:
        """Note a death seen at ``now``; answers the delay before the next start (``least_s`` at least)."""
        self.failures = self.failures + 1 if now - self.started_at < STABLE_AFTER_S else 0
        delay = 0.0 if self.failures <= 1 else min(BACKOFF_FIRST_S * 2 ** (self.failures - 2), BACKOFF_MAX_S)
        delay = max(delay, least_s)
        self.next_start_at = now + delay
        self.dead = True
        return delay


@dataclass
class Child:
    name: str
    module: str
    env: dict[str, str]
    log_path: Path
    # Listening sockets the platform holds for this process (the same descriptors at every restart).
    pass_fds: tuple[int, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    backoff: Backoff = field(default_factory=Backoff)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module],
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                pass_fds=self.pass_fds,
                # Never outlive the platform's supervisor: its services are safe to kill at any point.
                preexec_fn=die_with_parent(signal.SIGKILL),
            )
        self.backoff.started(time.monotonic())

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout_s: float) -> None:
        """Wait for the process to end; SIGKILL it (and its process group) after ``timeout_s``."""
        if self.proc is None:
            return
        try:
            self.proc.wait(max(timeout_s, 0.0))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait()


def real_gpus() -> list[str]:
    """The models of this machine's GPUs through NVML, or [] when there is no NVML or no GPU."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:
        return []
    try:
        names = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
            names.append(name.decode() if isinstance(name, bytes) else str(name))
        return names
    finally:
        pynvml.nvmlShutdown()


@dataclass
class Platform:
    data_dir: Path
    nodes: int = 2
    gpus_per_node: int = 4
    port: int = 9186
    nats_url: str | None = None
    # One MongoDB (or replica set) for every database; None: the embedded servers (``mongo_layout``).
    mongo_url: str | None = None
    # The services whose database gets an embedded server of its own in a new data dir (None: the
    # ``PAI_MONGO_SPLIT`` environment variable, else ``mongo_layout.DEFAULT_SPLIT``).
    mongo_split: tuple[str, ...] | None = None
    # Each database's server URL, by service (filled by start: the one URL everywhere with ``mongo_url``).
    mongo_urls: dict[str, str] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    # Use this machine's real GPUs (one node, all its GPUs) when NVML finds any.
    use_real_gpus: bool = False
    leaf_type: str = "gpu"
    # The scheduler's cluster file (a HiveD config, YAML, or a node inventory, CSV) instead of the inventory
    # written for the simulated nodes; it must name the nodes (node-0, node-1, ...).
    cluster_file: Path | None = None
    children: dict[str, Child] = field(default_factory=dict)
    servers: list[ServerProcess] = field(default_factory=list)
    # The embedded NATS server's users (user -> password, permissions); empty with PAI_NATS_URL.
    bus_users: dict[str, tuple[str, bus_permissions.Permissions]] = field(default_factory=dict)
    # Why this data dir's MongoDB-wire servers are not the ones ``mongo_split`` asks for (None: they are).
    mongo_note: str | None = None
    # What a previous `pai up` on this data dir left running when it died (None: nothing was left).
    takeover: Takeover | None = None
    _lock: DataDirLock | None = None
    _server_backoff: dict[str, Backoff] = field(default_factory=dict)
    # The embedded NATS server's JetStream store, stuck after its disk filled (store_watch.py).
    _store_watches: dict[str, StoreWatch] = field(default_factory=dict)
    # The HTTP ports the platform picked itself, bound and listening here and handed to their servers
    # by descriptor: a port picked free and bound later by the child can be taken in between.
    _listeners: dict[str, socket.socket] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def node_names(self) -> list[str]:
        return [f"node-{i}" for i in range(self.nodes)]

    def start(self, timeout_s: float = 120.0, progress: object = None) -> None:
        """Start everything and wait until every service is ready; on failure nothing is left running."""
        try:
            self._start(timeout_s, progress)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout_s: float, progress: object) -> None:
        self.data_dir = self.data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.port == 0:
            host = {**os.environ, **self.extra_env}.get("PAI_GATEWAY_HOST", "127.0.0.1")
            self.port = self._listen("gateway", host)
        lock = DataDirLock(self.data_dir)
        try:
            self.takeover = lock.acquire(self.url)
        except DataDirBusyError as exc:
            raise PlatformError(str(exc)) from None
        self._lock = lock
        if self.takeover is not None:
            left = ", ".join(self.takeover.stopped) or "nothing was still running"
            _say(progress, f"a platform left by pid {self.takeover.pid} was cleaned up: {left}")
        if "gateway" not in self._listeners and _listening(self.port):
            raise PlatformError(f"port {self.port} is already in use by another program; pass another --port")
        shutil.rmtree(self.data_dir / "run", ignore_errors=True)
        simulated = "true"
        if self.use_real_gpus:
            models = real_gpus()
            if models:
                # One machine is one node: every agent would otherwise claim the same devices.
                self.nodes, self.gpus_per_node, simulated = 1, len(models), "false"
                self.leaf_type = "".join(c if c.isalnum() or c in "-_." else "-" for c in models[0])
                _say(progress, f"using this machine's {len(models)} GPU(s): {models[0]}")
        # Every process below imports the platform's own modules: their bytecode is written once here.
        bytecode.compile_sources(
            ["pai_common", "pai_cli", "pai_runtime", *(f"pai_{name}" for name in SERVICES)]
        )
        _say(progress, "starting NATS (JetStream) and the MongoDB-wire server(s)")
        # Every server is started first, then each is waited for: they come up side by side.
        if not self.nats_url:
            # Every process gets a NATS user of its own with only the rights the contract gives it.
            self.bus_users = bus_permissions.embedded_users(self.node_names)
            server = launch_nats(self.data_dir, authorization=bus_permissions.nats_config(self.bus_users))
            self.servers.append(server)
            self._store_watches[server.name] = StoreWatch(server.log_path, self.data_dir / "nats")
            self.nats_url = server.url
        if self.mongo_url:
            self.mongo_urls = dict.fromkeys(mongo_layout.DATABASES, self.mongo_url)
        else:
            self._launch_mongo(progress)
        assert self.mongo_url is not None
        # The services start once the bus listens (they connect to it first) and while the MongoDB-wire
        # servers still load: a service's first database request comes seconds later, after its imports,
        # and waits up to 10 s for its server (``connect_mongo``), so their start-ups overlap.
        for server in self.servers:
            if server.name == "nats":
                server.wait_listening(60.0)
        if self.bus_users:
            self._write_bus_credentials()
        now = time.monotonic()
        for server in self.servers:
            self._server_backoff[server.name] = Backoff(started_at=now)
        # Where an extension finds the platform's bus and database (they keep their ports across restarts).
        # "mongo" is the server of every database not named otherwise in "mongo_databases" (the shared one).
        endpoints = {
            "api": self.url,
            "nats": self.nats_url,
            "mongo": self.mongo_url,
            "mongo_databases": {f"pai_{name}": url for name, url in self.mongo_urls.items()},
        }
        (self.data_dir / ENDPOINTS_FILE).write_text(json.dumps(endpoints, indent=2) + "\n")
        if self.cluster_file is not None:
            # Copied beside the data (the scheduler reads the format from the suffix: .csv or YAML).
            try:
                text = self.cluster_file.read_text()
            except OSError as exc:
                raise PlatformError(
                    f"cannot read the cluster file {self.cluster_file}: {exc.strerror}"
                ) from None
            suffix = ".csv" if self.cluster_file.suffix.lower() == ".csv" else ".yaml"
            cluster_file = self.data_dir / f"cluster{suffix}"
            cluster_file.write_text(text)
        else:
            cluster_file = self.data_dir / "cluster.yaml"
            cluster_file.write_text(yaml.safe_dump(self.cluster_config(), sort_keys=False))
        base = {
            **os.environ,
            "PAI_SCHEDULER_CLUSTER": str(cluster_file),
            "PAI_NATS_URL": self.nats_url,
            "PAI_MONGO_URL": self.mongo_url,
            "PAI_DATA_DIR": str(self.data_dir),
            "PAI_HTTP_PORT": "0",
            **self.extra_env,
        }
        # Only auth needs the admin password; no other process gets it.
        admin_password = base.pop("PAI_ADMIN_PASSWORD", None)
        logs = self.data_dir / "logs"
        # The portal is served on the API's origin: the gateway relays non-API paths to it.
        portal_port = self._listen("portal", "127.0.0.1")
        for name in SERVICES:
            env = {**base, "PAI_NATS_URL": self.bus_url(name)}
            if name in self.mongo_urls:
                env["PAI_MONGO_URL"] = self.mongo_urls[name]
            if name == "auth" and admin_password:
                env["PAI_ADMIN_PASSWORD"] = admin_password
            if name == "gateway":
                env["PAI_GATEWAY_PORT"] = str(self.port)
                env["PAI_PORTAL_URL"] = f"http://127.0.0.1:{portal_port}"
            if name == "portal":
                env["PAI_PORTAL_PORT"] = str(portal_port)
                env["PAI_PORTAL_API_URL"] = self.url
                # A client of the REST API only: no bus user, no database.
                del env["PAI_NATS_URL"], env["PAI_MONGO_URL"]
            fds: tuple[int, ...] = ()
            if name in self._listeners:
                fds = (self._listeners[name].fileno(),)
                env[f"PAI_{name.upper()}_FD"] = str(fds[0])
            self.children[name] = Child(name, f"pai_{name}", env, logs / f"{name}.log", fds)
        for node in self.node_names:
            env = {
                **base,
                "PAI_NATS_URL": self.bus_url(bus_permissions.node_durable(node)),
                "PAI_MONGO_URL": self.mongo_urls["runtime"],
                # A node agent's user may not create streams: it waits for the services to.
                "PAI_CREATE_STREAMS": "false",
                "PAI_NODE_NAME": node,
                "PAI_SIMULATED_GPUS": str(self.gpus_per_node),
                "PAI_FORCE_SIMULATED": simulated,
            }
            self.children[node] = Child(node, "pai_runtime", env, logs / f"runtime-{node}.log")
        _say(progress, f"starting {len(self.children)} service processes")
        for child in self.children.values():
            child.start()
        self._record()
        for server in self.servers:
            server.wait_listening(60.0)  # one that cannot start is named here, not as a service's failure
        self.wait_ready(timeout_s, progress)

    def _launch_mongo(self, progress: object) -> None:
        """The embedded MongoDB-wire servers of this data dir's layout (not waited for)."""
        wanted = self.mongo_split
        if wanted is None:
            try:
                wanted = mongo_layout.parse_split(os.environ.get(mongo_layout.SPLIT_ENV))
            except mongo_layout.LayoutError as exc:
                raise PlatformError(str(exc)) from None
        try:
            layout, self.mongo_note = mongo_layout.load(self.data_dir, wanted)
        except (mongo_layout.LayoutError, OSError) as exc:
            raise PlatformError(f"the MongoDB layout of {self.data_dir}: {exc}") from None
        _say(progress, self.mongo_note or f"starting {len(layout.stores)} MongoDB-wire server(s)")
        urls: dict[str, str] = {}
        for store in layout.stores:
            server = launch_mongo(self.data_dir, store=store)
            self.servers.append(server)
            urls[store] = server.url
        self.mongo_url = urls[mongo_layout.SHARED_STORE]
        self.mongo_urls = {name: urls[layout.store(name)] for name in mongo_layout.DATABASES}

    def bus_url(self, user: str) -> str:
        """The bus URL with ``user``'s credentials (the plain URL where the bus is not the embedded one)."""
        assert self.nats_url is not None
        if user not in self.bus_users:
            return self.nats_url
        return bus_permissions.url_for(self.nats_url, user, self.bus_users[user][0])

    def _write_bus_credentials(self) -> None:
        """The operator's and the extension user's URLs, for an admin's tools and for extensions (0600)."""
        folder = self.data_dir / "bus"
        folder.mkdir(mode=0o700, exist_ok=True)
        for user in (bus_permissions.OPERATOR, bus_permissions.EXTENSION):
            path = folder / f"{user}.url"
            path.touch(mode=0o600)
            path.chmod(0o600)
            path.write_text(self.bus_url(user) + "\n")

    def cluster_config(self) -> dict[str, Any]:
        """The simulated cluster as a HiveD config for the scheduler: alike nodes in the default VC.

        Each node has its GPU leaves (8 cores and 64 GiB declared per GPU, generously, so that a task's CPU
        and memory requests do not make it take more GPUs than it asks for) and, beside them on the same
        node, ``CPU_LEAVES_PER_GPU`` CPU leaves per GPU (1 core and ``CPU_LEAF_MEMORY_MB`` each, numbered
        after the GPUs): a task asking for no GPU takes CPU leaves, never a GPU. Without them every
        GPU-less task held one of the GPU leaves (HiveD's rule on a cluster without CPU leaves), so the
        default ran only as many GPU-less jobs at once as it has GPUs. The default VC owns both kinds.
        """
        g = self.gpus_per_node
        cpu_leaves = CPU_LEAVES_PER_GPU * g
        gpu_node, cpu_node = f"{self.leaf_type}-{g}-NODE", f"{CPU_LEAF_TYPE}-{cpu_leaves}-NODE"
        physical: list[dict[str, Any]] = []
        for node in self.node_names:
            physical.append({"cellType": gpu_node, "cellAddress": node})
            leaves = [{"cellAddress": str(g + i)} for i in range(cpu_leaves)]
            physical.append({"cellType": cpu_node, "cellAddress": node, "cellChildren": leaves})
        n = len(self.node_names)
        return {
            "physicalCluster": {
                "skuTypes": {
                    self.leaf_type: {"gpu": 1, "cpu": 8, "memory": "65536Mi"},
                    CPU_LEAF_TYPE: {"gpu": 0, "cpu": 1, "memory": f"{CPU_LEAF_MEMORY_MB}Mi"},
                },
                "cellTypes": {
                    gpu_node: {"childCellType": self.leaf_type, "childCellNumber": g, "isNodeLevel": True},
                    cpu_node: {
                        "childCellType": CPU_LEAF_TYPE,
                        "childCellNumber": cpu_leaves,
                        "isNodeLevel": True,
                    },
                },
                "physicalCells": physical,
            },
            "virtualClusters": {
                "default": {
                    "virtualCells": [
                        {"cellType": gpu_node, "cellNumber": n},
                        {"cellType": cpu_node, "cellNumber": n},
                    ]
                }
            },
        }

    def wait_ready(self, timeout_s: float, progress: object = None) -> None:
        deadline = time.monotonic() + timeout_s
        pending = set(self.children)
        while pending:
            for name in sorted(pending):
                child = self.children[name]
                if not child.running:
                    raise PlatformError(f"{name} exited during start-up; see {child.log_path}")
                if _ready(self.data_dir / "run" / f"{name}.json"):
                    pending.discard(name)
                    _say(progress, f"{name} ready")
            if time.monotonic() > deadline:
                raise PlatformError(f"not ready after {timeout_s:g}s: {', '.join(sorted(pending))}")
            time.sleep(0.1)
        wait_for_port(self.port, 30)

    def admin_credentials(self) -> tuple[str, str]:
        user = os.environ.get("PAI_ADMIN_USER", "admin")
        password = self.extra_env.get("PAI_ADMIN_PASSWORD") or os.environ.get("PAI_ADMIN_PASSWORD")
        if password:
            return user, password
        path = self.data_dir / CREDENTIALS_FILE
        if not path.exists():
            raise PlatformError(f"no admin password: set PAI_ADMIN_PASSWORD or look for {path}")
        saved = json.loads(path.read_text())
        return str(saved["username"]), str(saved["password"])

    def kill(self, name: str) -> None:
        """SIGKILL one service: no drain, no goodbye, as a crash would."""
        child = self.children[name]
        child.signal(signal.SIGKILL)
        child.wait(10)
        (self.data_dir / "run" / f"{name}.json").unlink(missing_ok=True)

    def restart(self, name: str, timeout_s: float = 60.0) -> None:
        child = self.children[name]
        if child.running:
            child.signal(signal.SIGTERM)
            child.wait(20)
        (self.data_dir / "run" / f"{name}.json").unlink(missing_ok=True)
        child.start()
        self._record()
        deadline = time.monotonic() + timeout_s
        while not _ready(self.data_dir / "run" / f"{name}.json"):
            if not child.running:
                raise PlatformError(f"{name} exited during restart; see {child.log_path}")
            if time.monotonic() > deadline:
                raise PlatformError(f"{name} not ready after {timeout_s:g}s")
            time.sleep(0.1)

    def dead_children(self) -> list[str]:
        return [name for name, child in self.children.items() if not child.running]

    def supervise(self) -> list[str]:
        """One round of the restart loop; answers what it saw and did, one line each.

        An embedded server that died is started again on its port with its data (the services reconnect
        by themselves); a service or node agent that died is started again. Each process has its own
        back-off, so one that keeps dying (its server is down, its port is taken) is retried less and
        less often without holding up the others. Nothing here waits for a process to be ready.
        """
        said: list[str] = []
        started = False  # a process started this round, to be named in the lock (said or not)
        now = time.monotonic()
        for server in self.servers:
            backoff = self._server_backoff.setdefault(server.name, Backoff())
            watch = self._store_watches.get(server.name)
            if server.running and watch is not None and watch.restart_now():
                said.append(f"the {server.name} server could not write its store (disk full); room is back")
                server.stop()
            if server.running:
                continue
            if not backoff.dead:
                delay = backoff.died(now)
                said.append(
                    f"the {server.name} server exited with {server.proc.returncode};"
                    f" restarting it on port {server.port}" + (f" in {delay:g}s" if delay else "")
                )
            if now >= backoff.next_start_at:
                server.respawn()
                backoff.started(now)
                started = True
        for name, child in self.children.items():
            if child.running:
                continue
            if not child.backoff.dead:
                code = child.proc.returncode if child.proc is not None else None
                delay = child.backoff.died(now, least_s=REPLACEMENT_GAP_S)
                released = self._release_transactions_of(name)
                said.append(
                    f"{name} exited with {code}; restarting it"
                    + (f" in {delay:g}s" if delay else "")
                    + (" (its open transactions released)" if released else "")
                )
            if now >= child.backoff.next_start_at:
                (self.data_dir / "run" / f"{name}.json").unlink(missing_ok=True)
                child.start()
                started = True
        if said or started:
            self._record()
        return said

    def _release_transactions_of(self, name: str) -> bool:
        """Abort what the service ``name``, just dead, left open on a database server of its own.

        Its restarted self would otherwise wait for the server to reap that transaction (10 s) before it
        could write the same documents: a jobs service killed mid-transaction held up every submission for
        10 s (benchmarks/chaos.py, kill-several). Only a server the service alone uses: on the shared one
        the other services' transactions would go too. True when there was one and it answered."""
        own = mongo_layout.own_store(name)
        for server in self.servers:
            if server.name == own and server.running:
                return server.release_transactions()
        return False

    def pids(self) -> dict[str, int]:
        """Every process of the platform that runs now, by name."""
        found = {f"{s.name}-server": s.proc.pid for s in self.servers if s.running}
        found.update({n: c.proc.pid for n, c in self.children.items() if c.proc is not None and c.running})
        return found

    def _record(self) -> None:
        if self._lock is not None:
            self._lock.record(self.pids())

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop everything within a bounded time, whatever is down: SIGTERM to every service, SIGKILL to
        those still there after ``grace_s`` (a service that waits for a bus that is gone ignores
        SIGTERM), then the servers."""
        # Gateway first (no new work), runtime agents last (their tasks keep running until then).
        order = ["gateway", *[s for s in SERVICES if s != "gateway"], *self.node_names]
        for name in order:
            if name in self.children:
                self.children[name].signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for name in order:
            if name in self.children:
                self.children[name].wait(deadline - time.monotonic())
        for server in self.servers:  # side by side: each closes its store on SIGTERM
            server.signal(signal.SIGTERM)
        for server in reversed(self.servers):
            server.stop(timeout_s=grace_s)
        self.servers.clear()
        for listener in self._listeners.values():
            listener.close()
        self._listeners.clear()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _listen(self, name: str, host: str) -> int:
        """Bind a free port on ``host`` for ``name``'s HTTP server and keep it listening; its port."""
        listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, 0))
        listener.listen(2048)  # uvicorn's own backlog
        self._listeners[name] = listener
        return int(listener.getsockname()[1])

    def rss_bytes(self) -> int:
        """Resident memory of every process of the platform, servers included."""
        pids = [c.proc.pid for c in self.children.values() if c.proc and c.running]
        pids += [s.proc.pid for s in self.servers if s.proc.poll() is None]
        total = 0
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                continue
        return total


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _ready(port_file: Path) -> bool:
    try:
        port = json.loads(port_file.read_text())["health_port"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return bool(response.status == 200)
    except (OSError, ValueError, KeyError):
        return False


def _say(progress: object, message: str) -> None:
    if callable(progress):
        progress(message)
