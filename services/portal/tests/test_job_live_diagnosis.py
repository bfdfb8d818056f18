"""The job page's "Why it ended" card is marked as a success or as a failure by its exit spec's type."""

from __future__ import annotations

import re

import pytest

from pai_portal.app import templates


def card_classes(spec_type: str) -> list[str]:
    html = (
        templates()
        .get_template("job_live.html")
        .render(
            job_url=lambda key, tail="": f"/jobs/{key}{tail}",
            key="admin~job",
            status={
                "appExitSpec": {
                    "type": spec_type,
                    "code": 0 if spec_type == "USER_SUCCESS" else 1,
                    "phrase": "Succeeded" if spec_type == "USER_SUCCESS" else "Failed",
                    "reason": "why",
                    "reaction": "NEVER_RETRY",
                }
            },
            tasks=[],
        )
    )
    found = re.search(r'<section aria-labelledby="diag-h" class="([^"]*)"', html)
    assert found, "no diagnosis card"
    return found.group(1).split()


@pytest.mark.parametrize(
    ("spec_type", "succeeded"),
    [("USER_SUCCESS", True), ("USER_FAILURE", False), ("PLATFORM_FAILURE", False), ("UNKNOWN", False)],
)
def test_only_a_success_gets_the_success_border(spec_type: str, succeeded: bool) -> None:
    classes = card_classes(spec_type)
    assert "diagnosis" in classes
    assert ("succeeded" in classes) is succeeded
