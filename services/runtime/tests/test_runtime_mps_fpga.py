"""GPU shares held by CUDA MPS and FPGAs passed to tasks (issue 18, part 5, the runtime's side).

MPS: whether a node can (and why not) from what it has; the daemon's and a client's environment; the
daemon manager's command lines (a probe, ``-d``, ``quit`` on the standard input), run against a stand-in
``nvidia-cuda-mps-control`` that records how it was called, since this machine has no GPU; its refusals (a
daemon that does not start leaves the share unenforced, and says why). Where NVML and the real control
program exist, ``test_mps_where_this_machine_has_it`` starts and stops a real daemon instead.

FPGAs: inventory entries with device files and a device plugin resource, refused when malformed; the
environment and ``--device`` options of a task; the pod's extended resources, checked against the API
schema; an FPGA without a resource refused on Kubernetes. The agent itself is driven in
``test_runtime_agent.py``-style at the end: a share task on a simulated node says its share is not
enforced, an FPGA task gets its devices, one that names an FPGA the node lacks fails with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest

from pai_common.bus import Bus
from pai_common.contract.commands import LaunchTask
from pai_common.contract.events import NodeRegistered, TaskExited, TaskRunning
from pai_common.contract.types import GpuInfo
from pai_common.embedded import ServerProcess
from pai_common.errors import InvalidParametersError
from pai_common.testing import EventRecorder
from pai_runtime import containers, devices, mps
from pai_runtime.backend import SETUP_FAILED_EXIT, SetupError, TaskFiles
from pai_runtime.kubernetes import schema as k8s_schema
from pai_runtime.kubernetes.backend import fpga_resources
from pai_runtime.kubernetes.manifest import PodOptions, pod_manifest
from pai_runtime.settings import RuntimeSettings
from pai_runtime.shell import Agent, fpga_env

GPU = GpuInfo(index=1, model="A100", memory_mb=40960, uuid="GPU-aaaa-1111")


# ---- MPS: support, environments --------------------------------------------------------------------


def test_mps_support_says_why_not() -> None:
    found = {mps.CONTROL: "/usr/bin/nvidia-cuda-mps-control"}
    assert mps.support("nvml", "local", found.get).mps
    for source in ("simulated", "declared"):
        no = mps.support(source, "local", found.get)
        assert not no.mps and f"no GPU seen by NVML ({source} GPUs)" in no.reason
    missing = mps.support("nvml", "local", {}.get)
    assert not missing.mps and "nvidia-cuda-mps-control is not installed" in missing.reason
    pods = mps.support("nvml", "kubernetes", found.get)
    assert not pods.mps and "device plugin" in pods.reason


def test_the_daemon_sees_one_gpu_and_its_clients_get_their_limits(tmp_path: Path) -> None:
    assert mps.daemon_env(tmp_path, GPU) == {
        "CUDA_VISIBLE_DEVICES": "GPU-aaaa-1111",
        "CUDA_MPS_PIPE_DIRECTORY": f"{tmp_path}/gpu1/pipe",
        "CUDA_MPS_LOG_DIRECTORY": f"{tmp_path}/gpu1/log",
    }
    assert mps.start_command() == ["nvidia-cuda-mps-control", "-d"]
    assert mps.client_env(tmp_path, GPU, 250, 8192) == {
        "CUDA_MPS_PIPE_DIRECTORY": f"{tmp_path}/gpu1/pipe",
        "CUDA_MPS_LOG_DIRECTORY": f"{tmp_path}/gpu1/log",
        "CUDA_VISIBLE_DEVICES": "0",
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "25",
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=8192M",
    }
    assert mps.client_env(tmp_path, GPU, 5, 0)["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "1"
    assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE" not in mps.client_env(tmp_path, GPU, 0, 512)


# ---- MPS: the daemon manager against a stand-in control program ------------------------------------


def stand_in(tmp_path: Path, start_code: int = 0) -> tuple[Path, Path]:
    """An executable in the place of nvidia-cuda-mps-control that appends each call (argv, the MPS
    variables, its standard input) to a file: a daemon "runs" once `-d` succeeded, until `quit`."""
    calls = tmp_path / "calls.jsonl"
    program = tmp_path / "nvidia-cuda-mps-control"
    program.write_text(
        f"""#!{shutil.which("python3") or "/usr/bin/python3"}
import json, os, sys
from pathlib import Path
stdin = "" if "-d" in sys.argv else sys.stdin.read()
env = {{k: v for k, v in os.environ.items() if k.startswith("CUDA_")}}
with open({str(calls)!r}, "a") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "env": env, "stdin": stdin}}) + "\\n")
alive = Path(env["CUDA_MPS_PIPE_DIRECTORY"]) / "alive"
if "-d" in sys.argv:
    if {start_code}:
        print("An instance of this daemon is already running"); sys.exit({start_code})
    alive.write_text("1"); sys.exit(0)
if stdin.startswith("quit"):
    alive.unlink(missing_ok=True); sys.exit(0)
sys.exit(0 if alive.exists() else 1)
"""
    )
    program.chmod(program.stat().st_mode | stat.S_IEXEC)
    return program, calls


def recorded(calls: Path) -> list[tuple[list[str], str]]:
    if not calls.exists():
        return []
    return [(c["argv"], c["stdin"]) for c in map(json.loads, calls.read_text().splitlines())]


async def test_one_daemon_per_shared_gpu_started_first_and_quit_last(tmp_path: Path) -> None:
    program, calls = stand_in(tmp_path)
    daemons = mps.MpsDaemons(
        tmp_path / "mps", mps.support("nvml", "local", {mps.CONTROL: "x"}.get), str(program)
    )
    env, status = await daemons.acquire(GPU, "run-a", 250, 8192)
    assert status.enforced and "25% of its threads, 8192 MB of pinned memory" in status.note
    assert env["CUDA_MPS_PIPE_DIRECTORY"] == str(tmp_path / "mps" / "gpu1" / "pipe")
    assert recorded(calls) == [([], mps.PROBE), (["-d"], "")]  # probed (none ran), then started
    first = json.loads(calls.read_text().splitlines()[1])["env"]
    assert first["CUDA_VISIBLE_DEVICES"] == "GPU-aaaa-1111"

    _, second = await daemons.acquire(GPU, "run-b", 500, 0)
    assert second.enforced and len(recorded(calls)) == 2  # the daemon runs: nothing started again
    await daemons.release(GPU, "run-a")
    await daemons.release(GPU, "run-a")  # twice: changes nothing
    assert len(recorded(calls)) == 2
    await daemons.release(GPU, "run-b")
    assert recorded(calls)[-1] == ([], mps.QUIT)

    # An earlier agent's daemon that still answers is used, not started twice.
    await mps.run([str(program), "-d"], mps.daemon_env(tmp_path / "mps", GPU))
    before = len(recorded(calls))
    fresh = mps.MpsDaemons(tmp_path / "mps", daemons.sharing, str(program))
    await fresh.acquire(GPU, "run-c", 100, 0)
    assert recorded(calls)[before:] == [([], mps.PROBE)]
    await fresh.adopt(GPU, "run-d")  # a task that outlived a restart keeps it in use
    await fresh.release(GPU, "run-c")
    assert len(recorded(calls)) == before + 1
    await fresh.release(GPU, "run-d")
    assert recorded(calls)[before + 1 :] == [([], mps.QUIT)]


async def test_a_daemon_that_does_not_start_leaves_the_share_unenforced_and_says_why(tmp_path: Path) -> None:
    program, _ = stand_in(tmp_path, start_code=1)
    daemons = mps.MpsDaemons(
        tmp_path / "mps", mps.support("nvml", "local", {mps.CONTROL: "x"}.get), str(program)
    )
    env, status = await daemons.acquire(GPU, "run-a", 250, 0)
    assert env == {} and not status.enforced
    assert "MPS control daemon of GPU 1 did not start (1)" in status.note and "already running" in status.note
    assert daemons.users == {}
    off = mps.MpsDaemons(tmp_path / "off", mps.support("simulated", "local"), str(program))
    env, status = await off.acquire(GPU, "run-b", 250, 0)
    assert env == {} and not status.enforced and "no GPU seen by NVML" in status.note


async def test_mps_where_this_machine_has_it(tmp_path: Path) -> None:
    """The real control program on a GPU machine; elsewhere, the refusal it must give."""
    inventory = devices.detect("here", simulated_count=0)
    sharing = mps.support(inventory.source, "local")
    if not sharing.mps:
        assert not inventory.gpus or shutil.which(mps.CONTROL) is None
        assert "not enforced" in sharing.reason
        return
    daemons = mps.MpsDaemons(tmp_path, sharing)
    _, status = await daemons.acquire(inventory.gpus[0], "gpu-check", 500, 1024)
    assert status.enforced, status.note
    assert (await mps.run([mps.CONTROL], mps.daemon_env(tmp_path, inventory.gpus[0]), mps.PROBE)).code == 0
    await daemons.release(inventory.gpus[0], "gpu-check")
    assert (await mps.run([mps.CONTROL], mps.daemon_env(tmp_path, inventory.gpus[0]), mps.PROBE)).code != 0


# ---- FPGAs -----------------------------------------------------------------------------------------


FPGAS = {
    "fpgas": [
        {"model": "U250", "id": "0000:3b:00.1", "paths": ["/dev/xclmgmt256", "/dev/dri/renderD128"],
         "resource": "xilinx.com/fpga-xilinx_u250"},
        {"model": "U250", "id": "0000:af:00.1", "paths": ["/dev/dri/renderD129"],
         "resource": "xilinx.com/fpga-xilinx_u250"},
        {"model": "Arria10", "id": "0000:d8:00.0"},
    ]
}  # fmt: skip


def test_fpga_inventory_entries_carry_device_files_and_a_resource() -> None:
    inv = devices.parse_inventory("n", FPGAS)
    assert [(f.index, f.paths, f.resource) for f in inv.fpgas] == [
        (0, ["/dev/xclmgmt256", "/dev/dri/renderD128"], "xilinx.com/fpga-xilinx_u250"),
        (1, ["/dev/dri/renderD129"], "xilinx.com/fpga-xilinx_u250"),
        (2, [], None),
    ]
    assert fpga_env(inv.fpgas[:2]) == {
        "PAI_FPGA_DEVICES": "0,1",
        "PAI_FPGA_IDS": "0000:3b:00.1,0000:af:00.1",
        "PAI_FPGA_MODELS": "U250,U250",
        "PAI_FPGA_DEVICE_PATHS": "/dev/xclmgmt256,/dev/dri/renderD128,/dev/dri/renderD129",
    }
    assert fpga_env([]) == {}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"paths": "/dev/x"}, r"fpgas\[0\].paths must be a list of /dev/"),
        ({"paths": ["/etc/passwd"]}, r"fpgas\[0\].paths must be a list of /dev/"),
        ({"resource": "no-domain"}, r"fpgas\[0\].resource must be a Kubernetes extended resource"),
        ({"resource": "Bad/Name"}, r"fpgas\[0\].resource must be"),
    ],
)
def test_malformed_fpga_entries_are_refused(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidParametersError, match=message):
        devices.parse_inventory("n", {"fpgas": [entry]})


def test_an_fpga_task_in_its_image_gets_the_device_files(tmp_path: Path) -> None:
    argv = containers.run_command(
        "docker", "img", "n", tmp_path, tmp_path / "e", "u.sh", [], 0, 0, 0,
        devices=["/dev/xclmgmt256", "/dev/dri/renderD128"], ipc_host=True,
    )  # fmt: skip
    joined = " ".join(argv)
    assert "--device /dev/xclmgmt256 --device /dev/dri/renderD128" in joined and "--ipc host" in joined
    assert "--gpus" not in joined


def _cmd(**kw: Any) -> LaunchTask:
    base: dict[str, Any] = {
        "job_key": "alice~fpga", "attempt_id": 0, "task_role": "w", "index": 0, "node": "node-a",
        "gpus": [], "entrypoint": "run",
    }  # fmt: skip
    return LaunchTask(**{**base, **kw})


def test_a_pod_asks_the_device_plugin_for_its_fpgas() -> None:
    inv = devices.parse_inventory("n", FPGAS)
    counts = fpga_resources(TaskFiles("run", fpgas=inv.fpgas[:2]))
    assert counts == {"xilinx.com/fpga-xilinx_u250": 2}
    pod = pod_manifest(_cmd(fpgas=[0, 1], cpu=2), {}, PodOptions(namespace="pai"), None, counts)
    k8s_schema.validate(pod)
    resources = pod["spec"]["containers"][0]["resources"]
    assert resources["limits"] == resources["requests"] == {"cpu": "2", "xilinx.com/fpga-xilinx_u250": "2"}
    with pytest.raises(SetupError, match=r"FPGA 2 \(Arria10\) has no device plugin resource") as refused:
        fpga_resources(TaskFiles("run", fpgas=inv.fpgas))
    assert refused.value.code == SETUP_FAILED_EXIT


# ---- the agent ---------------------------------------------------------------------------------------


async def test_the_agent_passes_fpgas_and_says_when_a_share_is_not_enforced(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(json.dumps({"gpus": [{"model": "A100"}, {"model": "A100"}], **FPGAS}))
    settings = RuntimeSettings(
        nats_url=fresh_nats.url, mongo_url=mongo_server.url, data_dir=tmp_path,
        node_name=f"node-{uuid.uuid4().hex[:6]}", inventory_file=inventory, nak_base_delay_s=0.05,
    )  # fmt: skip
    agent = Agent(settings)
    agent.app.name = f"rt{uuid.uuid4().hex[:8]}"
    events = EventRecorder(fresh_bus)
    await events.start()
    await agent.app.start()
    try:
        registered = await events.wait_until(lambda e: isinstance(e, NodeRegistered) and e.node == agent.node)
        assert not registered.gpu_sharing.mps and "declared GPUs" in registered.gpu_sharing.reason
        assert [f.resource for f in registered.fpgas] == ["xilinx.com/fpga-xilinx_u250"] * 2 + [None]

        node = agent.node
        show = 'echo "$PAI_FPGA_DEVICES|$PAI_FPGA_DEVICE_PATHS|$CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"'
        fpga = _cmd(fpgas=[1], entrypoint=show).model_copy(update={"node": node, "job_key": "alice~f1"})
        share = _cmd(entrypoint=show).model_copy(
            update={"node": node, "job_key": "alice~s1", "gpus": [1], "gpu_milli": 300, "gpu_memory_mb": 4096}
        )
        lacking = _cmd(fpgas=[7], entrypoint=show).model_copy(update={"node": node, "job_key": "alice~f7"})
        for cmd in (fpga, share, lacking):
            await fresh_bus.send_command(cmd, node)
        ended = {}
        for key in ("alice~f1", "alice~s1", "alice~f7"):
            ended[key] = await events.wait_until(
                lambda e, key=key: isinstance(e, TaskExited) and e.job_key == key
            )
        assert ended["alice~f1"].exit_code == 0 and "1|/dev/dri/renderD129|" in ended["alice~f1"].log_tail
        assert ended["alice~f7"].exit_code == SETUP_FAILED_EXIT
        assert "FPGA(s) [7] are not in the inventory of node" in ended["alice~f7"].log_tail
        # The share runs with the scheduler's promise only, and says so.
        assert ended["alice~s1"].exit_code == 0 and "||30" in ended["alice~s1"].log_tail
        started = next(e for e in events.of(TaskRunning, "alice~s1"))
        assert started.gpu_share is not None and not started.gpu_share.enforced
        assert (started.gpu_share.milli, started.gpu_share.memory_mb) == (300, 4096)
        assert "not enforced" in started.gpu_share.note
        assert next(e for e in events.of(TaskRunning, "alice~f1")).gpu_share is None
    finally:
        await agent.app.stop()
    # No daemon was ever asked for on a node without NVML.
    assert not os.path.exists(tmp_path / "runtime" / agent.node / "mps")
