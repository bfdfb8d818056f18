"""The harness's own robustness: `pai up` started on a port another process took after it was picked
(other test sessions share this machine) is started again on another port, not failed. (Here `pai up`
finds the port taken before it starts anything; a port taken later, before the gateway binds it, ends
the gateway during start-up: services/gateway/tests/test_gateway_bind.py.)"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.acceptance.harness import _port_taken, start_platform, stop_platform

pytestmark = pytest.mark.e2e


def test_a_port_taken_before_the_gateway_binds_it_is_left_for_another(tmp_path: Path) -> None:
    data = tmp_path / "pai"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        taken = stranger.getsockname()[1]
        platform = start_platform(data, nodes=1, gpus_per_node=1, port=taken)
        try:
            # The first start met the stranger.
            assert _port_taken(data), "the first start did not meet the taken port"
            assert not platform.url.endswith(f":{taken}")
            with platform.client() as client:
                info = client.get("/api/v2/info")
                me = client.get("/api/v2/users/me")
            assert info.status_code == 200 and info.json()["name"] == "PAI RESTful API"
            assert me.status_code == 200 and me.json()["username"] == platform.admin_user
        finally:
            stop_platform(platform.proc)
