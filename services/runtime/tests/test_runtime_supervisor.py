"""The task supervisor with real processes: phases, exact exits, time limits, log rotation, limits."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from pai_runtime import local_process as lp
from pai_runtime.backend import TaskExit
from pai_runtime.local_process import Limits
from pai_runtime.supervisor import RotatingLog


async def _run(workdir: Path, commands: str, pre: str = "", post: str = "", **limits: object) -> TaskExit:
    lp.prepare(workdir, commands, pre, post, Limits(**limits))  # type: ignore[arg-type]
    pid = await lp.start(workdir, lp.task_env(dict(os.environ), {}, workdir))
    return await asyncio.wait_for(lp.wait(pid, workdir), 20)


async def test_an_exit_of_137_is_not_mistaken_for_a_signal(tmp_path: Path) -> None:
    assert await _run(tmp_path, "exit 137") == TaskExit(137, None)
    assert (tmp_path / "exit_code").read_text().strip() == "137"


async def test_each_signal_is_reported_with_its_number(tmp_path: Path) -> None:
    for sig, name in ((2, "INT"), (6, "ABRT"), (11, "SEGV"), (15, "TERM")):
        workdir = tmp_path / name
        workdir.mkdir()
        assert await _run(workdir, f"kill -{name} $$") == TaskExit(128 + sig, sig)


async def test_signals_ignored_where_the_agent_was_started_are_not_ignored_in_tasks(tmp_path: Path) -> None:
    # As for an agent started in the background or under nohup: these are ignored when the supervisor starts.
    ignored = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT)
    before = {s: signal.signal(s, signal.SIG_IGN) for s in ignored}
    try:
        # What a program the task starts inherits (bash itself always ignores SIGQUIT, not its children).
        assert await _run(tmp_path, "grep SigIgn /proc/self/status > ignored") == TaskExit(0, None)
        (tmp_path / "interrupted").mkdir()
        assert await _run(tmp_path / "interrupted", "kill -INT $$") == TaskExit(130, 2)
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    mask = int((tmp_path / "ignored").read_text().split()[1], 16)
    assert [s.name for s in ignored if mask & (1 << (s - 1))] == []


async def test_pre_and_post_commands_surround_the_users(tmp_path: Path) -> None:
    result = await _run(tmp_path, "echo user >> order", pre="echo pre >> order", post="echo post >> order")
    assert result == TaskExit(0, None)
    assert (tmp_path / "order").read_text().split() == ["pre", "user", "post"]


async def test_a_failing_pre_command_stops_the_task_with_its_code(tmp_path: Path) -> None:
    result = await _run(tmp_path, "echo user >> order", pre="exit 10", post="echo post >> order")
    assert result == TaskExit(10, None)
    assert not (tmp_path / "order").exists()
    assert '"failed_phase": "pre"' in (tmp_path / "exit.json").read_text()


async def test_post_commands_run_only_after_success(tmp_path: Path) -> None:
    assert await _run(tmp_path, "exit 3", post="echo post >> order") == TaskExit(3, None)
    assert not (tmp_path / "order").exists()


async def test_the_time_limit_stops_a_task_that_ignores_sigterm(tmp_path: Path) -> None:
    result = await _run(tmp_path, "trap '' TERM\nwhile :; do sleep 0.05; done", timeout_s=0.5, grace_s=0.3)
    assert result == TaskExit(137, 9, timed_out=True)
    assert "time limit of 0.5s reached" in (tmp_path / "stderr.log").read_text()


async def test_the_time_limit_lets_a_well_behaved_task_end_on_sigterm(tmp_path: Path) -> None:
    result = await _run(tmp_path, "sleep 30", timeout_s=0.3, grace_s=5)
    assert result == TaskExit(143, 15, timed_out=True)


async def test_background_processes_go_with_the_task(tmp_path: Path) -> None:
    assert await _run(tmp_path, "sleep 60 &\necho $! > bg.pid") == TaskExit(0, None)
    pid = int((tmp_path / "bg.pid").read_text())
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the background process outlived its task")


async def test_the_memory_limit_binds_the_users_commands(tmp_path: Path) -> None:
    # 64 MB of address space: bash runs, a 200 MB allocation does not.
    commands = "ulimit -v > limit.txt\npython3 -c 'x = bytearray(200 * 1024 * 1024)'"
    result = await _run(tmp_path, commands, memory_limit_kb=64 * 1024)
    assert (tmp_path / "limit.txt").read_text().strip() == str(64 * 1024)
    assert result.exit_code != 0
    assert "MemoryError" in (tmp_path / "stderr.log").read_text()


async def test_logs_rotate_at_their_size_limit(tmp_path: Path) -> None:
    commands = "for i in $(seq 1 400); do printf '%04d-------\\n' $i; done"  # 400 lines of 12 bytes
    assert await _run(tmp_path, commands, log_max_bytes=1000, log_keep=3) == TaskExit(0, None)
    current = (tmp_path / "stdout.log").read_bytes()
    older = (tmp_path / "stdout.log.1").read_bytes()
    oldest = (tmp_path / "stdout.log.2").read_bytes()
    assert not (tmp_path / "stdout.log.3").exists()
    assert len(older) == len(oldest) == 1000 and 0 < len(current) <= 1000
    kept = oldest + older + current
    everything = b"".join(b"%04d-------\n" % i for i in range(1, 401))
    assert everything.endswith(kept)
    text, size, truncated = lp.tail_rotated(tmp_path / "stdout.log", 1500)
    assert text.encode() == kept[-1500:]
    assert (size, truncated) == (len(kept), True)
    assert lp.tail_rotated(tmp_path / "stdout.log", 10**6) == (kept.decode(), len(kept), False)


def test_a_rotating_log_keeping_one_file_starts_over(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "x.log", 4, 1)
    log.write(b"abcdefghij")
    assert (tmp_path / "x.log").read_bytes() == b"ij"
    assert not (tmp_path / "x.log.1").exists()


async def test_task_files_holding_commands_are_private(tmp_path: Path) -> None:
    lp.prepare(tmp_path, "echo hi", "echo pre", "echo post")
    for name in ("user.sh", "pre.sh", "post.sh"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600


async def test_a_task_stopped_before_a_phase_began_is_not_a_success(tmp_path: Path) -> None:
    # The stop reaches the supervisor between two phases (here: sent by the pre-command itself); a stop
    # right after the start hits the same spot before the first phase. It used to be recorded as exit 0.
    result = await _run(tmp_path, "echo ran > ran", pre="kill -TERM $PPID")
    assert result == TaskExit(143, signal.SIGTERM)
    assert not (tmp_path / "ran").exists()
    assert '"failed_phase": "user"' in (tmp_path / "exit.json").read_text()
