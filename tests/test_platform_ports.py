"""The HTTP ports `pai up` picks itself (the gateway's with ``port=0``, the portal's always) are bound by
`pai up` the moment they are picked and handed to their servers by descriptor.

A port picked free and bound later by the server can be taken in between by any process on the machine: CI
once lost two tests to a portal that met "address already in use" on the port `pai up` had just picked.
Here a thief tries each named port right before its server is started, the worst moment."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pai_cli.platform import Child, Platform


@pytest.fixture
def thieves(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int]]]:
    """Before each process starts, bind and listen on the HTTP port its environment names, if possible.
    Yields the (process, port) pairs a thief got."""
    got: list[tuple[str, int]] = []
    held: list[socket.socket] = []
    start = Child.start

    def start_after_a_thief(child: Child) -> None:
        for key in ("PAI_GATEWAY_PORT", "PAI_PORTAL_PORT"):
            if key not in child.env:
                continue
            thief = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                thief.bind(("127.0.0.1", int(child.env[key])))
            except OSError as exc:
                assert exc.errno == errno.EADDRINUSE
                thief.close()
                continue
            thief.listen()
            held.append(thief)
            got.append((child.name, int(child.env[key])))
        start(child)

    monkeypatch.setattr(Child, "start", start_after_a_thief)
    yield got
    for thief in held:
        thief.close()


def _free(port: int) -> bool:
    """Whether nothing listens on the port (connections of the past, in TIME_WAIT, do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_no_process_can_take_a_port_the_platform_picked(
    tmp_path: Path, thieves: list[tuple[str, int]]
) -> None:
    p = Platform(data_dir=tmp_path, nodes=1, gpus_per_node=1, port=0)
    p.start()
    try:
        assert thieves == []
        portal_port = int(p.children["portal"].env["PAI_PORTAL_PORT"])
        assert p.children["gateway"].env["PAI_PORTAL_URL"] == f"http://127.0.0.1:{portal_port}"
        assert httpx.get(f"{p.url}/api/v2/authn/info", timeout=10).json()["authn_type"] == "basic"
        # The portal, straight and through the gateway's relay on the API's origin.
        for url in (f"http://127.0.0.1:{portal_port}/login", f"{p.url}/login"):
            page = httpx.get(url, timeout=10)
            assert page.status_code == 200 and "Sign in" in page.text
        # A crashed server comes back on the same socket: the platform still holds it meanwhile.
        for name in ("portal", "gateway"):
            p.kill(name)
            assert not _free(portal_port if name == "portal" else p.port)
            p.restart(name)
        assert httpx.get(f"{p.url}/login", timeout=10).status_code == 200
    finally:
        p.stop()
    assert _free(p.port) and _free(portal_port)
