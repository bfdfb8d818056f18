"""The gateway's exit-spec admin routes in front of the real diagnosis service (real NATS, real
MongoDB-wire server): only admins read or change the spec, and a bad upload changes nothing."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import yaml
from fastapi import Request

from pai_common.bus import Bus
from pai_common.contract.rpc import Identity
from pai_common.embedded import ServerProcess
from pai_common.service import ServiceApp
from pai_common.settings import Settings
from pai_diagnosis.shell import Diagnoser
from pai_diagnosis.spec import builtin_spec
from pai_gateway.http_app import build_http_app
from pai_gateway.settings import GatewaySettings

QUOTA_SPEC = """version: 1
spec:
- code: 451
  phrase: StorageQuotaExceeded
  type: USER_FAILURE
  behavior: PERMANENT
  reaction: NEVER_RETRY
  reason: "The team's storage quota is used up."
  solution: ["Free space in the team's share"]
  pattern:
    runtimeContainerPatterns:
    - userLogRegex: 'quota exceeded on /mnt/team'
"""


def diagnosis_app(nats: ServerProcess, mongo: ServerProcess, data: Path) -> ServiceApp:
    app = ServiceApp("diagnosis", Settings(nats_url=nats.url, mongo_url=mongo.url, data_dir=data))
    Diagnoser(app)
    app.name = f"diag{uuid.uuid4().hex[:8]}"  # a database of this test's own
    return app


class _Caller:
    """The gateway's identity resolver, answering from the header alone (the auth service is not under
    test here); everything else — the bus, the RPC, the diagnosis service, its database — is real."""

    async def resolve(self, request: Request) -> Identity:
        who = request.headers.get("authorization", "").removeprefix("Bearer ")
        return Identity(username=who, admin=who == "root", virtual_clusters=["default"])


async def test_gateway_routes_for_admins(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    app = diagnosis_app(fresh_nats, mongo_server, tmp_path)
    await app.start()
    try:
        http = build_http_app(lambda: fresh_bus, GatewaySettings(nats_url=fresh_nats.url))
        http.state.resolver = _Caller
        transport = httpx.ASGITransport(app=http)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as api:
            root = {"Authorization": "Bearer root"}
            path = "/api/v2/diagnosis/exit-spec"
            assert (await api.get(path, headers={"Authorization": "Bearer bob"})).status_code == 403
            r = await api.get(path, headers=root)
            assert r.status_code == 200 and r.json()["source"] == "builtin"
            r = await api.put(path, headers=root, content="version: 1\nspec: []\n")
            assert r.status_code == 400 and r.json()["code"] == "InvalidParametersError"
            r = await api.put(path, params={"mode": "overlay"}, headers=root, content=QUOTA_SPEC)
            assert r.status_code == 200, r.text
            assert (r.json()["revision"], r.json()["updatedBy"]) == (1, "root")
            doc = yaml.safe_load(QUOTA_SPEC)
            assert r.json()["spec"]["spec"][-1] == doc["spec"][0]
            r = await api.get(path, params={"builtin": "true"}, headers=root)
            assert r.json()["spec"] == builtin_spec().document
            assert (await api.get(path, headers=root)).json()["source"] == "uploaded"
            r = await api.delete(path, headers=root)
            assert r.status_code == 200 and r.json()["revision"] == 2
            # Reset: the shipped spec, said to be so (the portal shows "as shipped").
            assert (r.json()["source"], r.json()["spec"]) == ("builtin", builtin_spec().document)
            assert (await api.get(path, headers=root)).json()["source"] == "builtin"
            assert (await api.put(path, headers=root, content=b"\xff\xfe")).status_code == 400
            assert (
                await api.put(path, params={"mode": "reset"}, headers=root, content="x")
            ).status_code == 400
    finally:
        await app.stop()
