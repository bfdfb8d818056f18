from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pai_common.embedded import ServerProcess, start_nats


@pytest.fixture
def fresh_nats(tmp_path: Path) -> Iterator[ServerProcess]:
    """A NATS server of the test's own, so streams and consumers start empty."""
    server = start_nats(tmp_path)
    yield server
    server.stop()
