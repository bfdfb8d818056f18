"""Where the job-ssh secret comes from: every agent of a cluster must derive the same job keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from pai_runtime import jobssh
from pai_runtime.settings import RuntimeSettings


def _agent(data_dir: Path, **env: object) -> RuntimeSettings:
    return RuntimeSettings(node_name="node-a", data_dir=data_dir, **env)  # type: ignore[arg-type]


def test_agents_with_their_own_data_dirs_share_a_secret_file(tmp_path: Path) -> None:
    shared = tmp_path / "shared" / "job-ssh.secret"
    first = jobssh.shared_secret(_agent(tmp_path / "a", job_ssh_secret_file=shared))
    second = jobssh.shared_secret(_agent(tmp_path / "b", job_ssh_secret_file=shared))
    assert first == second and len(first) == 64
    assert shared.stat().st_mode & 0o777 == 0o600
    public = jobssh.job_key_pair(first, "alice~job").public_openssh
    assert public == jobssh.job_key_pair(second, "alice~job").public_openssh


def test_without_a_shared_source_each_data_dir_has_its_own(tmp_path: Path) -> None:
    # Why the deployments set one: agents in containers of their own would disagree.
    assert jobssh.shared_secret(_agent(tmp_path / "a")) != jobssh.shared_secret(_agent(tmp_path / "b"))


def test_a_value_wins_and_a_mounted_secret_is_read_as_is(tmp_path: Path) -> None:
    mounted = tmp_path / "secret" / "secret"
    mounted.parent.mkdir()
    mounted.write_text("0123456789abcdef0123456789abcdef\n")
    mounted.chmod(0o400)
    assert jobssh.shared_secret(_agent(tmp_path, job_ssh_secret_file=mounted)) == (
        b"0123456789abcdef0123456789abcdef"
    )
    value = _agent(tmp_path, job_ssh_secret="v" * 20, job_ssh_secret_file=mounted)
    assert jobssh.shared_secret(value) == b"v" * 20


def test_a_short_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shorter than 16 bytes"):
        jobssh.shared_secret(_agent(tmp_path, job_ssh_secret="short"))
