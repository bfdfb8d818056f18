"""deploy/nats/store-check.sh, the bus's recovery from a full disk outside `pai up` (Compose runs the server
under it, Kubernetes' liveness probe runs its `probe`): its decision against a monitoring port of the test's
own (every answer it may meet), then against a real nats-server whose store is on a small tmpfs, filled until
a stream fails a write and freed again. Run with busybox's sh, nc, df and awk, as in nats:2.10-alpine.
About 4 s (the real server: root only, to mount the tmpfs).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import StorageType, StreamConfig

from pai_common.embedded import _binary, free_port, wait_for_port
from tests.deploy.manifests import K8S, REPO, by_name, render

SCRIPT = REPO / "deploy" / "nats" / "store-check.sh"
BUSYBOX = shutil.which("busybox")
pytestmark = pytest.mark.skipif(BUSYBOX is None, reason="needs busybox (requirements-system.txt)")
STUCK = (
    '{"status":"unavailable","error":"JetStream stream \'$G \\u003e PAI_EVENTS\' write error: write '
    '/data/jetstream/$G/streams/PAI_EVENTS/msgs/1.blk: no space left on device"}'
)


def _env(monitor: str, store: Path, **extra: str) -> dict[str, str]:
    path = Path(BUSYBOX or "busybox").parent
    return {
        "PATH": f"{path}:/usr/bin:/bin",
        "NC": f"{BUSYBOX} nc",
        "NATS_MONITOR": monitor,
        "NATS_STORE": str(store),
        **extra,
    }


def probe(monitor: str, store: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BUSYBOX or "busybox", "sh", str(SCRIPT), "probe"],
        env=_env(monitor, store, **extra),
        capture_output=True,
        text=True,
        timeout=30,
    )


class Monitor:
    """A monitoring port answering /healthz as set."""

    def __init__(self) -> None:
        self.status, self.body = 200, '{"status":"ok"}'
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                data = outer.body.encode()
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    m = Monitor()
    yield m
    m.server.shutdown()


def test_the_probe_asks_for_a_restart_only_when_stuck_with_room_again(
    monitor: Monitor, tmp_path: Path
) -> None:
    assert probe(monitor.address, tmp_path).returncode == 0  # healthy
    monitor.status, monitor.body = 503, STUCK
    stuck = probe(monitor.address, tmp_path)
    assert stuck.returncode == 1 and "has room again" in stuck.stderr
    # Still full: a restart would fail the same way, so none yet.
    assert probe(monitor.address, tmp_path, NATS_STORE_ROOM_KB=str(2**40)).returncode == 0
    # A 503 for another reason (a stream catching up after a restart) is no reason to restart.
    monitor.body = '{"status":"unavailable","error":"JetStream stream \'$G > PAI_EVENTS\' is not current"}'
    assert probe(monitor.address, tmp_path).returncode == 0
    # No answer at all: the liveness probe fails, as the HTTP probe it replaces did.
    gone = probe(f"127.0.0.1:{free_port()}", tmp_path)
    assert gone.returncode == 1 and "does not answer" in gone.stderr


def test_kubernetes_and_compose_run_the_same_check(tmp_path: Path) -> None:
    objects = render(K8S / "overlays" / "production")
    nats = by_name(objects, "StatefulSet")["nats"]
    container = nats["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].endswith("-alpine"), "the check needs the alpine image's busybox"
    assert container["livenessProbe"]["exec"]["command"] == ["/bin/sh", "/etc/nats/store-check.sh", "probe"]
    conf = by_name(objects, "ConfigMap")["nats-config"]["data"]
    assert conf["store-check.sh"] == SCRIPT.read_text(), "run deploy/k8s/nats_users.py"
    import yaml

    compose = yaml.safe_load((REPO / "deploy" / "compose" / "compose.yaml").read_text())["services"]["nats"]
    assert compose["entrypoint"] == ["/bin/sh", "/etc/nats/store-check.sh", "run", "--"]
    assert compose["restart"] == "unless-stopped"
    mounts = {m["target"]: m["source"] for m in compose["volumes"] if isinstance(m, dict)}
    assert (REPO / "deploy" / "compose" / mounts["/etc/nats/store-check.sh"]).resolve() == SCRIPT


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root: the real server's disk-full state was not run")
    mount = tmp_path / "fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(filler: Path) -> None:
    """Write until the tmpfs refuses (dd stops at no space left)."""
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True, check=False)


async def _fill_until_a_store_fails(url: str, fs: Path) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="PAI_EVENTS", subjects=["pai.evt.>"], storage=StorageType.FILE))
    await js.publish("pai.evt.x", b"before")
    # Fill the disk (dd until it refuses), then publish until the stream's store fails a write.
    await asyncio.to_thread(_fill, fs / "filler")
    for _ in range(20):
        try:
            await js.publish("pai.evt.x", b"y" * 4000, timeout=0.5)
        except Exception:
            break
    else:
        raise AssertionError("the stream stored everything on a full disk")
    await nc.close()


def test_compose_s_wrapper_stops_a_stuck_server_once_there_is_room(tmpfs: Path) -> None:
    port, http = free_port(), free_port()
    store = tmpfs / "store"
    # The tmpfs is 8 MiB: "room again" is 2 MiB free here (16 MiB by default).
    room = {"NATS_STORE_ROOM_KB": "2048"}
    env = _env(
        f"127.0.0.1:{http}", tmpfs, NATS_SERVER=_binary("nats-server"), NATS_STORE_CHECK_S="0.2", **room
    )
    argv = ["-js", "-a", "127.0.0.1", "-p", str(port), "-m", str(http), "-sd", str(store)]
    log = open(tmpfs.parent / "nats.log", "wb")
    wrapper = subprocess.Popen(
        [BUSYBOX or "busybox", "sh", str(SCRIPT), "run", "--", *argv], env=env, stdout=log, stderr=log
    )
    try:
        wait_for_port(port, 10.0, wrapper)
        asyncio.run(_fill_until_a_store_fails(f"nats://127.0.0.1:{port}", tmpfs))
        # Stuck, but the disk is still full: it keeps running, and the probe says no restart yet.
        assert probe(f"127.0.0.1:{http}", tmpfs, **room).returncode == 0
        time.sleep(0.6)  # three of the wrapper's checks
        assert wrapper.poll() is None
        # The server reports the stuck stream: with any room at all the probe would ask for the restart.
        stuck = probe(f"127.0.0.1:{http}", tmpfs, NATS_STORE_ROOM_KB="0")
        assert stuck.returncode == 1 and "has room again" in stuck.stderr
        (tmpfs / "filler").unlink()
        assert wrapper.wait(timeout=10) == 1  # it stopped the server: the restart policy's turn
        log.flush()
        assert "has room again: stopping the server" in (tmpfs.parent / "nats.log").read_text()
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
        log.close()
    # Started afresh on the same store, the stream takes messages again.
    server = subprocess.Popen(
        [_binary("nats-server"), *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, 10.0, server)

        async def publish() -> int:
            nc = await nats.connect(f"nats://127.0.0.1:{port}")
            ack = await nc.jetstream().publish("pai.evt.x", b"after", timeout=5)
            await nc.close()
            return ack.seq

        assert asyncio.run(publish()) >= 2
        assert probe(f"127.0.0.1:{http}", tmpfs, **room).returncode == 0
    finally:
        server.terminate()
        server.wait(10)
