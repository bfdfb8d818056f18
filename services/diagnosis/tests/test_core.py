"""Exit classification: success, deaths by signal, and every other code."""

from __future__ import annotations

import signal as sig

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pai_diagnosis.core import KNOWN, USER_COMMAND_FAILED, classify

SIGNALS = [
    (sig.SIGINT, "ContainerSigIntReceived"),
    (sig.SIGABRT, "ContainerSigAbrtReceived"),
    (sig.SIGKILL, "ContainerSigKillReceived"),
    (sig.SIGSEGV, "ContainerSigSegvReceived"),
    (sig.SIGTERM, "ContainerSigTermReceived"),
]


def test_zero_is_success() -> None:
    d = classify(0)
    assert (d.spec_code, d.phrase, d.failure_type) == (0, "Succeeded", "Succeeded")
    assert d.message


@pytest.mark.parametrize(("signum", "phrase"), SIGNALS)
def test_a_shell_style_signal_exit_gets_its_phrase(signum: int, phrase: str) -> None:
    d = classify(128 + signum)
    assert (d.spec_code, d.phrase, d.failure_type) == (128 + signum, phrase, "Unknown")
    # The same code with the signal reported alongside (as the runtime does) is the same diagnosis.
    assert classify(128 + signum, signum) == d


@pytest.mark.parametrize(("signum", "phrase"), SIGNALS)
@pytest.mark.parametrize("raw", [-1, -9, -255])
def test_a_negative_exit_with_a_signal_is_read_as_that_signal(signum: int, phrase: str, raw: int) -> None:
    d = classify(raw, signum)
    assert (d.spec_code, d.phrase) == (128 + signum, phrase)


def test_sigkill_message_says_killed() -> None:
    assert "SIGKILL" in classify(137).message
    assert "SIGTERM" in classify(143).message
    assert "SIGSEGV" in classify(139).message


@pytest.mark.parametrize("code", [1, 2, 3, 127, 128, 255, 200, 210, 220, -1, -7])
def test_any_other_code_is_a_user_command_error(code: int) -> None:
    d = classify(code)
    assert d.phrase == USER_COMMAND_FAILED == "UserCommandExitWithError"
    assert d.failure_type == "Unknown"
    assert d.spec_code == code
    assert str(code) in d.message


@given(st.integers(-(2**31), 2**31).filter(lambda c: c not in KNOWN), st.none() | st.integers(0, 64))
def test_unknown_codes_are_reported_with_their_number(code: int, signum: int | None) -> None:
    d = classify(code, signum)
    if signum is not None and code < 0:
        assert d.spec_code == 128 + signum
    else:
        assert d.spec_code == code
        assert d.phrase == USER_COMMAND_FAILED
    if d.phrase == USER_COMMAND_FAILED:
        assert d.failure_type == "Unknown"
        assert str(d.spec_code) in d.message


def test_a_signal_does_not_override_a_normal_exit_code() -> None:
    # A process that exited on its own has no signal; a stray signal value must not turn success into death.
    assert classify(0, sig.SIGKILL).phrase == "Succeeded"
    assert classify(1, sig.SIGKILL).phrase == USER_COMMAND_FAILED


def test_diagnosis_is_immutable() -> None:
    d = classify(1)
    with pytest.raises(AttributeError):
        d.phrase = "x"  # type: ignore[misc]
