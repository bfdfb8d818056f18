"""Schemathesis over the gateway's OpenAPI, and Hypothesis bodies on every route that takes one.

A platform of this module's own runs as `pai up` runs it. Every operation the gateway publishes in its
OpenAPI document is called with inputs drawn from the document, valid and invalid ones, once as an admin
and once as an ordinary user. Every answer must be: not a 5xx; within a bounded time (no hang); the shape
the document gives for its status; and, for an error, OpenAPI's ``{code, message}``.

Most write routes read their body themselves (OpenPAI's bodies are looser than a schema), so the document
gives no body to draw from: the second test sends any JSON, deeply nested JSON, oversized bodies, bytes that
are not UTF-8 and wrong content types to each of them, with the same checks.

Left out, on purpose: the live job stream (it stays open while the job lives), logout for both roles and,
as the admin, the routes that change the admin's own credentials (token revocation, password, admin
flag), which would only lock the fuzzer out. The user's run draws valid inputs only (what a user sends to
a route it may not use is refused before its input is read). ``PAI_API_FUZZ_EXAMPLES`` sets valid examples
per operation (default 2), ``PAI_API_FUZZ_NEGATIVE_EXAMPLES`` invalid ones (default 1: drawing an input that
breaks the document costs Hypothesis many rejected draws, most of this module's time on a 2-core machine;
raise both for a longer run, e.g. 50 and 25).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from pai_cli.platform import Platform
from tests.fuzz import json_strategies as js

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("PAI_API_FUZZ_EXAMPLES", "2"))
NEGATIVE_EXAMPLES = int(os.environ.get("PAI_API_FUZZ_NEGATIVE_EXAMPLES", "1"))
PASSWORD = "api-fuzz-admin-pw"
USER, USER_PASSWORD = "fuzzer", "fuzzer-password-1"
# A hang guard: an answer that takes longer is a failure (the platform is loaded, hence generous).
ANSWER_GUARD_S = 30.0
ADMIN_ONLY_EXCLUDED = re.compile(r"(/logout|/tokens/\{token\}|/token/\{token\}|/password|/admin)$")
ALWAYS_EXCLUDED = re.compile(r"/stream$")
# Ending the fuzzer's own session would leave the rest of its run testing nothing but 401.
SESSION_ENDERS = re.compile(r"/logout$")


@dataclass
class Fuzzing:
    platform: Platform
    admin: dict[str, str]
    user: dict[str, str]


def _login(url: str, user: str, password: str) -> dict[str, str]:
    r = httpx.post(
        f"{url}/api/v2/authn/basic/login", json={"username": user, "password": password}, timeout=60
    )
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


@pytest.fixture(scope="module")
def fuzzing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzing]:
    platform = Platform(
        data_dir=tmp_path_factory.mktemp("api-fuzz"),
        nodes=1,
        gpus_per_node=2,
        port=0,
        # Fuzzing submits and lists far more than a person does: the per-user limits would answer most of
        # it with 429 and hide the routes behind them.
        extra_env={
            "PAI_ADMIN_PASSWORD": PASSWORD,
            "PAI_RATE_LIMIT_SUBMIT_PER_HOUR": "0",
            "PAI_RATE_LIMIT_LIST_PER_MIN": "0",
        },
    )
    platform.start()
    try:
        admin = _login(platform.url, "admin", PASSWORD)
        created = httpx.post(
            f"{platform.url}/api/v2/users",
            json={"username": USER, "password": USER_PASSWORD},
            headers=admin,
            timeout=60,
        )
        assert created.status_code == 201, created.text
        yield Fuzzing(platform, admin, _login(platform.url, USER, USER_PASSWORD))
    finally:
        platform.stop()


def openpai_error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every error is OpenPAI's {code, message} (405 included), never a framework's own shape."""
    if response.status_code < 400:
        return None
    body = json.loads(response.content or b"null")
    if body is None and response.status_code == 404 and case.operation.path.endswith("/job-attempts"):
        return True  # OpenPAI answers a missing job's attempts with 404 and the body null; so do we
    shaped = isinstance(body, dict) and all(isinstance(body.get(k), str) for k in ("code", "message"))
    assert shaped, f"{response.status_code} without OpenPAI's error shape: {response.content[:300]!r}"
    return True


def _handler_key(operation: Any) -> tuple[str, str]:
    """(the route function, the method): OpenPAI's aliases (/api/v1/..., /user vs /users, a trailing
    slash) reach the same function, which is fuzzed once, through its first path."""
    method = operation.method.lower()
    suffix = re.sub(r"\W", "_", operation.path) + "_" + method
    operation_id = str(operation.definition.raw.get("operationId", ""))
    name = operation_id[: -len(suffix)] if operation_id.endswith(suffix) else operation_id
    return name or operation.path, method


def _canonical_first(operation: Any) -> tuple[bool, bool, bool, str]:
    path = operation.path
    return (path.startswith("/api/v1"), "/user/" in path or "/group/" in path, path.endswith("/"), path)


def _fuzz(
    fuzzing: Fuzzing,
    headers: dict[str, str],
    excluded: re.Pattern[str] | None,
    examples: dict[GenerationMode, int],
) -> None:
    """Each route function, valid and invalid inputs; every failing one is reported, not only the first."""
    schema = schemathesis.openapi.from_url(f"{fuzzing.platform.url}/openapi.json")
    failures: list[str] = []
    operations = sorted((r.ok() for r in schema.get_all_operations()), key=_canonical_first)
    seen: set[tuple[str, str]] = set()
    for operation in operations:
        if ALWAYS_EXCLUDED.search(operation.path) or (excluded and excluded.search(operation.path)):
            continue
        if _handler_key(operation) in seen:
            continue
        seen.add(_handler_key(operation))
        for mode, count in examples.items():

            @settings(
                max_examples=count,
                deadline=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
                # Bounded for ./dev test: a failure is reported as found, not shrunk to a smaller one.
                phases=[Phase.explicit, Phase.generate],
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def call(case: Any) -> None:
                response = case.call(headers=headers, timeout=ANSWER_GUARD_S)
                case.validate_response(
                    response,
                    checks=[not_a_server_error, response_schema_conformance],
                    additional_checks=[openpai_error_shape],
                )

            try:
                call()
            except Unsatisfiable:
                # Nothing the document describes can be made invalid (no parameters, or only free text):
                # the negative side of this operation is the body test below.
                assert mode is GenerationMode.NEGATIVE, operation.label
            except Exception as exc:
                failures.append(f"{operation.label} ({mode.value}): {str(exc)[:600]}")
    assert len(seen) >= 40, sorted(seen)
    assert not failures, "\n\n".join(failures)


def test_every_operation_as_an_admin(fuzzing: Fuzzing) -> None:
    both = {GenerationMode.POSITIVE: EXAMPLES, GenerationMode.NEGATIVE: NEGATIVE_EXAMPLES}
    _fuzz(fuzzing, fuzzing.admin, ADMIN_ONLY_EXCLUDED, both)


def test_every_operation_as_a_user(fuzzing: Fuzzing) -> None:
    # Most of what a user sends is refused before its input is looked at (admin routes, others' things):
    # valid inputs test that refusal; the admin's run above tests the inputs themselves.
    _fuzz(fuzzing, fuzzing.user, SESSION_ENDERS, {GenerationMode.POSITIVE: EXAMPLES})


# ---- bodies the document does not describe ------------------------------------------------------------


def _write_routes(document: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for path, operations in document["paths"].items():
        if ALWAYS_EXCLUDED.search(path) or ADMIN_ONLY_EXCLUDED.search(path):
            continue
        for method in operations:
            if method in ("post", "put", "patch", "delete"):
                found.append((method.upper(), path))
    return sorted(found)


def _deep(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    kind = draw(st.sampled_from(["json", "json", "deep", "huge", "binary", "yaml", "form"]))
    if kind == "json":
        return json.dumps(draw(js.anything())).encode(), "application/json"
    if kind == "deep":
        return _deep(draw(st.sampled_from([64, 1000, 100_000]))), "application/json"
    if kind == "huge":
        return b'{"data": "' + b"x" * (2 * 1024 * 1024) + b'"}', "application/json"
    if kind == "binary":
        return draw(st.binary(min_size=1, max_size=256)), draw(
            st.sampled_from(["application/json", "text/yaml", "application/octet-stream"])
        )
    if kind == "yaml":
        return b"a: &a [*a, *a]\nb: !!python/object:os.system ['echo pwned']\n", "text/yaml"
    return b"username=x&password=%ff%fe", "application/x-www-form-urlencoded"


def test_any_body_on_every_route_that_takes_one(fuzzing: Fuzzing) -> None:
    url = fuzzing.platform.url
    document = httpx.get(f"{url}/openapi.json", timeout=30).json()
    routes = _write_routes(document)
    assert len(routes) > 20, routes
    parameter = st.sampled_from(["admin", USER, "nobody", "x" * 300, "..%2F..%2Fetc", "a~b", "1", "%00"])

    @settings(
        max_examples=max(len(routes), 8 * EXAMPLES),
        deadline=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
    )
    @given(route=st.sampled_from(routes), body=bodies(), value=parameter, as_admin=st.booleans())
    def check(route: tuple[str, str], body: tuple[bytes, str], value: str, as_admin: bool) -> None:
        method, path = route
        concrete = re.sub(r"\{[^}]+\}", value, path)
        headers = {**(fuzzing.admin if as_admin else fuzzing.user), "Content-Type": body[1]}
        with httpx.Client(base_url=url, timeout=ANSWER_GUARD_S) as client:
            response = client.request(method, concrete, content=body[0], headers=headers)
        assert response.status_code < 500, (
            f"{method} {concrete}: {response.status_code} {response.text[:300]}"
        )
        if response.status_code >= 400:
            error = response.json()
            assert set(error) >= {"code", "message"}, f"{method} {concrete}: {response.text[:300]}"
        if len(body[0]) > 1024 * 1024:
            assert response.status_code == 413, f"{method} {concrete} took {len(body[0])} bytes"

    check()
    # Still standing: the admin's session works and the user is who they were.
    me = httpx.get(f"{url}/api/v2/users/{USER}", headers=fuzzing.admin, timeout=30)
    assert me.status_code == 200 and me.json()["admin"] is False, me.text


def test_the_fuzzed_routes_are_every_route(fuzzing: Fuzzing) -> None:
    """What the fuzz leaves out is exactly what its docstring says, nothing more."""
    document = httpx.get(f"{fuzzing.platform.url}/openapi.json", timeout=30).json()
    left_out = sorted(
        p for p in document["paths"] if ALWAYS_EXCLUDED.search(p) or ADMIN_ONLY_EXCLUDED.search(p)
    )
    allowed = ("/stream", "/logout", "/password", "/admin", "/{token}")
    assert left_out and all(p.endswith(allowed) for p in left_out), left_out
    assert len(document["paths"]) - len(left_out) >= 60
