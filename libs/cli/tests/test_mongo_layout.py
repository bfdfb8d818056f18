"""Which embedded MongoDB-wire server holds which database (``pai_cli.mongo_layout``), and that `pai up`'s
server handling covers each of them: an older data dir keeps finding its data, a killed server comes
back on its port with its data, an unclean stop's takeover stops them all."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from pai_cli.lock import DataDirLock
from pai_cli.mongo_layout import (
    DATABASES,
    DEFAULT_SPLIT,
    LAYOUT_FILE,
    LayoutError,
    MongoLayout,
    choose,
    parse_split,
)
from pai_cli.platform import SERVICES, Platform
from pai_common.embedded import ServerProcess, launch_mongo


def test_the_setting_names_the_databases_with_a_server_of_their_own() -> None:
    assert parse_split(None) == parse_split(" ") == DEFAULT_SPLIT == ("jobs", "orchestrator")
    assert parse_split("none") == ()
    # Every service `pai up` runs with a database (the portal has none; node agents use the runtime's).
    assert set(DATABASES) == set(SERVICES) - {"portal"} | {"runtime"}
    assert parse_split("orchestrator, jobs,jobs") == ("orchestrator", "jobs")
    with pytest.raises(LayoutError, match="portal, job is not a service with a database"):
        parse_split("jobs,portal,job")
    layout = MongoLayout(("jobs",))
    assert (layout.store("jobs"), layout.store("auth"), layout.stores) == (
        "mongo-jobs",
        "mongo",
        ["mongo", "mongo-jobs"],
    )


def test_a_data_dir_keeps_its_layout_and_an_older_one_keeps_its_one_server() -> None:
    assert choose(None, shared_store_used=False, wanted=("jobs", "orchestrator")) == (
        MongoLayout(("jobs", "orchestrator")),
        None,
    )
    older, note = choose(None, shared_store_used=True, wanted=("jobs", "orchestrator"))
    assert older.own == () and note is not None and "version with one MongoDB-wire server" in note
    assert choose(None, shared_store_used=True, wanted=()) == (MongoLayout(), None)
    # What the data dir recorded wins over today's setting, both ways, and says so.
    kept, note = choose(MongoLayout(("jobs",)).to_json(), shared_store_used=True, wanted=())
    assert kept.own == ("jobs",) and note is not None and note.endswith("own servers: jobs")
    kept, note = choose(MongoLayout().to_json(), shared_store_used=True, wanted=("jobs",))
    assert kept.own == () and note is not None and "PAI_MONGO_SPLIT applies to new ones" in note
    assert choose(MongoLayout(("jobs",)).to_json(), shared_store_used=True, wanted=("jobs",))[1] is None
    with pytest.raises(LayoutError, match="not a layout"):
        choose('{"own": 1}', shared_store_used=True, wanted=())
    with pytest.raises(LayoutError, match="frontend is not a service"):
        choose('{"own_server": ["frontend"]}', shared_store_used=True, wanted=())


def _launch(data_dir: Path, split: tuple[str, ...]) -> Platform:
    platform = Platform(data_dir=data_dir, mongo_split=split)
    platform._launch_mongo(progress=None)
    return platform


def _wait(*servers: ServerProcess) -> None:
    for server in servers:
        server.wait_listening(60.0)


def _job_names(url: str) -> list[str]:
    client: MongoClient[dict[str, Any]]
    with MongoClient(url, serverSelectionTimeoutMS=10_000) as client:
        return sorted(d["name"] for d in client["pai_jobs"]["jobs"].find())


def _insert_job(url: str, name: str) -> None:
    client: MongoClient[dict[str, Any]]
    with MongoClient(url, serverSelectionTimeoutMS=10_000) as client:
        client["pai_jobs"]["jobs"].insert_one({"name": name})


def test_older_data_is_found_and_every_server_is_supervised_and_taken_over(tmp_path: Path) -> None:
    # Servers are started side by side where the steps allow it: each start is a second or more.
    older, data = tmp_path / "older", tmp_path / "new"
    # A data dir written by the single-server layout (every database in <data dir>/mongo, no layout file),
    # and a new one.
    single = launch_mongo(older)
    platform = _launch(data, ("jobs",))
    lock = DataDirLock(data)
    reopened: Platform | None = None
    try:
        _wait(single, *platform.servers)
        _insert_job(single.url, "before-the-split")
        single.stop()
        reopened = _launch(older, ("jobs", "orchestrator"))
        assert [s.name for s in platform.servers] == ["mongo", "mongo-jobs"]
        jobs_url = platform.mongo_urls["jobs"]
        assert jobs_url != platform.mongo_url == platform.mongo_urls["runtime"] == platform.mongo_urls["auth"]
        _insert_job(jobs_url, "on-its-own-server")
        # A killed server is started again by the restart loop, on its port, with its data.
        jobs_server = platform.servers[1]
        jobs_server.proc.send_signal(signal.SIGKILL)
        jobs_server.proc.wait()
        said = platform.supervise()
        assert said == [f"the mongo-jobs server exited with -9; restarting it on port {jobs_server.port}"]
        _wait(jobs_server, *reopened.servers)
        assert _job_names(jobs_url) == ["on-its-own-server"]
        # The older data dir keeps its one server, and finds its data there.
        assert [s.name for s in reopened.servers] == ["mongo"]
        assert reopened.mongo_note is not None and "one MongoDB-wire server" in reopened.mongo_note
        assert set(reopened.mongo_urls.values()) == {reopened.mongo_url}
        assert _job_names(reopened.mongo_urls["jobs"]) == ["before-the-split"]
        assert json.loads((older / LAYOUT_FILE).read_text()) == {"own_server": []}
        # Every server is named in the lock, so the next owner after an unclean stop stops each of them.
        assert lock.acquire(platform.url) is None
        pids = platform.pids()
        assert {"mongo-server", "mongo-jobs-server"} <= set(pids)
        lock.record(pids)
        assert lock._file is not None
        lock._file.close()  # dies without releasing: the record stays behind
        lock._file = None
        successor = DataDirLock(data)
        takeover = successor.acquire(platform.url)
        successor.release()
        assert takeover is not None
        assert sorted(takeover.stopped) == [
            f"mongo-jobs-server (pid {pids['mongo-jobs-server']})",
            f"mongo-server (pid {pids['mongo-server']})",
        ]
        # Killed by the takeover (a process in the middle of an fsync may take a moment to go).
        assert [s.proc.wait(60) for s in platform.servers] == [-signal.SIGKILL, -signal.SIGKILL]
    finally:
        single.stop()
        platform.stop()
        if reopened is not None:
            reopened.stop()
