"""Storages for local tasks: mounted inside a private mount namespace of the task, never on the host.

The task's supervisor is started by ``unshare --mount --propagation private`` and mounts each storage
before the task's first phase (``supervisor._mount_storages``): a bind mount for ``local`` (read-only by a
remount), the system's mount helpers for ``nfs`` (``mount.nfs``), ``samba`` and ``azureFile``
(``mount.cifs``), ``blobfuse2`` for ``azureBlob``. The mounts live and die with the namespace: the host's
own mount table never changes. A ``pvc`` is Kubernetes' only.

Where this cannot be done (the agent is not root, ``unshare`` or a helper is missing, a local folder does
not exist) the task does not run without its data: it ends at once with ``STORAGE_MOUNT_EXIT`` and says
why. Credentials go to the mount helpers in files readable by root only, removed once mounted.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pai_common.contract.types import StorageMount
from pai_runtime.backend import STORAGE_MOUNT_EXIT, SetupError

HELPERS = {"nfs": "mount.nfs", "samba": "mount.cifs", "azureFile": "mount.cifs", "azureBlob": "blobfuse2"}
PACKAGES = {"mount.nfs": "nfs-common", "mount.cifs": "cifs-utils", "blobfuse2": "blobfuse2"}


@functools.cache
def private_namespaces() -> str | None:
    """None when this agent can give a task a private mount namespace; otherwise why not."""
    if os.geteuid() != 0:
        return "the agent does not run as root"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    try:
        probe = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare failed: {exc}"
    if probe.returncode != 0:
        return f"unshare --mount is refused here: {probe.stderr.decode(errors='replace').strip()}"
    return None


def in_private_namespace(argv: list[str]) -> list[str]:
    """The supervisor's command line in a new mount namespace whose mounts never reach the host."""
    return ["unshare", "--mount", "--propagation", "private", "--", *argv]


@dataclass
class MountPlan:
    """What the supervisor does before the task starts: one step per storage (argv lists, no shell)."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    # name → credential file content, written (0600) where the supervisor reads them.
    secret_files: dict[str, str] = field(default_factory=dict)
    # For a task in the job's image (Docker/Podman): -v source:target[:ro].
    volumes: list[str] = field(default_factory=list)

    @property
    def needs_namespace(self) -> bool:
        return bool(self.steps)

    def supervisor_steps(self, secrets_dir: Path) -> list[dict[str, Any]]:
        """The steps with the credential files' paths filled in (the files are written there)."""
        resolved = []
        for step in self.steps:
            argv = [a.replace("{secrets}", str(secrets_dir)) for a in step["argv"]]
            resolved.append({**step, "argv": argv})
        return resolved


def _source_folder(m: StorageMount) -> str:
    base = m.data["path"]
    return f"{base}/{m.sub_path}" if m.sub_path else base


def _options(m: StorageMount, extra: list[str]) -> str:
    return ",".join([*(["ro"] if m.read_only else []), *extra, *m.mount_options])


def _sub(path: str, m: StorageMount) -> str:
    return f"{path.rstrip('/')}/{m.sub_path}" if m.sub_path else path


def mount_argv(m: StorageMount, credentials: dict[str, str], node: str) -> tuple[list[str], str | None]:
    """The command that mounts ``m`` at its mount path, and the content of its credential file (if any,
    at ``{secrets}/<name>``). Pure."""
    target = m.mount_path
    secret_file = "{secrets}/" + m.name
    if m.type == "nfs":
        source = f"{m.data['server']}:{_sub(m.data['path'], m)}"
        opts = _options(m, [])
        return ["mount", "-t", "nfs", *(["-o", opts] if opts else []), source, target], None
    if m.type in ("samba", "azureFile"):
        if m.type == "samba":
            source = _sub(m.data["address"], m)
            username = m.data.get("username", "")
            password = credentials.get("password", "")
        else:
            account = m.data["accountName"]
            source = _sub(f"//{account}.file.core.windows.net/{m.data['shareName']}", m)
            username, password = account, credentials.get("accountKey", "")
        extra = [f"credentials={secret_file}"] if username or password else ["guest"]
        if m.type == "azureFile":
            extra += ["vers=3.0", "serverino", "dir_mode=0777", "file_mode=0777"]
        content = f"username={username}\npassword={password}\n" if username or password else None
        return ["mount", "-t", "cifs", "-o", _options(m, extra), source, target], content
    if m.type == "azureBlob":
        account, container = m.data["accountName"], m.data["containerName"]
        auth = (
            f"    mode: sas\n    sas: {credentials['sasToken']}\n"
            if "sasToken" in credentials
            else f"    mode: key\n    account-key: {credentials.get('accountKey', '')}\n"
        )
        config = (
            f"components: [libfuse, block_cache, attr_cache, azstorage]\n"
            f"libfuse:\n  attribute-expiration-sec: 120\n"
            f"azstorage:\n    type: block\n    account-name: {account}\n    container: {container}\n{auth}"
            + (f"    subdirectory: {m.sub_path}\n" if m.sub_path else "")
        )
        argv = ["blobfuse2", "mount", target, f"--config-file={secret_file}"]
        if m.read_only:
            argv.append("--read-only")
        return argv, config
    if m.type == "local":
        return ["mount", "--bind", _source_folder(m), target], None
    raise SetupError(
        STORAGE_MOUNT_EXIT,
        f"storage {m.name} not mounted: a {m.type} storage can only be mounted by the Kubernetes backend"
        f" ({node} runs tasks as local processes)",
    )


def plan(
    mounts: list[StorageMount],
    credentials: dict[str, dict[str, str]],
    node: str,
    engine: str | None,
) -> MountPlan:
    """The task's mounts as its supervisor does them; SetupError(STORAGE_MOUNT_EXIT) naming the first
    storage this node cannot mount, before anything starts."""
    result = MountPlan()
    if not mounts:
        return result
    if engine:
        for m in mounts:
            if m.type != "local":
                raise SetupError(
                    STORAGE_MOUNT_EXIT,
                    f"storage {m.name} not mounted: a task in its image ({engine}) gets local storages"
                    f" only; {m.type} is mounted for tasks on the host",
                )
            _check_folder(m, node)
            result.volumes.append(f"{_source_folder(m)}:{m.mount_path}" + (":ro" if m.read_only else ""))
        return result
    why = private_namespaces()
    if why is not None:
        raise SetupError(
            STORAGE_MOUNT_EXIT,
            f"storage {mounts[0].name} not mounted: {node} cannot give a task a private mount namespace"
            f" ({why}); the task does not run without its data",
        )
    for m in mounts:
        helper = HELPERS.get(m.type)
        if helper and shutil.which(helper) is None and not Path("/sbin", helper).exists():
            raise SetupError(
                STORAGE_MOUNT_EXIT,
                f"storage {m.name} not mounted: {helper} is not installed on {node}"
                f" (Debian package {PACKAGES[helper]})",
            )
        if m.type == "local":
            _check_folder(m, node)
        argv, secret = mount_argv(m, credentials.get(m.name, {}), node)
        if secret is not None:
            result.secret_files[m.name] = secret
        result.steps.append(
            {
                "name": m.name,
                "target": m.mount_path,
                "argv": argv,
                "read_only": m.read_only,
                "bind": m.type == "local",
            }
        )
    return result


def _check_folder(m: StorageMount, node: str) -> None:
    folder = Path(_source_folder(m))
    if m.sub_path and not folder.exists() and folder.parent.is_dir():
        folder.mkdir(mode=0o770)  # the user's own folder in a storage that is not shared
    if not folder.is_dir():
        raise SetupError(
            STORAGE_MOUNT_EXIT, f"storage {m.name} not mounted: {folder} is not a folder on {node}"
        )
