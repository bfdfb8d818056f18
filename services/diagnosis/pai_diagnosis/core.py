"""Exit classification, pure. The spine knows the codes below; the full exit spec with log patterns is
another piece of work and will replace ``KNOWN`` without changing ``classify``'s signature.
"""

from __future__ import annotations

from dataclasses import dataclass

from pai_common.contract.types import FailureType


@dataclass(frozen=True)
class Diagnosis:
    spec_code: int
    phrase: str
    failure_type: FailureType
    message: str


# code -> (phrase, failure type, explanation); numbers and phrases as OpenPAI's exit spec has them.
KNOWN: dict[int, tuple[str, FailureType, str]] = {
    0: ("Succeeded", "Succeeded", "the task's commands exited with 0"),
    130: ("ContainerSigIntReceived", "Unknown", "the task was interrupted (SIGINT)"),
    134: ("ContainerSigAbrtReceived", "Unknown", "the task aborted (SIGABRT)"),
    137: (
        "ContainerSigKillReceived",
        "Unknown",
        "the task was killed (SIGKILL), often for running out of memory",
    ),
    139: ("ContainerSigSegvReceived", "Unknown", "the task crashed with a segmentation fault (SIGSEGV)"),
    143: ("ContainerSigTermReceived", "Unknown", "the task was terminated (SIGTERM)"),
}
USER_COMMAND_FAILED = "UserCommandExitWithError"


def classify(exit_code: int, signal: int | None = None) -> Diagnosis:
    if signal is not None and exit_code < 0:
        exit_code = 128 + signal  # report a signal death the way a shell would
    known = KNOWN.get(exit_code)
    if known is not None:
        phrase, failure, message = known
        return Diagnosis(exit_code, phrase, failure, message)
    return Diagnosis(
        exit_code,
        USER_COMMAND_FAILED,
        "Unknown",
        f"the task's commands exited with {exit_code}; see the task's stderr",
    )
