"""Which event loop a service process runs on (event_loop.py)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from pai_common import event_loop


async def _loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_services_run_on_uvloop_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(event_loop.ENV, raising=False)
    assert event_loop.chosen() == "uvloop"
    assert event_loop.run(_loop_module()).startswith("uvloop")
    monkeypatch.setenv(event_loop.ENV, "asyncio")
    assert event_loop.chosen() == "asyncio"
    assert event_loop.run(_loop_module()).startswith("asyncio")


def test_the_standard_loop_where_uvloop_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(event_loop.ENV, raising=False)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert event_loop.chosen() == "asyncio"
    assert event_loop.run(_loop_module()).startswith("asyncio")


def test_a_setting_that_names_no_usable_loop_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(event_loop.ENV, "asynco")
    with pytest.raises(event_loop.EventLoopSettingError, match="PAI_EVENT_LOOP='asynco': expected one of"):
        event_loop.chosen()
    monkeypatch.setenv(event_loop.ENV, " UVLOOP ")
    assert event_loop.chosen() == "uvloop"
    monkeypatch.setitem(sys.modules, "uvloop", None)
    with pytest.raises(event_loop.EventLoopSettingError, match="uvloop is not installed"):
        event_loop.chosen()
