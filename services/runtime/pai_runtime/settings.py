from __future__ import annotations

import socket

from pydantic import Field

from pai_common.settings import Settings


def _default_node() -> str:
    return socket.gethostname()


class RuntimeSettings(Settings):
    node_name: str = Field(default_factory=_default_node, pattern=r"^[A-Za-z0-9_-]+$")
    host_ip: str = "127.0.0.1"
    # Used only where NVML finds no GPU: how many simulated GPUs this node declares.
    simulated_gpus: int = Field(default=4, ge=0, le=64)
    force_simulated: bool = False
    kill_grace_s: float = Field(default=10.0, ge=0)
    heartbeat_s: float = Field(default=5.0, gt=0)
