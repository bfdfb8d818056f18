"""The scheduler lease: one holder at a time, a standby takes over when the holder dies or lets go.

Against real NATS (the lease is a JetStream key-value entry) and, for the handover, two real scheduler
processes started as Kubernetes would start two replicas. About 25 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pai_common.bus import Bus
from pai_common.contract.rpc import ListVirtualClustersRequest, VirtualClustersReply
from pai_common.embedded import ServerProcess, child_env, free_port, start_mongo
from pai_common.errors import ServiceUnavailableError
from pai_scheduler.lease import TAKEOVER_BOUND_S, Lease, LeaseLost, LeaseSettings

CLUSTER_CSV = "node,leaf_type,leaf_count,cpu,memory_mb\nnode-0,gpu,4,32,262144\n"


async def _lease(bus: Bus, holder: str, ttl_s: float = 10.0) -> Lease:
    return await Lease.open(bus, holder, ttl_s, replicas=1)


class _ExpiringWhileCreated:
    """The key-value entry expiring inside nats-py's ``create``: the put is refused (the key exists), then
    the entry is gone when create reads it back. Real NATS cannot be timed to hit that gap on demand."""

    async def create(self, key: str, value: bytes) -> int:
        from nats.js.errors import KeyNotFoundError

        raise KeyNotFoundError


async def test_a_lease_expiring_during_create_is_not_an_error() -> None:
    lease = Lease(_ExpiringWhileCreated(), "b")  # type: ignore[arg-type]
    assert not await lease.try_acquire()  # nobody holds it: the next poll creates it
    assert lease.revision is None


async def test_one_holder_at_a_time_and_a_clean_handover(fresh_bus: Bus) -> None:
    a, b = await _lease(fresh_bus, "a"), await _lease(fresh_bus, "b")
    assert await a.try_acquire()
    assert not await b.try_acquire()
    await a.renew()
    assert not await b.try_acquire()
    assert await a.holder_now() == "a"
    await a.release()
    assert await b.try_acquire()
    assert await b.holder_now() == "b"
    # The former holder's next renewal finds it gone.
    with pytest.raises(LeaseLost):
        await a.renew()


async def test_an_unrenewed_lease_expires_and_a_restarted_holder_reclaims_its_own(fresh_bus: Bus) -> None:
    a = await _lease(fresh_bus, "a", ttl_s=1.5)
    b = await _lease(fresh_bus, "b", ttl_s=1.5)
    assert await a.try_acquire()
    # The same identity after a restart (a fresh Lease object, no revision in hand) takes it back at once.
    a_again = await _lease(fresh_bus, "a", ttl_s=1.5)
    assert await a_again.try_acquire()
    with pytest.raises(LeaseLost):
        await a.renew()  # the old incarnation is out
    deadline = asyncio.get_running_loop().time() + 20
    while not await b.try_acquire():  # nobody renews: the entry expires
        assert asyncio.get_running_loop().time() < deadline, "the lease never expired"
        await asyncio.sleep(0.2)
    assert await b.holder_now() == "b"


def test_settings_keep_the_takeover_within_bound() -> None:
    defaults = LeaseSettings()
    assert defaults.scheduler_lease_ttl_s + defaults.scheduler_lease_poll_s <= TAKEOVER_BOUND_S == 15
    with pytest.raises(ValueError, match="within 15s"):
        LeaseSettings(scheduler_lease_ttl_s=14.5, scheduler_lease_poll_s=1)
    with pytest.raises(ValueError, match="half"):
        LeaseSettings(scheduler_lease_ttl_s=4, scheduler_lease_renew_s=3)


# ---- two scheduler processes ---------------------------------------------------------------------


@pytest.fixture
def own_mongo(tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_mongo(tmp_path / "mongo")
    yield server
    server.stop()


def _start_scheduler(
    name: str, nats: ServerProcess, mongo: ServerProcess, tmp: Path
) -> subprocess.Popen[bytes]:
    data = tmp / name
    data.mkdir()
    (data / "cluster.csv").write_text(CLUSTER_CSV)
    env = child_env(
        {
            "PAI_NATS_URL": nats.url,
            "PAI_MONGO_URL": mongo.url,
            "PAI_DATA_DIR": str(data),
            "PAI_HTTP_PORT": str(free_port()),
            "PAI_SCHEDULER_LEASE_HOLDER": name,
            "PAI_LOG_LEVEL": "INFO",
        }
    )
    log = open(tmp / f"{name}.log", "wb")
    return subprocess.Popen(
        [sys.executable, "-m", "pai_scheduler"], env=env, stdout=log, stderr=subprocess.STDOUT
    )


async def _holder(lease: Lease) -> str | None:
    return await lease.holder_now()


async def _wait_for_holder(lease: Lease, wanted: str, timeout_s: float = 60.0) -> float:
    start = time.monotonic()
    while await _holder(lease) != wanted:
        assert time.monotonic() - start < timeout_s, f"{wanted} never took the lease"
        await asyncio.sleep(0.1)
    return time.monotonic() - start


async def _answers(bus: Bus, timeout_s: float = 60.0) -> VirtualClustersReply:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await bus.request(ListVirtualClustersRequest(), VirtualClustersReply, timeout=2)
        except ServiceUnavailableError:
            assert time.monotonic() < deadline, "no scheduler answers"
            await asyncio.sleep(0.1)


async def _responders(bus: Bus) -> int:
    """How many schedulers serve the scheduler's own RPCs (standbys serve none).

    Counted from the NATS micro services INFO answers: a scheduler process also serves one small service per
    consumer for replaying its dead letters (``deadletters.<durable>.replay``), which is not the scheduler's.
    """
    inbox = bus.nc.new_inbox()
    sub = await bus.nc.subscribe(inbox)
    await bus.nc.publish("$SRV.INFO.pai-scheduler", b"", reply=inbox)
    count = 0
    try:
        while True:
            info = json.loads((await sub.next_msg(timeout=1.0)).data)
            subjects = [e["subject"] for e in info.get("endpoints") or []]
            if any(subject.startswith("pai.rpc.scheduler.") for subject in subjects):
                count += 1
    except Exception:
        pass
    await sub.unsubscribe()
    return count


async def test_the_standby_takes_over_when_the_leader_is_killed(
    fresh_nats: ServerProcess, own_mongo: ServerProcess, tmp_path: Path
) -> None:
    bus = await Bus.connect(fresh_nats.url, "lease-test")
    await bus.ensure_streams()
    watcher = await _lease(bus, f"watcher-{uuid.uuid4().hex[:6]}")
    procs = {"sched-a": _start_scheduler("sched-a", fresh_nats, own_mongo, tmp_path)}
    try:
        await _wait_for_holder(watcher, "sched-a")
        procs["sched-b"] = _start_scheduler("sched-b", fresh_nats, own_mongo, tmp_path)
        assert (await _answers(bus)).virtual_clusters
        await asyncio.sleep(2)  # let sched-b reach its polling loop
        assert await _holder(watcher) == "sched-a"
        assert procs["sched-b"].poll() is None, "the standby must keep running"
        assert await _responders(bus) == 1, "only the lease holder may serve"

        os.kill(procs["sched-a"].pid, signal.SIGKILL)
        procs["sched-a"].wait()
        took = await _wait_for_holder(watcher, "sched-b")
        await _answers(bus)
        assert await _responders(bus) == 1
        print(f"takeover after SIGKILL: {took:.1f}s (bound {TAKEOVER_BOUND_S:g}s)")

        # A clean stop hands over at once: the leader deletes the lease on its way out.
        procs["sched-a"] = _start_scheduler("sched-a2", fresh_nats, own_mongo, tmp_path)
        await asyncio.sleep(2)
        procs["sched-b"].send_signal(signal.SIGTERM)
        assert procs["sched-b"].wait(30) == 0
        took = await _wait_for_holder(watcher, "sched-a2")
        await _answers(bus)
        print(f"takeover after SIGTERM: {took:.1f}s")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        await bus.close()
