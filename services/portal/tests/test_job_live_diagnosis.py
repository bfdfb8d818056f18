"""The job page's "Why it ended" card is marked as a success only for a job that succeeded.

The spec the jobs API gives a finished job is the job's (type SUCCEEDED for a job whose tasks ended well,
as the hello-world example shows), or a task's exit spec entry (USER_SUCCESS for exit code 0): the job's
state decides, not the spec's type."""

from __future__ import annotations

import re

import pytest

from pai_portal.app import templates


def card_classes(state: str, spec_type: str) -> list[str]:
    html = (
        templates()
        .get_template("job_live.html")
        .render(
            job_url=lambda key, tail="": f"/jobs/{key}{tail}",
            key="admin~job",
            status={
                "state": state,
                "appExitSpec": {
                    "type": spec_type,
                    "code": 0 if state == "SUCCEEDED" else 1,
                    "phrase": "Succeeded" if state == "SUCCEEDED" else "Failed",
                    "reason": "why",
                    "reaction": "NEVER_RETRY",
                },
            },
            tasks=[],
        )
    )
    found = re.search(r'<section aria-labelledby="diag-h" class="([^"]*)"', html)
    assert found, "no diagnosis card"
    return found.group(1).split()


@pytest.mark.parametrize(
    ("state", "spec_type", "succeeded"),
    [
        ("SUCCEEDED", "SUCCEEDED", True),
        ("SUCCEEDED", "USER_SUCCESS", True),
        ("FAILED", "USER_FAILURE", False),
        ("FAILED", "PLATFORM_FAILURE", False),
        ("STOPPED", "UNKNOWN", False),
    ],
)
def test_only_a_succeeded_job_gets_the_success_border(state: str, spec_type: str, succeeded: bool) -> None:
    classes = card_classes(state, spec_type)
    assert "diagnosis" in classes
    assert ("succeeded" in classes) is succeeded
