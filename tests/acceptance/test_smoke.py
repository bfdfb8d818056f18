"""The README's first path, as a newcomer takes it: `pai up`, submit the example, read its output."""

from __future__ import annotations

import time
from pathlib import Path

from tests.acceptance.harness import JobLedger, RunningPlatform, wait_final

ROOT = Path(__file__).resolve().parents[2]


def test_hello_world_through_http_and_cli(pai: RunningPlatform, ledger: JobLedger) -> None:
    name = f"hello-{int(time.time() * 1000)}"
    text = (ROOT / "examples" / "hello-world.yaml").read_text()
    text = text.replace("name: hello-world", f"name: {name}", 1)
    with pai.client() as client:
        response = client.post("/api/v2/jobs", content=text, headers={"Content-Type": "text/yaml"})
        assert response.status_code == 202, response.text
        key = ledger.expect(f"{pai.admin_user}~{name}", "SUCCEEDED")
        detail = wait_final(client, key)
    assert detail["jobStatus"]["state"] == "SUCCEEDED", detail["jobStatus"]
    listed = pai.cli("job", "list", check=True)
    assert name in listed.stdout
    logs = pai.cli("job", "logs", name, check=True)
    assert logs.stdout.strip(), "the job's stdout is empty"
