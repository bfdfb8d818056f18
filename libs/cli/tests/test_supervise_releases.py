"""`pai up`'s restart loop releases what a dead service left open on a database server of its own before it
starts the service again, touches no other service's transactions on the shared server, and starts the
replacement only once the gateway can tell it from the instance that died."""

from __future__ import annotations

import functools
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from pai_cli import platform as platform_module
from pai_cli.lock import DataDirLock
from pai_cli.platform import REPLACEMENT_GAP_S, Child, Platform
from pai_common.embedded import child_env, launch_mongo
from pai_common.responder_watch import STARTED_MARGIN_MS

# Far past every guard below: the servers never reap a transaction by themselves during the test.
NEVER_REAPED = ["--transaction-lifetime-s", "600"]


def _dead_child(platform: Platform, name: str) -> Child:
    """A child that has just died, whose restart runs a module that exits at once (only the release is
    looked at here)."""
    child = Child(name, "json.tool", child_env({}), platform.data_dir / "logs" / f"{name}.log")
    child.proc = subprocess.Popen(["true"])
    child.proc.wait()
    platform.children[name] = child
    return child


def test_a_dead_services_transactions_on_its_own_server_are_released_and_no_one_elses(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kill_a_client_in_a_transaction: Callable[[str, str, str, int], None],
) -> None:
    never_reaped = functools.partial(launch_mongo, options=NEVER_REAPED)
    monkeypatch.setattr(platform_module, "launch_mongo", never_reaped)
    platform = Platform(data_dir=tmp_path / "data", mongo_split=("jobs",))
    platform._launch_mongo(progress=None)
    live: MongoClient[dict[str, Any]] = MongoClient(platform.mongo_urls["auth"])
    try:
        for server in platform.servers:
            server.wait_listening(60)
        jobs_url, shared_url = platform.mongo_urls["jobs"], platform.mongo_urls["auth"]
        with MongoClient(jobs_url) as setup:
            setup["pai_jobs"]["jobs"].insert_many([{"_id": i} for i in range(2)])
        # The jobs service killed mid-transaction, on its own server.
        kill_a_client_in_a_transaction(jobs_url, "pai_jobs", "jobs", 1)
        _dead_child(platform, "jobs")
        # A live service's transaction on the shared server, open while auth (also there) dies.
        session = live.start_session()
        session.start_transaction()
        live["pai_auth"]["users"].insert_one({"_id": "alice"}, session=session)
        _dead_child(platform, "auth")

        said = platform.supervise()

        assert "jobs exited with 0; restarting it in 0.5s (its open transactions released)" in said
        assert "auth exited with 0; restarting it in 0.5s" in said  # the shared server is left alone
        session.commit_transaction()  # still open: killAllSessions went to the jobs server only
        session.end_session()
        assert [d["_id"] for d in live["pai_auth"]["users"].find()] == ["alice"]
        # Without the release this would wait out the 600 s lifetime; the socket gives up at 30 s.
        with MongoClient(jobs_url, socketTimeoutMS=30_000) as later:
            assert later["pai_jobs"]["jobs"].delete_one({"_id": 1}).deleted_count == 1
        assert shared_url != jobs_url
    finally:
        live.close()
        for child in platform.children.values():
            child.wait(10)
        platform.stop()


def test_a_dead_service_is_started_again_only_once_the_gateway_can_tell_its_replacement_from_it(
    tmp_path: Path,
) -> None:
    """A replacement started within STARTED_MARGIN_MS of a request the dead instance took would be waited
    for as that request's possible holder (responder_watch.py): the restart waits that long, in a round of
    its own, which names the new process in the data dir's lock all the same."""
    platform = Platform(data_dir=tmp_path / "data")
    lock = DataDirLock(platform.data_dir)
    assert lock.acquire(platform.url) is None
    platform._lock = lock
    dead = _dead_child(platform, "jobs")
    first = dead.proc
    seen = time.monotonic()
    try:
        assert platform.supervise() == ["jobs exited with 0; restarting it in 0.5s"]
        while dead.proc is first:
            assert time.monotonic() - seen < 30, "never started again"
            time.sleep(0.05)
            assert platform.supervise() == []
        assert dead.backoff.started_at - seen >= REPLACEMENT_GAP_S == STARTED_MARGIN_MS / 1000
        assert dead.proc is not None
        recorded = json.loads((platform.data_dir / "pai-up.lock").read_text())["processes"]
        assert recorded.get("jobs") == dead.proc.pid
    finally:
        dead.wait(10)
        lock.release()
