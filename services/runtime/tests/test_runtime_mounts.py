"""Storages for local tasks: the mount command lines of every type (as command lines: this machine has no
NFS or SMB server), the refusals that keep a task from running without its data, and real bind mounts of
a `local` storage in a private mount namespace per task, through the agent on real NATS and MongoDB-wire
servers."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from pai_common.bus import Bus
from pai_common.contract.commands import LaunchTask
from pai_common.contract.events import TaskExited
from pai_common.contract.types import StorageMount
from pai_common.embedded import ServerProcess
from pai_common.testing import EventRecorder
from pai_runtime import local_mounts
from pai_runtime.backend import STORAGE_MOUNT_EXIT, SetupError
from pai_runtime.containers import run_command
from pai_runtime.settings import RuntimeSettings
from pai_runtime.shell import Agent


def _m(kind: str, data: dict[str, str], **kw: Any) -> StorageMount:
    return StorageMount(name=f"s-{kind}", type=kind, mount_path=f"/mnt/s-{kind}", data=data, **kw)  # type: ignore[arg-type]


def test_mount_command_lines() -> None:
    nfs = _m("nfs", {"server": "10.0.0.5", "path": "/export"}, read_only=True, mount_options=["nfsvers=4.1"])
    assert local_mounts.mount_argv(nfs, {}, "n") == (
        ["mount", "-t", "nfs", "-o", "ro,nfsvers=4.1", "10.0.0.5:/export", "/mnt/s-nfs"],
        None,
    )
    user_nfs = _m("nfs", {"server": "h", "path": "/e/"}, sub_path="ann")
    assert local_mounts.mount_argv(user_nfs, {}, "n")[0][-2:] == ["h:/e/ann", "/mnt/s-nfs"]
    smb = _m("samba", {"address": "//srv/share", "username": "u"})
    argv, secret = local_mounts.mount_argv(smb, {"password": "pw"}, "n")
    assert argv == [
        "mount",
        "-t",
        "cifs",
        "-o",
        "credentials={secrets}/s-samba",
        "//srv/share",
        "/mnt/s-samba",
    ]
    assert secret == "username=u\npassword=pw\n"  # in a file, never on the command line
    guest = _m("samba", {"address": "//srv/pub"})
    assert local_mounts.mount_argv(guest, {}, "n") == (
        ["mount", "-t", "cifs", "-o", "guest", "//srv/pub", "/mnt/s-samba"],
        None,
    )
    af = _m("azureFile", {"accountName": "acct", "shareName": "s1"})
    argv, secret = local_mounts.mount_argv(af, {"accountKey": "K=="}, "n")
    assert argv[5] == "//acct.file.core.windows.net/s1" and "vers=3.0" in argv[4] and "K==" not in argv[4]
    assert secret == "username=acct\npassword=K==\n"
    ab = _m("azureBlob", {"accountName": "acct", "containerName": "c1"}, read_only=True)
    argv, config = local_mounts.mount_argv(ab, {"sasToken": "sv=x"}, "n")
    assert argv == [
        "blobfuse2",
        "mount",
        "/mnt/s-azureBlob",
        "--config-file={secrets}/s-azureBlob",
        "--read-only",
    ]
    assert config is not None and "container: c1" in config and "sas: sv=x" in config
    local = _m("local", {"path": "/srv/d"})
    assert local_mounts.mount_argv(local, {}, "n") == (["mount", "--bind", "/srv/d", "/mnt/s-local"], None)
    with pytest.raises(SetupError, match="only be mounted by the Kubernetes backend") as refused:
        local_mounts.mount_argv(_m("pvc", {"claimName": "c"}), {}, "n")
    assert refused.value.code == STORAGE_MOUNT_EXIT


def test_what_a_node_cannot_mount_is_refused_before_the_task_starts(tmp_path: Path) -> None:
    missing = _m("local", {"path": str(tmp_path / "absent")})
    with pytest.raises(SetupError, match="is not a folder on n1"):
        local_mounts.plan([missing], {}, "n1", None)
    if local_mounts.private_namespaces() is None:
        for kind, helper in (("nfs", "mount.nfs"), ("samba", "mount.cifs"), ("azureBlob", "blobfuse2")):
            if helper in os.environ.get("PAI_TEST_HAVE_HELPERS", "") or os.path.exists(f"/sbin/{helper}"):
                continue
            data = {"nfs": {"server": "h", "path": "/p"}, "samba": {"address": "//h/s"}}.get(
                kind, {"accountName": "acct", "containerName": "c1"}
            )
            with pytest.raises(SetupError, match=f"{helper} is not installed on n1"):
                local_mounts.plan([_m(kind, data)], {}, "n1", None)
    # In the job's image (Docker/Podman) a local storage is a -v; anything else is refused.
    folder = tmp_path / "d"
    folder.mkdir()
    plan = local_mounts.plan([_m("local", {"path": str(folder)}, read_only=True)], {}, "n1", "docker")
    assert plan.volumes == [f"{folder}:/mnt/s-local:ro"] and not plan.needs_namespace
    argv = run_command("docker", "img", "t", tmp_path, tmp_path / "env", "u.sh", [], 0, 0, 0, plan.volumes)
    assert argv[argv.index(f"{folder}:/mnt/s-local:ro") - 1] == "-v"
    with pytest.raises(SetupError, match="gets local storages only"):
        local_mounts.plan([_m("nfs", {"server": "h", "path": "/p"})], {}, "n1", "docker")


def _host_mounts() -> str:
    return Path("/proc/self/mountinfo").read_text()


async def test_a_local_storage_is_mounted_for_the_task_only(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    """Where the agent can give tasks a private mount namespace (root here), a task writes into the host
    folder through its mount path, a read-only storage refuses writes, and the host's mount table never
    shows either mount. Elsewhere the task ends with STORAGE_MOUNT_EXIT and says why."""
    events = EventRecorder(fresh_bus)
    await events.start()
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "in.txt").write_text("from the host\n")
    target = f"/mnt/pai-test-{uuid.uuid4().hex[:8]}"
    node = f"node-{uuid.uuid4().hex[:6]}"
    agent = Agent(
        RuntimeSettings(
            nats_url=fresh_nats.url, mongo_url=mongo_server.url, data_dir=tmp_path / "data", node_name=node,
            force_simulated=True, nak_base_delay_s=0.05,
        )
    )  # fmt: skip
    agent.app.name = f"rt{uuid.uuid4().hex[:8]}"
    before = _host_mounts()
    rw = StorageMount(name="shared", type="local", mount_path=target, data={"path": str(folder)})
    ro = rw.model_copy(update={"read_only": True, "mount_path": target + "-ro"})
    script = (
        f"cat {target}/in.txt && echo written > {target}/out.txt && grep -c {target} /proc/self/mountinfo"
        f" && cat {target}-ro/in.txt && (echo x > {target}-ro/nope.txt) 2>&1; echo rc=$?"
    )
    await agent.app.start()
    try:
        await fresh_bus.send_command(
            LaunchTask(
                job_key="ann~store", attempt_id=0, task_role="w", index=0, node=node, gpus=[],
                entrypoint=script, mounts=[rw, ro],
            ),
            node,
        )  # fmt: skip
        exited: TaskExited = await events.wait_until(
            lambda e: isinstance(e, TaskExited) and e.job_key == "ann~store"
        )
        after = _host_mounts()
        if local_mounts.private_namespaces() is not None:
            assert exited.exit_code == STORAGE_MOUNT_EXIT, exited.log_tail
            assert "cannot give a task a private mount namespace" in exited.log_tail
            return
        assert exited.exit_code == 0, exited.log_tail
        assert (folder / "out.txt").read_text() == "written\n"
        assert "from the host" in exited.log_tail
        assert "Read-only file system" in exited.log_tail and "rc=1" in exited.log_tail
        assert not (folder / "nope.txt").exists()
        assert f"storage shared mounted at {target} (read-write)" in exited.log_tail
        # The task saw its mounts; the host never did.
        assert target not in before and target not in after
        assert not (Path(target) / "in.txt").exists()
    finally:
        await agent.app.stop()
        for path in (target, target + "-ro"):
            if os.path.isdir(path) and not os.listdir(path):
                os.rmdir(path)
