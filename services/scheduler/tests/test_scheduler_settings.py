"""The backfill-protection setting: on by default (the core's starvation guard); `off` disables it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pai_scheduler.hived.allocator import PROTECT_HEAD_AFTER_S
from pai_scheduler.shell import SchedulerSettings


def test_protection_is_on_by_default_with_the_core_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAI_PROTECT_HEAD_AFTER_S", raising=False)
    assert SchedulerSettings().protect_head_after_s == PROTECT_HEAD_AFTER_S == 24 * 3600


@pytest.mark.parametrize(("value", "expected"), [("off", None), ("60", 60.0), ("1.5", 1.5)])
def test_the_environment_sets_or_disables_it(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: float | None
) -> None:
    monkeypatch.setenv("PAI_PROTECT_HEAD_AFTER_S", value)
    assert SchedulerSettings().protect_head_after_s == expected


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("PAI_PROTECT_HEAD_AFTER_S", value)
    with pytest.raises(ValidationError):
        SchedulerSettings()
