"""``pai-diagnose``: one JSON object on stdout, logs read from the end, precise errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pai_diagnosis.cli import main, read_tail
from pai_diagnosis.matcher import MAX_LOG_BYTES

KEYS = {"code", "name", "type", "behavior", "reaction", "matched", "explanation", "suggestion"}


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, json.loads(out if rc == 0 else err)


def test_a_log_is_diagnosed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "job.log"
    log.write_text("epoch 3\nRuntimeError: CUDA error: device-side assert triggered\nmore\n")
    rc, out = _run(capsys, "--exit-code", "1", "--log", str(log))
    assert rc == 0 and KEYS <= set(out)
    assert (out["code"], out["name"], out["reaction"]) == (
        303,
        "ContainerCudaDeviceSideAssert",
        "NEVER_RETRY",
    )
    assert out["matched"] == "RuntimeError: CUDA error: device-side assert triggered"


def test_signal_and_gpu_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "job.log"
    log.write_text("")
    rc, out = _run(capsys, "--exit-code", "-9", "--signal", "9", "--log", str(log))
    assert (rc, out["code"], out["matched"], out["behavior"]) == (0, 137, None, "TRANSIENT")
    gpu = tmp_path / "gpu.json"
    gpu.write_text(json.dumps({"0": {"xid": [79]}}))
    rc, out = _run(capsys, "--exit-code", "1", "--log", str(log), "--gpu-info", str(gpu))
    assert (rc, out["code"]) == (0, 320)
    assert "Xid 79" in str(out["explanation"])


def test_pod_reasons_and_another_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "job.log"
    log.write_text("license server unreachable\n")
    rc, out = _run(capsys, "--exit-code", "137", "--log", str(log), "--container-reason", "OOMKilled")
    assert (rc, out["code"]) == (0, -1200)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "version: 1\nspec:\n"
        "- {code: 0, phrase: Succeeded}\n- {code: 255, phrase: Unknown}\n- {code: 256, phrase: Odd}\n"
        "- {code: -8000, phrase: Negative}\n"
        "- {code: 450, phrase: LicenseDown, reaction: ALWAYS_RETRY,\n"
        "   pattern: {runtimeContainerPatterns: [{userLogRegex: '(?i)license server unreachable'}]}}\n"
    )
    rc, out = _run(capsys, "--exit-code", "1", "--log", str(log), "--spec", str(spec))
    assert (rc, out["code"], out["reaction"]) == (0, 450, "ALWAYS_RETRY")


def test_errors_are_one_json_line_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _run(capsys, "--exit-code", "1", "--log", str(tmp_path / "missing.log"))
    assert rc == 2 and "missing.log" in str(err["error"])
    log = tmp_path / "job.log"
    log.write_text("x")
    gpu = tmp_path / "gpu.json"
    gpu.write_text("{not json")
    rc, err = _run(capsys, "--exit-code", "1", "--log", str(log), "--gpu-info", str(gpu))
    assert rc == 2 and "not JSON" in str(err["error"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\nspec: [{code: 1, phrase: X,"
        " pattern: {runtimeContainerPatterns: [{userLogRegex: '(a)\\1'}]}}]\n"
    )
    rc, err = _run(capsys, "--exit-code", "1", "--log", str(log), "--spec", str(bad))
    assert rc == 2 and "RE2" in str(err["error"])


def test_only_the_end_of_a_big_log_is_read(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    with log.open("wb") as f:
        f.write(b"ModuleNotFoundError: No module named 'early'\n")
        f.write(b"." * (MAX_LOG_BYTES + 1000))
        f.write(b"\nthe end\n")
    tail = read_tail(log)
    assert len(tail) == MAX_LOG_BYTES and tail.endswith(b"the end\n")
    assert b"early" not in tail


def test_the_installed_console_script(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    log.write_text("OSError: [Errno 28] No space left on device\n")
    script = Path(sys.executable).parent / "pai-diagnose"
    done = subprocess.run(
        [str(script), "--exit-code", "1", "--log", str(log)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["name"] == "ContainerNoSpaceLeftOnDevice"
