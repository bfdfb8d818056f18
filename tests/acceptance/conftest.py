"""The acceptance suite's platform: one `pai up` process tree for the whole session, driven from outside."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.harness import JobLedger, RunningPlatform, running_platform

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def pai(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    with running_platform(tmp_path_factory.mktemp("pai-up")) as platform:
        yield platform


@pytest.fixture(scope="module")
def ledger(pai: RunningPlatform) -> Iterator[JobLedger]:
    """Register each submitted job with ``ledger.expect(key, state...)``; checked when the module ends."""
    book = JobLedger()
    yield book
    with pai.client() as client:
        wrong = book.check(client)
    assert not wrong, "jobs ended in states their tests did not expect:\n" + "\n".join(wrong)


@pytest.fixture(scope="session")
def confignfs(pai: RunningPlatform, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `confignfs` storage OpenPAI's mnist example mounts (its teamwise_storage), defined once per
    platform as its cluster would define it: a `local` storage on a folder the tests read back."""
    folder = tmp_path_factory.mktemp("confignfs")
    with pai.client() as admin:
        created = admin.post(
            "/api/v2/storages", json={"name": "confignfs", "type": "local", "data": {"path": str(folder)}}
        )
        assert created.status_code == 201, created.text
    return folder
