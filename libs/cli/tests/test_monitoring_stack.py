"""`pai up`'s Prometheus and Alertmanager, with the real binaries (Debian's prometheus packages): the
configuration it writes scrapes the processes that announced themselves in run/targets/*.json with the
shipped rules, and Alertmanager posts alerts to the alert handler's webhook with the bearer token it was
given, read from a file."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pai_cli.monitoring_stack import (
    RULES_SOURCE,
    MonitoringStack,
    MonitoringUnavailable,
    alertmanager_token,
    find_binary,
    prometheus_config,
)

GUARD_S = 90.0  # a hang guard: Prometheus scrapes every 15 s


class Recorder:
    def __init__(self) -> None:
        self.posts: list[tuple[str, str, Any]] = []

    def server(self) -> ThreadingHTTPServer:
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = b'# TYPE pai_probe gauge\npai_probe{node="n0"} 1\n'
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                posts.append((self.path, self.headers.get("Authorization", ""), json.loads(raw)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


@pytest.fixture
def target() -> Iterator[tuple[Recorder, int]]:
    recorder = Recorder()
    server = recorder.server()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield recorder, server.server_address[1]
    server.shutdown()


def until(check: Any, what: str) -> Any:
    deadline = time.monotonic() + GUARD_S
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not seen within {GUARD_S:g}s"
        time.sleep(0.5)


def test_without_a_login_alertmanager_needs_a_kept_token(tmp_path: Path) -> None:
    """Basic login off (`pai up` could not log in) and no token kept: a clear error naming the file."""
    kept = tmp_path / "alertmanager-token"
    with pytest.raises(MonitoringUnavailable, match=f"basic login is off.*{re.escape(str(kept))}"):
        alertmanager_token("http://127.0.0.1:9", None, kept)


def test_written_configuration_names_the_targets_and_rules(tmp_path: Path) -> None:
    stack = MonitoringStack(tmp_path, "http://127.0.0.1:9")
    config = yaml.safe_load(stack.write_config().read_text())
    assert config == prometheus_config(tmp_path, True, None)
    assert config["scrape_configs"][0]["file_sd_configs"][0]["files"] == [
        str(tmp_path / "run" / "targets" / "*.json")
    ]
    copied = sorted(p.name for p in (tmp_path / "monitoring" / "rules").iterdir())
    assert copied == sorted(p.name for p in RULES_SOURCE.glob("*.rules.yml")) and copied


def test_writing_again_never_leaves_a_file_missing_and_drops_a_stale_rule(tmp_path: Path) -> None:
    stack = MonitoringStack(tmp_path, "http://127.0.0.1:9")
    stack.write_config()
    rules = tmp_path / "monitoring" / "rules"
    (rules / "gone.rules.yml").write_text("groups: []\n")
    wanted = [stack.prometheus_yml, *(rules / p.name for p in RULES_SOURCE.glob("*.rules.yml"))]
    missing: list[Path] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            missing.extend(p for p in wanted if not p.is_file() or not p.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(50):  # `pai up` writes it at start and again when --monitoring starts Prometheus
            stack.write_config(alerting=True)
    finally:
        done.set()
        reader.join()
    assert not missing, f"a reader found {sorted(set(missing))} missing or empty while it was written"
    assert sorted(p.name for p in rules.iterdir()) == sorted(p.name for p in wanted[1:])


def test_prometheus_scrapes_announced_processes_and_alertmanager_calls_the_handler(
    tmp_path: Path, target: tuple[Recorder, int]
) -> None:
    assert find_binary(("prometheus",)) and find_binary(("prometheus-alertmanager", "alertmanager")), (
        "apt-get install prometheus prometheus-alertmanager (requirements-system.txt)"
    )
    recorder, port = target
    run = tmp_path / "run" / "targets"
    run.mkdir(parents=True)
    # What a platform process writes when it starts (pai_common.service).
    announced = [{"targets": [f"127.0.0.1:{port}"], "labels": {"service": "runtime", "process": "n0"}}]
    (run / "n0.json").write_text(json.dumps(announced))
    stack = MonitoringStack(tmp_path, f"http://127.0.0.1:{port}")
    stack.start("secret-token-of-the-test")
    processes = [s.proc for s in stack.servers]
    try:
        assert (tmp_path / "monitoring" / "alertmanager-token").stat().st_mode & 0o777 == 0o600
        prometheus, alertmanager = stack.urls["prometheus"], stack.urls["alertmanager"]

        def scraped() -> dict[str, Any] | None:
            targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
            up = [t for t in targets if t["health"] == "up"]
            return up[0] if up else None

        seen = until(scraped, "the announced target scraped")
        assert seen["labels"]["service"] == "runtime" and seen["labels"]["process"] == "n0"
        rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
        assert sum(len(g["rules"]) for g in rules) == 10
        managers = httpx.get(f"{prometheus}/api/v1/alertmanagers", timeout=5).json()["data"]
        assert managers["activeAlertmanagers"][0]["url"].startswith(alertmanager)

        alert = [{"labels": {"alertname": "PaiProbe", "job_name": "a~b"}, "annotations": {"summary": "x"}}]
        assert httpx.post(f"{alertmanager}/api/v2/alerts", json=alert, timeout=5).status_code == 200
        path, authorization, body = until(lambda: recorder.posts and recorder.posts[0], "the webhook call")
        assert path == "/api/v2/alerts/webhook"
        assert authorization == "Bearer secret-token-of-the-test"
        assert body["version"] == "4" and body["alerts"][0]["labels"]["job_name"] == "a~b"
    finally:
        stack.stop()
    assert len(processes) == 2 and all(p.poll() is not None for p in processes) and not stack.servers
