"""A single-node Slurm on this machine, the throughput peer of ``vs_slurm.py``.

Debian's ``slurm-wlm`` and ``munge`` (installed with apt-get when missing; root only). Everything runs in a
private folder with its own munge key and socket, its own ports and state, so it never touches a Slurm
the machine may already run: ``munged``, ``slurmctld`` (backfill scheduler, ``select/cons_tres`` by CPU,
no accounting) and ``slurmd`` with one node of ``cpus`` CPUs, all three started as children of a small
sub-reaper process. The task steps (``slurmstepd`` and the batch script) are double-forked by
``slurmd``; as orphans they are reaped by the sub-reaper, so its reaped-children CPU counts them and
Slurm's CPU is summed exactly as the platform's is.

Job times come from the controller's own log (``LogTimeFormat=iso8601_ms``): the submission RPC, the
allocation, and ``_job_complete ... done``, millisecond server timestamps like the platform's.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
BINARIES = ("sbatch", "slurmctld", "slurmd", "munged", "sinfo")

# Runs the three daemons as its children and reaps every orphan below them (PR_SET_CHILD_SUBREAPER).
REAPER = r"""
import ctypes, json, os, signal, subprocess, sys
libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
spec = json.loads(sys.argv[1])
procs = {}
for name, argv in spec["daemons"]:
    log = open(os.path.join(spec["logs"], name + ".out"), "ab")
    procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
with open(spec["pids"] + ".tmp", "w") as f:
    json.dump({n: p.pid for n, p in procs.items()}, f)
os.replace(spec["pids"] + ".tmp", spec["pids"])
def stop(signum, frame):
    for p in reversed(list(procs.values())):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
    except InterruptedError:
        continue
"""


class SlurmError(RuntimeError):
    """Slurm could not be installed or started, or a submission went wrong."""


def ensure_installed() -> None:
    """Install Debian's slurm-wlm and munge when a binary is missing (root only)."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SlurmError(
            f"{', '.join(missing)} missing; run as root or: apt-get install {' '.join(PACKAGES)}"
        )
    print(f"installing {' '.join(PACKAGES)} with apt-get (missing: {', '.join(missing)})", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SlurmError(f"apt-get install {' '.join(PACKAGES)} failed: {done.stderr[-2000:]}")
    still = [b for b in BINARIES if shutil.which(b) is None]
    if still:
        raise SlurmError(f"installed {' '.join(PACKAGES)}, but {', '.join(still)} still missing")


def version() -> str:
    done = subprocess.run(["slurmctld", "-V"], capture_output=True, text=True)
    return done.stdout.strip() or done.stderr.strip()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SlurmSubmission:
    name: str
    latency_ms: float | None = None
    job_id: int | None = None
    error: str | None = None


@dataclass
class SlurmJob:
    job_id: int
    submitted_ms: float | None = None
    started_ms: float | None = None
    completed_ms: float | None = None
    exit_status: int | None = None


_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})\] (.*)$")
_SUBMIT = re.compile(r"_slurm_rpc_submit_batch_job: JobId=(\d+) ")
_START = re.compile(r"(?:sched: Allocate|backfill: Started) JobId=(\d+) ")
_EXIT = re.compile(r"_job_complete: JobId=(\d+) WEXITSTATUS (\d+)")
_DONE = re.compile(r"_job_complete: JobId=(\d+) done")


def parse_controller_log(text: str) -> dict[int, SlurmJob]:
    """Every job's submission, start and completion times (ms since the epoch) from slurmctld's log."""
    jobs: dict[int, SlurmJob] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        stamp = dt.datetime.fromisoformat(m.group(1)).replace(tzinfo=dt.UTC).timestamp() * 1000.0
        message = m.group(2)
        for pattern, attr in ((_SUBMIT, "submitted_ms"), (_START, "started_ms"), (_DONE, "completed_ms")):
            hit = pattern.search(message)
            if hit:
                job = jobs.setdefault(int(hit.group(1)), SlurmJob(int(hit.group(1))))
                setattr(job, attr, stamp)
        hit = _EXIT.search(message)
        if hit:
            jobs.setdefault(int(hit.group(1)), SlurmJob(int(hit.group(1)))).exit_status = int(hit.group(2))
    return jobs


class LocalSlurm:
    """One controller and one node of ``cpus`` CPUs (declared, as the platform's simulated inventory is)."""

    def __init__(self, workdir: Path, cpus: int) -> None:
        self.workdir = workdir.resolve()
        self.cpus = cpus
        self.conf = self.workdir / "slurm.conf"
        self.reaper: subprocess.Popen[bytes] | None = None
        self.daemon_pids: dict[str, int] = {}

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    @property
    def controller_log(self) -> Path:
        return self.workdir / "log" / "slurmctld.log"

    def _configure(self) -> None:
        w = self.workdir
        for sub in ("munge", "state", "spool", "log", "out"):
            (w / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(w, 0o755)
        os.chmod(w / "munge", 0o700)
        key = w / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        os.chmod(key, 0o600)
        host = socket.gethostname().split(".")[0]
        ctld_port, node_port = _free_port(), _free_port()
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=paibench",
                    f"SlurmctldHost={host}(127.0.0.1)",
                    f"SlurmctldPort={ctld_port}",
                    f"SlurmdPort={node_port}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={w / 'munge' / 'munge.sock'}",
                    f"StateSaveLocation={w / 'state'}",
                    f"SlurmdSpoolDir={w / 'spool'}",
                    f"SlurmctldPidFile={w / 'slurmctld.pid'}",
                    f"SlurmdPidFile={w / 'slurmd.pid'}",
                    f"SlurmctldLogFile={self.controller_log}",
                    f"SlurmdLogFile={w / 'log' / 'slurmd.log'}",
                    "SlurmctldDebug=info",
                    "SlurmdDebug=info",
                    "LogTimeFormat=iso8601_ms",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "MpiDefault=none",
                    "SchedulerType=sched/backfill",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU",
                    "SlurmdParameters=config_overrides",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "JobCompType=jobcomp/none",
                    "ReturnToService=2",
                    "MinJobAge=600",
                    "MaxJobCount=100000",
                    f"NodeName={host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=16000 State=UNKNOWN",
                    f"PartitionName=bench Nodes={host} Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )

    def start(self, timeout_s: float = 60.0) -> float:
        """Start munged, slurmctld and slurmd; returns the seconds until the node was idle."""
        ensure_installed()
        started = time.perf_counter()
        self._configure()
        w = self.workdir
        conf = str(self.conf)
        munge = w / "munge"
        daemons = [
            (
                "munged",
                [
                    shutil.which("munged") or "munged",
                    "-F",
                    "--force",
                    f"--socket={munge / 'munge.sock'}",
                    f"--key-file={munge / 'munge.key'}",
                    f"--pid-file={munge / 'munged.pid'}",
                    f"--log-file={w / 'log' / 'munged.log'}",
                    f"--seed-file={munge / 'seed'}",
                ],
            ),
            ("slurmctld", [shutil.which("slurmctld") or "slurmctld", "-D", "-i", "-f", conf]),
            ("slurmd", [shutil.which("slurmd") or "slurmd", "-D", "-f", conf]),
        ]
        pid_file = w / "daemons.json"
        spec = {"daemons": daemons, "logs": str(w / "log"), "pids": str(pid_file)}
        self.reaper = subprocess.Popen(
            [sys.executable, "-c", REAPER, json.dumps(spec)],
            env=self.env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.reaper.poll() is not None:
                raise SlurmError(f"Slurm's daemons exited at start; see {w / 'log'}")
            state = subprocess.run(
                ["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True
            ).stdout.strip()
            if state == "idle":
                # The reaper wrote the daemons' pids before any of them could answer.
                self.daemon_pids = json.loads(pid_file.read_text())
                return time.perf_counter() - started
            if time.monotonic() > deadline:
                raise SlurmError(
                    f"Slurm's node not idle after {timeout_s:g}s (state {state!r}); see {w / 'log'}"
                )
            time.sleep(0.2)

    def pids(self) -> dict[str, int]:
        named = {f"slurm-{n}": p for n, p in self.daemon_pids.items()}
        if self.reaper is not None:
            # Its reaped-children CPU is that of the job steps (and of daemons that already ended).
            named["slurm-steps"] = self.reaper.pid
        return named

    def stop(self) -> None:
        if self.reaper is None or self.reaper.poll() is not None:
            return
        self.reaper.send_signal(signal.SIGTERM)
        try:
            self.reaper.wait(30)
        except subprocess.TimeoutExpired:
            for pid in self.daemon_pids.values():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.reaper.kill()
            self.reaper.wait()

    # ---- jobs ----------------------------------------------------------------------------------------

    def submit(self, names: Sequence[str], concurrency: int) -> list[SlurmSubmission]:
        """``sbatch --wrap true`` once per name, ``concurrency`` at a time; each call timed."""
        out_dir = self.workdir / "out"
        env = self.env

        def one(name: str) -> SlurmSubmission:
            sub = SlurmSubmission(name)
            started = time.perf_counter()
            done = subprocess.run(
                ["sbatch", "--parsable", "-J", name, "--wrap", "true"],
                cwd=out_dir,
                env=env,
                capture_output=True,
                text=True,
            )
            sub.latency_ms = (time.perf_counter() - started) * 1000.0
            if done.returncode != 0:
                sub.error = done.stderr.strip()[-300:] or f"sbatch exited {done.returncode}"
            else:
                try:
                    sub.job_id = int(done.stdout.strip().split(";")[0])
                except ValueError:
                    sub.error = f"unexpected sbatch output {done.stdout.strip()!r}"
            return sub

        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="sbatch") as pool:
            return list(pool.map(one, names))

    def wait_done(
        self, job_ids: Sequence[int], timeout_s: float, poll_interval_s: float
    ) -> tuple[dict[int, SlurmJob], float | None]:
        """Poll the controller's log until every job is done; (the jobs, the monotonic time it was seen)."""
        wanted = set(job_ids)
        deadline = time.monotonic() + timeout_s
        while True:
            jobs = parse_controller_log(self.controller_log.read_text(errors="replace"))
            if all(jobs.get(i) is not None and jobs[i].completed_ms is not None for i in wanted):
                return {i: jobs[i] for i in wanted}, time.monotonic()
            if time.monotonic() > deadline:
                return {i: jobs[i] for i in wanted if i in jobs}, None
            time.sleep(poll_interval_s)
