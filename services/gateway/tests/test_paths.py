"""Where OpenPAI's clients address the API: under /rest-server and with trailing slashes."""

from __future__ import annotations

import pytest

from pai_gateway.paths import canonical_path


@pytest.mark.parametrize(
    ("path", "canonical"),
    [
        ("/rest-server/api/v2/users/", "/api/v2/users"),
        ("/rest-server/api/v2", "/api/v2"),
        ("/api/v2/users/alice/group/", "/api/v2/users/alice/group"),
        ("/api/v2/jobs", "/api/v2/jobs"),
        # The web portal's paths are its own: left as they are.
        ("/jobs/", "/jobs/"),
        ("/", "/"),
        ("/rest-server/", "/rest-server/"),
        ("/rest-server/portal", "/rest-server/portal"),
    ],
)
def test_canonical_path(path: str, canonical: str) -> None:
    assert canonical_path(path) == canonical
