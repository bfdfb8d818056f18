"""Runtime plugins (``com.microsoft.pai.runtimeplugin``): shell commands around the user's.

Pure: from the job's plugin entries and the task's environment, the pre-commands, post-commands,
files and variables of one task. Supported: ``cmd`` (pre/post commands, callbacks), ``ssh`` (job key
pair, ``ssh <role>-<index>`` between tasks, sshd where installed, a barrier), ``tensorboard`` and
``git``; ``teamwise_storage`` is accepted and adds no command (the jobs service turns its
``storageConfigNames`` into the task's mounts at submission). Each plugin's commands run in their own
subshell: with ``failurePolicy: fail`` (the default) under errexit, and a failure ends the task with the
plugin's exit code; with ``ignore`` every command runs and a failure is only reported.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from pai_runtime import jobssh, secrets

PREFIX = "com.microsoft.pai.runtimeplugin."
KNOWN = ("cmd", "ssh", "tensorboard", "git", "teamwise_storage")


class PluginError(ValueError):
    """A plugin entry the runtime cannot run: unknown plugin, bad parameters."""


@dataclass(frozen=True)
class PluginContext:
    job_key: str
    task_role: str
    index: int
    env: dict[str, str]  # the task's PAI_* environment
    home: str  # the task's working directory, also its HOME
    python: str  # the interpreter that runs the barrier
    barrier_script: str
    sshd: str | None  # the sshd binary where one is installed; "auto": look for one where the task runs
    job_ssh_secret: bytes = b""
    job_secrets: dict[str, Any] = field(default_factory=dict)
    barrier_poll_s: float = 10.0


@dataclass
class PluginOutput:
    pre: list[str] = field(default_factory=list)
    post: list[str] = field(default_factory=list)
    # Relative path in the working directory → (content, file mode).
    files: dict[str, tuple[str, int]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pre_script(self) -> str:
        return "\n".join(self.pre)

    @property
    def post_script(self) -> str:
        return "\n".join(self.post)


def plugin_name(entry: dict[str, Any]) -> str:
    name = str(entry.get("plugin", ""))
    return name[len(PREFIX) :] if name.startswith(PREFIX) else name


def _wrap(name: str, policy: str, commands: list[str]) -> str:
    body = "\n".join(commands)
    # The subshell's status is read on its own line: bash ignores errexit inside "( … ) || …".
    if policy == "ignore":
        return (
            f"# plugin {name} (failurePolicy: ignore)\n(\n{body}\n)\ncode=$?\n"
            f'[ "$code" = 0 ] || echo "[openpai-runtime] plugin {name} failed with exit code $code;'
            ' ignored" >&2'
        )
    return (
        f"# plugin {name} (failurePolicy: fail)\n(\nset -o errexit\n{body}\n)\ncode=$?\n"
        f'[ "$code" = 0 ] || {{ echo "[openpai-runtime] plugin {name} failed with exit code $code" >&2;'
        " exit $code; }"
    )


def _commands(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(c, str) for c in value):
        return list(value)
    raise PluginError(f"{where} must be a list of commands")


def _cmd(params: dict[str, Any]) -> tuple[list[str], list[str]]:
    pre = _commands(params.get("preCommands"), "cmd.preCommands")
    post = _commands(params.get("postCommands"), "cmd.postCommands")
    for i, cb in enumerate(params.get("callbacks") or []):
        if not isinstance(cb, dict):
            raise PluginError(f"cmd.callbacks[{i}] must be a mapping")
        event = cb.get("event")
        commands = _commands(cb.get("commands"), f"cmd.callbacks[{i}].commands")
        if event == "taskStarts":
            pre += commands
        elif event == "taskSucceeds":
            post += commands
        else:
            raise PluginError(f"cmd.callbacks[{i}].event must be taskStarts or taskSucceeds, not {event!r}")
    return pre, post


def _ssh(params: dict[str, Any], ctx: PluginContext, out: PluginOutput) -> list[str]:
    home = ctx.home
    peers = jobssh.peers(ctx.env)
    me = next((p for p in peers if (p.task_role, p.index) == (ctx.task_role, ctx.index)), None)
    port = me.ssh_port if me else None
    if port is None:
        raise PluginError("the ssh plugin needs an ssh port for the task (PAI_CONTAINER_SSH_PORT)")
    keys = jobssh.job_key_pair(ctx.job_ssh_secret, ctx.job_key)
    authorized = [keys.public_openssh]
    userssh = params.get("userssh") or {}
    if isinstance(userssh, dict) and userssh.get("value"):
        authorized.append(str(userssh["value"]).strip())
    out.files[".ssh/id_ed25519"] = (keys.private_openssh, 0o600)
    out.files[".ssh/id_ed25519.pub"] = (keys.public_openssh + "\n", 0o644)
    out.files[".ssh/authorized_keys"] = ("\n".join(authorized) + "\n", 0o600)
    identity = f"{home}/.ssh/id_ed25519"
    if params.get("jobssh", True):
        out.files[".ssh/config"] = (jobssh.ssh_config(peers, identity), 0o600)
    # ssh reads the config of the account's home, not $HOME: a wrapper first on PATH points it here.
    out.files[".ssh/bin/ssh"] = (f'#!/bin/sh\nexec ssh -F "{home}/.ssh/config" "$@"\n', 0o755)
    out.files[".ssh/bin/scp"] = (f'#!/bin/sh\nexec scp -F "{home}/.ssh/config" "$@"\n', 0o755)
    out.env["PATH"] = f"{home}/.ssh/bin:" + ctx.env.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    commands = []
    out.files[".ssh/sshd_config"] = (jobssh.sshd_config(home, port), 0o600)
    start_sshd = [
        f'test -f "{home}/.ssh/host_ed25519" || ssh-keygen -q -t ed25519 -N "" -f "{home}/.ssh/host_ed25519"',
        f'env | grep -E "^(PAI_|FC_|CUDA_|NVIDIA_)" > "{home}/.ssh/environment" || true',
        f'"$SSHD" -D -e -f "{home}/.ssh/sshd_config" > "{home}/.ssh/sshd.log" 2>&1 &',
    ]
    # No sshd: answer on the ssh port anyway, so that the peers' barriers pass.
    listen = [
        'echo "[openpai-runtime] no sshd here: ssh logins into this task are not available;'
        " the ssh barrier waits for every peer's ssh port instead\" >&2",
        f"{shlex.quote(ctx.python)} -I -S {shlex.quote(ctx.barrier_script)} --listen {port}"
        " > /dev/null 2>&1 &",
    ]
    if ctx.sshd == "auto":  # decided where the task runs (an image may or may not have sshd)
        commands += [
            'SSHD="$(command -v sshd || true)"',
            'if [ -z "$SSHD" ] && [ -x /usr/sbin/sshd ]; then SSHD=/usr/sbin/sshd; fi',
            'if [ -n "$SSHD" ]; then',
            *start_sshd,
            "else",
            *listen,
            "fi",
        ]
    elif ctx.sshd:
        commands += [f"SSHD={shlex.quote(ctx.sshd)}", *start_sshd]
    else:
        del out.files[".ssh/sshd_config"]
        commands += listen
    if params.get("sshbarrier", False):
        timeout_min = float(params.get("sshbarrierTimeout", 30))
        others = [f"{p.host_ip}:{p.ssh_port}" for p in peers if p is not me and p.ssh_port and p.host_ip]
        commands.append(
            f"{shlex.quote(ctx.python)} -I -S {shlex.quote(ctx.barrier_script)}"
            f" --peers {shlex.quote(','.join(others))} --timeout {timeout_min * 60:g}"
            f" --poll {ctx.barrier_poll_s:g}"
        )
    return commands


def _tensorboard(params: dict[str, Any], ctx: PluginContext) -> list[str]:
    roles = ctx.env.get("PAI_TASK_ROLE_LIST", "").split(",")
    if ctx.index != 0 or not roles or roles[0] != ctx.task_role:
        return []  # OpenPAI runs one TensorBoard per job, in the first task of the first role
    logdir = params.get("logdir") or {}
    if not isinstance(logdir, dict) or not logdir:
        raise PluginError("tensorboard.logdir must map names to paths")
    port = int(params.get("port", 6006))
    spec = ",".join(f"{name}:{path}" for name, path in logdir.items())
    return [
        "command -v tensorboard > /dev/null || "
        '{ echo "tensorboard is not installed in this task\'s environment" >&2; exit 1; }',
        f"nohup tensorboard --logdir_spec {shlex.quote(spec)} --port {port} --bind_all"
        ' > "$HOME/tensorboard.log" 2>&1 &',
    ]


def _git(params: dict[str, Any]) -> list[str]:
    repo = params.get("repo_uri")
    if not repo:
        raise PluginError("git.repo_uri is required")
    clone_dir = str(params.get("clone_dir") or "code")
    options = str(params.get("options") or "")
    return [
        "for attempt in 1 2 3 4 5 6 7 8 9 10; do",
        f"  git clone {options} -- {shlex.quote(str(repo))} {shlex.quote(clone_dir)} && break",
        '  [ "$attempt" = 10 ] && exit 1',
        f"  rm -rf {shlex.quote(clone_dir)}; sleep $(( attempt < 6 ? 1 << attempt : 60 ))",
        "done",
    ]


def build(entries: list[dict[str, Any]], ctx: PluginContext) -> PluginOutput:
    out = PluginOutput()
    for i, raw in enumerate(entries):
        if not isinstance(raw, dict):
            raise PluginError(f"runtime plugin entry {i} must be a mapping")
        name = plugin_name(raw)
        policy = str(raw.get("failurePolicy", "fail"))
        if policy not in ("fail", "ignore"):
            raise PluginError(f"plugin {name}: failurePolicy must be fail or ignore, not {policy!r}")
        roles = raw.get("taskroles") or raw.get("taskRoles")
        if roles and ctx.task_role not in roles:
            continue
        params = raw.get("parameters") or {}
        if not isinstance(params, dict):
            raise PluginError(f"plugin {name}: parameters must be a mapping")
        pre: list[str] = []
        post: list[str] = []
        if name == "cmd":
            pre, post = _cmd(params)
        elif name == "ssh":
            pre = _ssh(params, ctx, out)
        elif name == "tensorboard":
            pre = _tensorboard(params, ctx)
        elif name == "git":
            pre = _git(params)
        elif name == "teamwise_storage":
            pass  # its storages were resolved at submission and come as the launch's mounts
        else:
            raise PluginError(f"unknown runtime plugin {name!r}; this runtime has {', '.join(KNOWN)}")
        pre = [secrets.render(c, ctx.job_secrets) for c in pre]
        post = [secrets.render(c, ctx.job_secrets) for c in post]
        if pre:
            out.pre.append(_wrap(name, policy, pre))
        if post:
            # Post-commands of later plugins run first, as OpenPAI prepends each plugin's post script.
            out.post.insert(0, _wrap(name, policy, post))
    return out
