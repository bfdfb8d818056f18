"""Runtime plugins: the scripts they produce, and real tasks that run them (ssh barrier included)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pai_runtime import barrier, jobssh, plugins
from pai_runtime import local_process as lp
from pai_runtime.backend import TaskExit
from pai_runtime.plugins import PluginContext, PluginError

SECRET = b"cluster-secret"


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _gang_env(tasks: list[tuple[str, int]], ssh_ports: list[int]) -> dict[str, str]:
    env = {
        "PAI_TASK_ROLE_LIST": ",".join(dict.fromkeys(r for r, _ in tasks)),
        "PAI_TASK_ROLE_INSTANCES": ",".join(f"{r}:{i}" for r, i in tasks),
    }
    for (role, i), port in zip(tasks, ssh_ports, strict=True):
        env[f"PAI_HOST_IP_{role}_{i}"] = "127.0.0.1"
        env[f"PAI_PORT_LIST_{role}_{i}_ssh"] = str(port)
    return env


def _ctx(
    home: Path, role: str = "master", index: int = 0, env: dict[str, str] | None = None, **kw: Any
) -> PluginContext:
    return PluginContext(
        job_key="alice~job",
        task_role=role,
        index=index,
        env=env if env is not None else _gang_env([("master", 0)], [20001]),
        home=str(home),
        python=sys.executable,
        barrier_script=barrier.__file__,
        sshd=kw.pop("sshd", None),
        job_ssh_secret=SECRET,
        **kw,
    )


async def _run_task(workdir: Path, commands: str, out: plugins.PluginOutput) -> TaskExit:
    for rel, (content, mode) in out.files.items():
        path = workdir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        path.chmod(mode)
    lp.prepare(workdir, commands, out.pre_script, out.post_script)
    pid = await lp.start(workdir, lp.task_env(dict(os.environ), out.env, workdir))
    return await asyncio.wait_for(lp.wait(pid, workdir), 30)


# ---- cmd and failure policies --------------------------------------------------------------------------


async def test_cmd_pre_post_and_callbacks_run_in_order(tmp_path: Path) -> None:
    entries = [
        {
            "plugin": "cmd",
            "parameters": {
                "preCommands": ["echo pre1 >> order"],
                "postCommands": ["echo post1 >> order"],
                "callbacks": [
                    {"event": "taskStarts", "commands": ["echo started >> order"]},
                    {"event": "taskSucceeds", "commands": ["echo succeeded >> order"]},
                ],
            },
        },
        {
            "plugin": "com.microsoft.pai.runtimeplugin.cmd",
            "parameters": {"postCommands": ["echo post2 >> order"]},
        },
    ]
    out = plugins.build(entries, _ctx(tmp_path))
    assert await _run_task(tmp_path, "echo user >> order", out) == TaskExit(0, None)
    assert (tmp_path / "order").read_text().split() == [
        "pre1", "started", "user", "post2", "post1", "succeeded",
    ]  # fmt: skip


async def test_a_failing_plugin_with_policy_fail_ends_the_task(tmp_path: Path) -> None:
    entries = [{"plugin": "cmd", "parameters": {"preCommands": ["false", "echo after >> order"]}}]
    result = await _run_task(tmp_path, "echo user >> order", plugins.build(entries, _ctx(tmp_path)))
    assert result == TaskExit(1, None)
    assert not (tmp_path / "order").exists()
    assert "plugin cmd failed with exit code 1" in (tmp_path / "stderr.log").read_text()


async def test_a_failing_plugin_with_policy_ignore_lets_the_task_go_on(tmp_path: Path) -> None:
    entries = [
        {
            "plugin": "cmd",
            "failurePolicy": "ignore",
            "parameters": {"preCommands": ["false", "echo after >> order", "exit 7"]},
        }
    ]
    result = await _run_task(tmp_path, "echo user >> order", plugins.build(entries, _ctx(tmp_path)))
    assert result == TaskExit(0, None)
    assert (tmp_path / "order").read_text().split() == ["after", "user"]
    assert "plugin cmd failed with exit code 7; ignored" in (tmp_path / "stderr.log").read_text()


def test_secrets_are_rendered_in_plugin_commands(tmp_path: Path) -> None:
    entries = [{"plugin": "cmd", "parameters": {"preCommands": ["login <% $secrets.token %>"]}}]
    out = plugins.build(entries, _ctx(tmp_path, job_secrets={"token": "tok-999"}))
    assert "login tok-999" in out.pre_script


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"plugin": "docker-in-docker"}, "unknown runtime plugin 'docker-in-docker'"),
        ({"plugin": "cmd", "failurePolicy": "maybe"}, "failurePolicy must be fail or ignore"),
        ({"plugin": "cmd", "parameters": {"preCommands": [1]}}, "cmd.preCommands must be a list"),
        ({"plugin": "cmd", "parameters": {"callbacks": [{"event": "x", "commands": []}]}}, "taskStarts"),
        ({"plugin": "git", "parameters": {}}, "git.repo_uri is required"),
        ({"plugin": "tensorboard", "parameters": {"logdir": "x"}}, "tensorboard.logdir"),
        ({"plugin": "cmd", "parameters": "x"}, "parameters must be a mapping"),
    ],
)
def test_bad_plugin_entries_are_refused_precisely(
    tmp_path: Path, entry: dict[str, Any], message: str
) -> None:
    with pytest.raises(PluginError, match=message):
        plugins.build([entry], _ctx(tmp_path))


def test_task_role_filters_and_tensorboard_in_the_first_task_only(tmp_path: Path) -> None:
    env = _gang_env([("master", 0), ("worker", 0), ("worker", 1)], [1, 2, 3])
    entries = [
        {"plugin": "cmd", "taskroles": ["worker"], "parameters": {"preCommands": ["echo w"]}},
        {"plugin": "tensorboard", "parameters": {"port": 7000, "logdir": {"a": "/x", "b": "/y"}}},
    ]
    master = plugins.build(entries, _ctx(tmp_path, "master", 0, env))
    worker = plugins.build(entries, _ctx(tmp_path, "worker", 0, env))
    assert "echo w" not in master.pre_script and "echo w" in worker.pre_script
    assert "--logdir_spec a:/x,b:/y --port 7000 --bind_all" in master.pre_script
    assert "tensorboard" not in worker.pre_script


def _make_repo(repo: Path) -> None:
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "train.py").write_text("print('hi')\n")
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    author = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "-C", str(repo), *author, "commit", "-qm", "x"], check=True)


async def test_git_clones_into_the_task(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _make_repo(repo)
    task = tmp_path / "task"
    task.mkdir()
    entries = [{"plugin": "git", "parameters": {"repo_uri": str(repo), "options": "--depth 1"}}]
    result = await _run_task(task, "test -f code/train.py", plugins.build(entries, _ctx(task)))
    assert result == TaskExit(0, None)


# ---- ssh -----------------------------------------------------------------------------------------------


def test_the_job_key_pair_is_the_same_on_every_agent_and_differs_per_job() -> None:
    from cryptography.hazmat.primitives import serialization

    a = jobssh.job_key_pair(SECRET, "alice~job")
    b = jobssh.job_key_pair(SECRET, "alice~job")
    # The private key file carries a random check number; the key inside is the same.
    assert a.public_openssh == b.public_openssh
    key = serialization.load_ssh_private_key(b.private_openssh.encode(), None)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    assert a.public_openssh.startswith(public.decode())
    assert a.public_openssh != jobssh.job_key_pair(SECRET, "alice~other").public_openssh
    assert a.public_openssh != jobssh.job_key_pair(b"another-cluster", "alice~job").public_openssh
    assert a.private_openssh.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert a.public_openssh.startswith("ssh-ed25519 ")
    with pytest.raises(ValueError, match="PAI_JOB_SSH_SECRET"):
        jobssh.job_key_pair(b"", "alice~job")


def test_the_ssh_config_names_every_task(tmp_path: Path) -> None:
    env = _gang_env([("master", 0), ("worker", 0), ("worker", 1)], [2001, 2002, 2003])
    out = plugins.build([{"plugin": "ssh", "parameters": {"jobssh": True}}], _ctx(tmp_path, env=env))
    config = out.files[".ssh/config"][0]
    for name, port in (("master-0", 2001), ("worker-0", 2002), ("worker-1", 2003)):
        assert f"Host {name}\n  HostName 127.0.0.1\n  Port {port}\n" in config
    assert f"IdentityFile {tmp_path}/.ssh/id_ed25519" in config
    assert out.files[".ssh/id_ed25519"][1] == 0o600
    assert out.env["PATH"].startswith(f"{tmp_path}/.ssh/bin:")
    # OpenSSH itself resolves the alias to the task's address and port.
    (tmp_path / "cfg").write_text(config)
    resolved = subprocess.run(
        ["ssh", "-G", "-F", str(tmp_path / "cfg"), "worker-1"], capture_output=True, text=True, check=True
    )
    assert "port 2003" in resolved.stdout and "hostname 127.0.0.1" in resolved.stdout


def test_with_sshd_the_task_starts_its_own_daemon(tmp_path: Path) -> None:
    out = plugins.build([{"plugin": "ssh"}], _ctx(tmp_path, sshd="/usr/sbin/sshd"))
    assert "SSHD=/usr/sbin/sshd" in out.pre_script and '"$SSHD" -D -e -f' in out.pre_script
    assert "Port 20001" in out.files[".ssh/sshd_config"][0]
    assert "--listen" not in out.pre_script
    without = plugins.build([{"plugin": "ssh"}], _ctx(tmp_path))
    assert "--listen 20001" in without.pre_script and "SSHD" not in without.pre_script
    assert ".ssh/sshd_config" not in without.files


async def test_auto_sshd_falls_back_to_a_listener_where_none_is_installed(tmp_path: Path) -> None:
    import shutil

    port = _free_ports(1)[0]
    env = _gang_env([("master", 0)], [port])
    out = plugins.build([{"plugin": "ssh"}], _ctx(tmp_path, env=env, sshd="auto"))
    assert 'if [ -n "$SSHD" ]; then' in out.pre_script
    # The listener starts in the background: the probe retries as a peer's barrier would.
    probe = f"python3 {barrier.__file__} --peers 127.0.0.1:{port} --timeout 10 --poll 0.05"
    result = await _run_task(tmp_path, probe, out)
    assert result == TaskExit(0, None)  # something answers on the task's ssh port either way
    stderr = (tmp_path / "stderr.log").read_text()
    assert ("no sshd here" in stderr) == (
        shutil.which("sshd") is None and not os.access("/usr/sbin/sshd", os.X_OK)
    )


async def test_the_ssh_barrier_waits_for_every_peer(tmp_path: Path) -> None:
    tasks = [("master", 0), ("worker", 0), ("worker", 1)]
    env = _gang_env(tasks, _free_ports(3))
    entry = {"plugin": "ssh", "parameters": {"jobssh": True, "sshbarrier": True, "sshbarrierTimeout": 1}}
    starts = []
    for n, (role, i) in enumerate(tasks):
        workdir = tmp_path / f"{role}-{i}"
        workdir.mkdir()
        out = plugins.build([entry], _ctx(workdir, role, i, env, barrier_poll_s=0.1))
        # Each task notes when its user commands begin; the last one starts late.
        if n == 2:
            await asyncio.sleep(1.0)
            assert not any((tmp_path / f"{r}-{j}" / "began").exists() for r, j in tasks[:2])
        starts.append(asyncio.create_task(_run_task(workdir, "touch began; sleep 0.5", out)))
    results = await asyncio.gather(*starts)
    assert results == [TaskExit(0, None)] * 3
    for role, i in tasks:
        assert "ssh barrier passed" in (tmp_path / f"{role}-{i}" / "stdout.log").read_text()


async def test_an_ssh_barrier_that_times_out_fails_the_task_with_openpais_message(tmp_path: Path) -> None:
    tasks = [("master", 0), ("worker", 0)]
    env = _gang_env(tasks, _free_ports(2))  # the worker never starts
    entry = {"plugin": "ssh", "parameters": {"sshbarrier": True, "sshbarrierTimeout": 0.01}}
    out = plugins.build([entry], _ctx(tmp_path, "master", 0, env, barrier_poll_s=0.1))
    result = await _run_task(tmp_path, "echo never >> user-ran", out)
    assert result == TaskExit(barrier.TIMEOUT_EXIT, None)
    assert not (tmp_path / "user-ran").exists()
    assert "SSH barrier reaches max retry count" in (tmp_path / "stderr.log").read_text()
