"""``pai-sim`` end to end on the example files, and the comparison benchmark."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from pai_scheduler.sim.cli import main
from pai_scheduler.sim.engine import ARRIVED_LEVELS

REPO = Path(__file__).resolve().parents[4]
EXAMPLES = REPO / "examples" / "sim"
CLUSTER = EXAMPLES / "cluster-8x8.yaml"
WORKLOAD = EXAMPLES / "jobs-500.csv"

STATS = {"avg", "p50", "p95"}
JOB_FIELDS = {
    "jobs_total",
    "jobs_completed",
    "jobs_running",
    "jobs_rejected",
    "jobs_unplaced",
    "jct_s",
    "queueing_delay_s",
}
FIELDS = JOB_FIELDS | {
    "cluster",
    "workload",
    "nodes",
    "policy",
    "departures",
    "capacity_gpus",
    "gpu_allocation_ratio",
    "gpu_allocation_ratio_while_arriving",
    "gpu_held_ratio",
    "gpu_held_ratio_while_arriving",
    "gpu_nodes",
    "cpu_only_nodes",
    "preemptions",
    "decision_latency_ms",
    "span_s",
    "per_vc",
    "wall_s",
    "makespan_s",
    "guaranteed_rigid",
}


def _check_job_fields(d: dict[str, object]) -> None:
    assert JOB_FIELDS <= set(d)
    for key in ("jct_s", "queueing_delay_s"):
        assert set(d[key]) == STATS  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", ["first-fit", "quota-only"])
def test_cli_writes_every_field(tmp_path: Path, policy: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.json"
    rc = main(["--cluster", str(CLUSTER), "--workload", str(WORKLOAD), "--policy", policy, "--out", str(out)])
    assert rc == 0
    m = json.loads(out.read_text())
    assert set(m) == FIELDS
    _check_job_fields(m)
    assert m["policy"] == policy and m["departures"] is True
    assert m["jobs_total"] == 500 and m["jobs_completed"] == 500 and m["capacity_gpus"] == 64
    assert m["jct_s"]["avg"] > 0 and m["jct_s"]["p50"] <= m["jct_s"]["p95"]
    assert set(m["per_vc"]) == {"vc-a", "vc-b", "vc-c"}
    for vc in m["per_vc"].values():
        _check_job_fields(vc)
    assert sum(vc["jobs_total"] for vc in m["per_vc"].values()) == 500
    assert 0 < m["gpu_allocation_ratio"] <= 1
    assert set(m["decision_latency_ms"]) == {"p50", "p99", "calls"}
    assert 0 < m["decision_latency_ms"]["p50"] <= m["decision_latency_ms"]["p99"]
    assert m["wall_s"] > 0
    assert "500/500 completed" in capsys.readouterr().out


def test_cli_no_departures_reports_ratios_by_arrived_demand(tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    inventory = EXAMPLES / "inventory-8x8.csv"
    # An inventory has one VC, "default"; the workload names three, which only a policy without VCs accepts.
    args = ["--cluster", str(inventory), "--workload", str(WORKLOAD), "--policy", "first-fit"]
    assert main([*args, "--no-departures", "--out", str(out)]) == 0
    m = json.loads(out.read_text())
    assert set(m) == FIELDS | {
        "allocation_ratio_by_arrived",
        "held_ratio_by_arrived",
        "fragmentation_by_arrived",
        "final_allocation_ratio",
        "final_held_ratio",
        "final_fragmentation",
    }
    ratios = m["allocation_ratio_by_arrived"]
    assert list(ratios) == ["0.5", "0.6", "0.7", "0.8", "0.9", "1.0", "1.1", "1.2", "1.3"]
    assert len(ratios) == len(ARRIVED_LEVELS)
    assert all(isinstance(v, float) and 0 < v <= 1 for v in ratios.values())  # the example reaches 130%
    assert m["jobs_completed"] == 0 and m["jobs_unplaced"] > 0
    assert m["jobs_running"] + m["jobs_unplaced"] == 500
    assert set(m["per_vc"]) == {"vc-a", "vc-b", "vc-c"}  # the workload's VCs, whatever the cluster's


def test_cli_reports_a_bad_workload_with_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "jobs.csv"
    lines = WORKLOAD.read_text().splitlines()
    lines[3] = lines[3].replace(",vc-", ",,vc-", 1)  # one field too many on line 4
    bad.write_text("\n".join(lines) + "\n")
    rc = main(["--cluster", str(CLUSTER), "--workload", str(bad), "--out", str(tmp_path / "m.json")])
    assert rc == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "line 4: 11 fields" in err
    assert not (tmp_path / "m.json").exists()


def test_cli_refuses_an_unknown_policy_and_a_bad_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--workload", str(WORKLOAD), "--out", str(tmp_path / "m.json")]
    assert main(["--cluster", str(CLUSTER), "--policy", "magic", *args]) == 2
    assert "unknown policy 'magic'" in capsys.readouterr().err
    broken = tmp_path / "c.yaml"
    broken.write_text("physicalCluster: [1, 2]\n")
    assert main(["--cluster", str(broken), *args]) == 2
    assert "physicalCluster must be a mapping" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "pai_scheduler.sim", "--cluster", str(CLUSTER)),
            *("--workload", str(WORKLOAD), "--policy", "first-fit", "--out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["jobs_total"] == 500


def _load_benchmark(name: str) -> ModuleType:
    # A benchmark imports its neighbours (benchmarks/machine.py) as a script run from there would.
    if str(REPO / "benchmarks") not in sys.path:
        sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sim_compare_table_and_record_append_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    compare = _load_benchmark("sim_compare")
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\nearlier section\n")
    monkeypatch.setattr(compare, "RESULTS_FILE", results)
    assert compare.main(["--record"]) == 0
    out = capsys.readouterr().out
    assert "| figure | first-fit | best-fit | whole-gpu | quota-only | hived | hived-plain" in out
    figures = json.loads(out.strip().splitlines()[-1])
    assert {"first-fit", "quota-only"} <= set(figures)
    assert figures["first-fit"]["fill"]["allocation_ratio_by_arrived"]["1.0"] is not None
    text = results.read_text()
    assert text.startswith("# Benchmark results\n\nearlier section\n")
    assert "— sim_compare" in text and "Machine: " in text and "no departures: jobs not placed" in text


def test_sim_workload_writes_a_replayable_csv(tmp_path: Path) -> None:
    gen = _load_benchmark("sim_workload")
    out = tmp_path / "w.csv"
    assert gen.main(["--jobs", "40", "--seed", "3", "--vcs", "vc-a:1,vc-b:1", "--out", str(out)]) == 0
    first = out.read_text()
    assert gen.main(["--jobs", "40", "--seed", "3", "--vcs", "vc-a:1,vc-b:1", "--out", str(out)]) == 0
    assert out.read_text() == first and len(first.splitlines()) == 41
    assert main(["--cluster", str(CLUSTER), "--workload", str(out), "--out", str(tmp_path / "m.json")]) == 0
