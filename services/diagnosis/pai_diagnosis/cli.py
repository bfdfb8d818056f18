"""``pai-diagnose``: diagnose one exit outside the platform (a CI log, an old job) and print one JSON object.

    pai-diagnose --exit-code N [--signal S] --log FILE [--gpu-info FILE] [--platform-log FILE]
                 [--pod-reason R] [--container-reason R] [--container-message M] [--spec FILE]

Only the last 10 MB of each log file are read, from the end, whatever the file's size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pai_common.errors import InvalidParametersError
from pai_diagnosis.matcher import MAX_LOG_BYTES, ContainerStatus, PodStatus, TaskEnd, diagnose
from pai_diagnosis.spec import builtin_spec, parse_spec

MAX_GPU_INFO_BYTES = 1 << 20


def read_tail(path: Path, limit: int = MAX_LOG_BYTES) -> bytes:
    """The last ``limit`` bytes of a file, read by seeking from the end (a 50 GB log costs 10 MB)."""
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - limit))
        return f.read(limit)


def _gpu_info(path: Path) -> Any:
    if path.stat().st_size > MAX_GPU_INFO_BYTES:
        raise InvalidParametersError(f"{path}: GPU info larger than {MAX_GPU_INFO_BYTES} bytes")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidParametersError(f"{path}: GPU info is not JSON: {exc}") from exc


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pai-diagnose", description="Classify one task exit by the exit spec.")
    p.add_argument("--exit-code", type=int, required=True, help="the process's exit code")
    p.add_argument("--signal", type=int, help="the signal that ended it, if any")
    p.add_argument("--log", type=Path, required=True, help="the task's log (stdout and stderr)")
    p.add_argument("--platform-log", type=Path, help="the runtime's own log, if separate")
    p.add_argument(
        "--gpu-info", type=Path, help='JSON GPU health at exit: {"0": {"xid": [79], "ecc_double": 1}}'
    )
    p.add_argument("--pod-reason", help="Kubernetes pod status reason (Evicted, NodeLost...)")
    p.add_argument(
        "--container-reason", help="container termination reason (OOMKilled, ContainerCannotRun...)"
    )
    p.add_argument("--container-message", help="container termination message")
    p.add_argument("--spec", type=Path, help="an exit spec file to use instead of the shipped one")
    return p


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    spec = parse_spec(args.spec.read_text(encoding="utf-8")) if args.spec else builtin_spec()
    pod = None
    if args.pod_reason or args.container_reason or args.container_message:
        container = ContainerStatus(
            reason=args.container_reason, message=args.container_message, exit_code=args.exit_code
        )
        pod = PodStatus(reason=args.pod_reason, containers=(container,))
    user_log = read_tail(args.log)
    end = TaskEnd(
        exit_code=args.exit_code,
        signal=args.signal,
        user_log=user_log,
        platform_log=read_tail(args.platform_log) if args.platform_log else user_log,
        pod=pod,
        gpu_health=_gpu_info(args.gpu_info) if args.gpu_info else None,
    )
    return diagnose(spec, end).summary()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        result = run(argv)
    except (OSError, InvalidParametersError) as exc:
        message = exc.message if isinstance(exc, InvalidParametersError) else str(exc)
        print(json.dumps({"error": message}), file=sys.stderr)
        return 2
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
