"""Tasks as local processes: real bash processes in temporary working directories."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pai_runtime import local_process as lp
from pai_runtime import supervisor
from pai_runtime.backend import TaskExit
from pai_runtime.local_process import PASSTHROUGH


def _env(workdir: Path, **extra: str) -> dict[str, str]:
    return lp.task_env(dict(os.environ), extra, workdir)


async def _launch(workdir: Path, commands: str, **extra: str) -> int:
    lp.prepare(workdir, commands)
    return await lp.start(workdir, _env(workdir, **extra))


async def _run(workdir: Path, commands: str) -> TaskExit:
    pid = await _launch(workdir, commands)
    return await asyncio.wait_for(lp.wait(pid, workdir), 10)


async def _file(path: Path, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text().strip():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never appeared")
        await asyncio.sleep(0.02)
    return path.read_text().strip()


def _dead(pid: int) -> bool:
    """Gone, or a zombie waiting for whoever adopted it to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before or while being read
        return True


# ---- exit codes ----------------------------------------------------------------------------------------


async def test_success_is_recorded_and_returned(tmp_path: Path) -> None:
    result = await _run(tmp_path, "echo out; echo err >&2")
    assert result == TaskExit(0, None)
    assert (tmp_path / "exit_code").read_text().strip() == "0"
    assert (tmp_path / "stdout.log").read_text() == "out\n"
    assert (tmp_path / "stderr.log").read_text() == "err\n"
    assert sorted((tmp_path / "all.log").read_text().split()) == ["err", "out"]
    assert not (tmp_path / "exit_code.tmp").exists()


async def test_the_user_commands_exit_code_is_recorded_and_returned(tmp_path: Path) -> None:
    pid = await _launch(tmp_path, "echo before\nexit 3\necho never")
    assert (tmp_path / "pid").read_text() == str(pid)
    server = lp.ForkServer.running()
    assert server is not None and pid in server.statuses  # forked by it: its exit comes from it
    assert await asyncio.wait_for(lp.wait(pid, tmp_path), 10) == TaskExit(3, None)
    assert pid not in server.statuses
    assert (tmp_path / "exit_code").read_text().strip() == "3"
    assert lp.read_exit(tmp_path) == TaskExit(3, None)
    assert (tmp_path / "stdout.log").read_text() == "before\n"


async def test_a_command_killed_by_sigkill_is_137_with_signal_9(tmp_path: Path) -> None:
    result = await _run(tmp_path, "kill -KILL $$\necho never")
    assert result == TaskExit(137, 9)
    assert (tmp_path / "exit_code").read_text().strip() == "137"
    assert (tmp_path / "stdout.log").read_text() == ""


async def test_a_command_killed_by_sigterm_is_143_with_signal_15(tmp_path: Path) -> None:
    assert await _run(tmp_path, "kill -TERM $$") == TaskExit(143, 15)


async def test_the_task_runs_in_its_own_directory_with_its_own_home(tmp_path: Path) -> None:
    await _run(tmp_path, 'pwd > where.txt; echo "$HOME|$TMPDIR" > home.txt; test -d "$TMPDIR"')
    assert (tmp_path / "where.txt").read_text().strip() == str(tmp_path)
    assert (tmp_path / "home.txt").read_text().strip() == f"{tmp_path}|{tmp_path / 'tmp'}"
    assert lp.read_exit(tmp_path) == TaskExit(0, None)


# ---- environment ---------------------------------------------------------------------------------------


def test_task_env_passes_only_the_safe_variables(tmp_path: Path) -> None:
    base = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "TERM": "xterm",
        "PAI_ADMIN_PASSWORD": "s3cret",
        "PAI_MONGO_URL": "mongodb://root:pw@db",
        "AWS_SECRET_ACCESS_KEY": "k",
        "HOME": "/root",
        "LD_PRELOAD": "/tmp/evil.so",
    }
    env = lp.task_env(base, {"PAI_JOB_NAME": "alice~job", "PAI_TASK_INDEX": "0"}, tmp_path)
    assert env == {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "TERM": "xterm",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path / "tmp"),
        "PAI_JOB_NAME": "alice~job",
        "PAI_TASK_INDEX": "0",
    }


@given(
    st.dictionaries(
        st.sampled_from([*PASSTHROUGH, "SECRET", "PAI_ADMIN_PASSWORD", "HOME", "USER"]), st.text()
    ),
    st.dictionaries(st.from_regex(r"PAI_[A-Z_]{1,8}", fullmatch=True), st.text()),
)
def test_task_env_is_passthrough_plus_extras(base: dict[str, str], extra: dict[str, str]) -> None:
    workdir = Path("/work/task")
    env = lp.task_env(base, extra, workdir)
    assert set(env) == {k for k in base if k in PASSTHROUGH} | {"HOME", "TMPDIR"} | set(extra)
    for k, v in extra.items():
        assert env[k] == v
    for k in PASSTHROUGH:
        if k in base and k not in extra:
            assert env[k] == base[k]


async def test_an_agent_secret_does_not_reach_the_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAI_ADMIN_PASSWORD", "s3cret")
    lp.prepare(tmp_path, "env > env.txt")
    pid = await lp.start(tmp_path, lp.task_env(dict(os.environ), {"PAI_JOB_NAME": "alice~job"}, tmp_path))
    assert (await asyncio.wait_for(lp.wait(pid, tmp_path), 10)).exit_code == 0
    seen = (tmp_path / "env.txt").read_text()
    assert "PAI_JOB_NAME=alice~job" in seen
    assert "s3cret" not in seen and "PAI_ADMIN_PASSWORD" not in seen


# ---- stop ----------------------------------------------------------------------------------------------


async def test_stop_terminates_the_whole_process_group(tmp_path: Path) -> None:
    # A grandchild that notes the SIGTERM it gets before leaving; it tells its pid once its trap is set.
    commands = (
        'bash -c \'trap "echo term > got_term; exit 0" TERM; echo $$ > child.pid; '
        "while :; do sleep 0.05; done' &\n"
        "sleep 30 &\n"
        "echo $! > sleep.pid\n"
        "wait\n"
    )
    pid = await _launch(tmp_path, commands)
    child = int(await _file(tmp_path / "child.pid"))
    sleeper = int(await _file(tmp_path / "sleep.pid"))
    assert not _dead(child) and not _dead(sleeper)

    await asyncio.wait_for(lp.stop(pid, grace_s=3.0), 10)
    assert await _file(tmp_path / "got_term") == "term"
    assert _dead(child) and _dead(sleeper)
    # The user's shell died of the signal; the supervisor outlived it and recorded exactly that.
    assert await asyncio.wait_for(lp.wait(pid, tmp_path), 10) == TaskExit(143, 15)
    assert (tmp_path / "exit_code").read_text().strip() == "143"


async def test_stop_kills_what_traps_sigterm_after_the_grace_period(tmp_path: Path) -> None:
    commands = "trap '' TERM\nsleep 30 &\necho $! > sleep.pid\nwait\n"
    pid = await _launch(tmp_path, commands)
    sleeper = int(await _file(tmp_path / "sleep.pid"))

    t0 = time.monotonic()
    await asyncio.wait_for(lp.stop(pid, grace_s=0.5), 10)
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.5, "SIGKILL must wait for the grace period"
    assert elapsed < 5
    for _ in range(100):
        if _dead(sleeper):
            break
        await asyncio.sleep(0.02)
    assert _dead(sleeper)
    # Nothing was left to record the end: the whole group, supervisor included, died of SIGKILL.
    assert await asyncio.wait_for(lp.wait(pid, tmp_path), 10) == TaskExit(137, 9)


async def test_stop_of_a_task_that_is_gone_is_harmless(tmp_path: Path) -> None:
    pid = await _launch(tmp_path, "exit 0")
    assert await asyncio.wait_for(lp.wait(pid, tmp_path), 10) == TaskExit(0, None)
    await asyncio.wait_for(lp.stop(pid, grace_s=5.0), 2)  # returns at once: nothing left to wait for


# ---- adopted tasks -------------------------------------------------------------------------------------


def _orphan(workdir: Path) -> subprocess.Popen[bytes]:
    """A supervisor started as an agent starts one, but not named by it (the agent died in between)."""
    return subprocess.Popen(
        lp.command(workdir),
        cwd=workdir,
        env=_env(workdir),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _adopt(workdir: Path, commands: str) -> subprocess.Popen[bytes]:
    """Start the supervisor the way an earlier agent would have: not a child that ``wait`` knows."""
    lp.prepare(workdir, commands)
    proc = _orphan(workdir)
    lp.claim(workdir, proc.pid)
    assert proc.pid not in lp._children
    return proc


async def test_an_adopted_task_is_waited_for_through_its_exit_code_file(tmp_path: Path) -> None:
    proc = _adopt(tmp_path, "sleep 0.3\nexit 4")
    try:
        result = await asyncio.wait_for(lp.wait(proc.pid, tmp_path, poll_s=0.02), 10)
        assert result == TaskExit(4, None)
        assert (tmp_path / "exit_code").read_text().strip() == "4"
    finally:
        proc.wait(5)


async def test_an_adopted_task_killed_by_a_signal_reports_it(tmp_path: Path) -> None:
    proc = _adopt(tmp_path, "kill -SEGV $$")
    try:
        assert await asyncio.wait_for(lp.wait(proc.pid, tmp_path, poll_s=0.02), 10) == TaskExit(139, 11)
    finally:
        proc.wait(5)


async def test_an_attempt_started_twice_across_an_agent_crash_runs_once(tmp_path: Path) -> None:
    """The agent died after starting a supervisor and before naming it; the redelivered launch starts and
    names another. The unnamed one leaves without running anything: the task's marker is written once."""
    marker = tmp_path / "ran"
    lp.prepare(tmp_path, f"echo once >> {marker}")
    first = _orphan(tmp_path)
    second = await lp.start(tmp_path, _env(tmp_path))
    assert await asyncio.wait_for(lp.wait(second, tmp_path), 10) == TaskExit(0, None)
    assert first.wait(10) == supervisor.UNCLAIMED_EXIT
    assert marker.read_text() == "once\n"
    assert (tmp_path / "pid").read_text() == str(second)


def test_a_supervisor_runs_only_once_named(tmp_path: Path) -> None:
    workdir = str(tmp_path)
    assert not supervisor.wait_for_claim(workdir, wait_s=0.05)  # nobody named it: it leaves
    lp.claim(tmp_path, os.getpid() + 1)
    assert not supervisor.wait_for_claim(workdir, wait_s=5)  # another one is the task's
    lp.claim(tmp_path, os.getpid())
    assert supervisor.wait_for_claim(workdir, wait_s=5)
    assert not (tmp_path / "pid.tmp").exists()


def _gone_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait(5)  # reaped: the pid is gone
    return proc.pid


async def test_an_adopted_task_gone_without_a_record_counts_as_killed(tmp_path: Path) -> None:
    pid = _gone_pid()
    assert not lp.alive(pid)
    result = await asyncio.wait_for(lp.wait(pid, tmp_path, poll_s=0.02), 5)
    assert result == TaskExit(137, signal.SIGKILL)


def test_read_exit_ignores_missing_or_partial_files(tmp_path: Path) -> None:
    assert lp.read_exit(tmp_path) is None
    (tmp_path / "exit_code").write_text("")
    assert lp.read_exit(tmp_path) is None
    (tmp_path / "exit_code").write_text("garbage\n")
    assert lp.read_exit(tmp_path) is None
    (tmp_path / "exit_code").write_text("1\n")
    assert lp.read_exit(tmp_path) == TaskExit(1, None)
    (tmp_path / "exit_code").write_text("130\n")
    assert lp.read_exit(tmp_path) == TaskExit(130, 2)


# ---- tail ----------------------------------------------------------------------------------------------


def test_tail_reads_the_last_bytes_and_reports_truncation(tmp_path: Path) -> None:
    log = tmp_path / "stdout.log"
    data = b"".join(f"line {i:04d}\n".encode() for i in range(1000))  # 10,000 bytes
    log.write_bytes(data)
    assert lp.tail(log, 100) == (data[-100:].decode(), len(data), True)
    assert lp.tail(log, len(data)) == (data.decode(), len(data), False)
    assert lp.tail(log, len(data) + 1) == (data.decode(), len(data), False)
    assert lp.tail(log, len(data) - 1) == (data[1:].decode(), len(data), True)


def test_tail_of_a_missing_or_empty_file(tmp_path: Path) -> None:
    assert lp.tail(tmp_path / "nope.log", 100) == ("", 0, False)
    (tmp_path / "empty.log").write_bytes(b"")
    assert lp.tail(tmp_path / "empty.log", 100) == ("", 0, False)


def test_tail_cutting_a_multibyte_character_does_not_fail(tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    log.write_bytes("é".encode() * 10)  # 20 bytes, 2 per character
    text, size, truncated = lp.tail(log, 5)  # starts in the middle of a character
    assert (size, truncated) == (20, True)
    assert text == "\ufffd" + "é" * 2


@given(st.binary(max_size=300), st.integers(1, 400))
def test_tail_is_the_suffix(tmp_path_factory: pytest.TempPathFactory, data: bytes, n: int) -> None:
    log = tmp_path_factory.mktemp("tail") / "log"
    log.write_bytes(data)
    text, size, truncated = lp.tail(log, n)
    assert size == len(data)
    assert truncated == (len(data) > n)
    assert text == data[-n:].decode("utf-8", errors="replace")


def test_gpu_share_limits_become_cuda_mps_variables() -> None:
    from pai_runtime.shell import gpu_share_env

    assert gpu_share_env([3], 0, 0) == {}
    assert gpu_share_env([], 500, 0) == {}
    env = gpu_share_env([3], 250, 4096)
    assert env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "25"
    assert env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=4096M"
    assert env["PAI_GPU_SHARE_MILLI"] == "250" and env["PAI_GPU_SHARE_MEMORY_MB"] == "4096"
    assert gpu_share_env([0], 5, 0)["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "1"


# ---- the fork server -----------------------------------------------------------------------------------


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


async def test_a_supervisor_is_forked_by_the_fork_server_not_a_new_interpreter(tmp_path: Path) -> None:
    pid = await _launch(tmp_path, "sleep 0.3\nexit 6")
    server = lp.ForkServer.running()
    assert server is not None and server.alive
    assert _parent(pid) == server.proc.pid
    assert b"fork_server.py" in Path(f"/proc/{pid}/cmdline").read_bytes()  # no interpreter of its own
    assert os.getpgid(pid) == pid and os.getsid(pid) == pid  # a session and group of its own, as before
    assert await asyncio.wait_for(lp.wait(pid, tmp_path), 10) == TaskExit(6, None)


@pytest.mark.parametrize("how", ["killed", "agent gone"])
async def test_tasks_outlive_their_fork_server_and_their_exits_are_read(tmp_path: Path, how: str) -> None:
    """The fork server dies (killed), or leaves at the end of its input (its agent was killed or stopped):
    the supervisors it forked run on, and their exits are read from their exit files."""
    first = tmp_path / "first"
    first.mkdir()
    marker = first / "go"
    pid = await _launch(first, f"while [ ! -e {marker} ]; do sleep 0.02; done\nexit 7")
    server = lp.ForkServer.running()
    assert server is not None
    if how == "killed":
        server.proc.kill()
    else:
        await lp.ForkServer.close()
    await asyncio.wait_for(server.proc.wait(), 10)
    assert not _dead(pid)  # the task runs on
    marker.touch()
    assert await asyncio.wait_for(lp.wait(pid, first, poll_s=0.02), 10) == TaskExit(7, None)
    second = tmp_path / "second"
    second.mkdir()
    assert await _run(second, "exit 3") == TaskExit(3, None)  # a new server forks the next one
    again = lp.ForkServer.running()
    assert again is not None and again is not server and again.alive
