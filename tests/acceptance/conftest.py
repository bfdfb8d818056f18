"""The acceptance suite's platform: one `pai up` process tree for the whole session, driven from outside."""

from __future__ import annotations

from collections.abc import Iterator

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
