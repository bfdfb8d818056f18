"""The portal's pure parts: sessions and CSRF, the simple job form, charts, token descriptions."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient

from pai_portal import charts, format, jobform, tokens
from pai_portal.api import ApiError, _error
from pai_portal.app import build_app
from pai_portal.pages.auth import MAX_REASON, sso_failure
from pai_portal.pages.cluster import BAD_GPUS_ANNOTATION, node_rows
from pai_portal.session import Session, SessionCodec, load_key
from pai_portal.settings import PortalSettings
from pai_portal.web import safe_next


def test_session_round_trip_and_tamper() -> None:
    codec = SessionCodec(Fernet.generate_key(), 3600)
    session = Session(user="ann", token="t0k", admin=True)
    value = codec.encode(session)
    assert "ann" not in value and "t0k" not in value  # encrypted, not only signed
    back = codec.decode(value)
    assert back is not None and (back.user, back.token, back.admin, back.csrf) == (
        "ann",
        "t0k",
        True,
        session.csrf,
    )
    assert codec.decode(value[:-4] + "AAAA") is None
    assert codec.decode(SessionCodec(Fernet.generate_key(), 3600).encode(session)) is None
    assert codec.decode("") is None and codec.decode(None) is None


def test_session_expires() -> None:
    key = Fernet.generate_key()
    value = SessionCodec(key, 60).encode(Session(user="ann", token="t"))
    stale = Fernet(key).decrypt(value.encode())  # re-encrypt the same payload as if made long ago
    old = Fernet(key).encrypt_at_time(stale, int(time.time()) - 120).decode()
    assert SessionCodec(key, 60).decode(old) is None


def test_csrf_check() -> None:
    session = Session()
    assert session.csrf_ok(session.csrf)
    assert not session.csrf_ok(None) and not session.csrf_ok("") and not session.csrf_ok(session.csrf + "x")
    assert Session().csrf != session.csrf


def test_notices_accumulate_and_are_taken_once() -> None:
    session = Session()
    session.flash("one", "error")
    session.flash("two", "error")
    assert session.take_notice() == ("one two", "error")
    assert session.take_notice() is None


def test_session_key_is_generated_once_private(tmp_path: Path) -> None:
    key = load_key("", tmp_path)
    assert load_key("", tmp_path) == key
    assert (tmp_path / "portal-session.key").stat().st_mode & 0o777 == 0o600
    with pytest.raises(ValueError):
        load_key("not-a-key", tmp_path)


@pytest.mark.parametrize(
    ("value", "safe"),
    [
        ("/jobs?x=1", "/jobs?x=1"),
        ("//evil.example", "/"),
        ("https://evil.example", "/"),
        ("/\\evil", "/"),
        (None, "/"),
    ],
)
def test_safe_next(value: str | None, safe: str) -> None:
    assert safe_next(value) == safe


def test_simple_form_writes_a_protocol() -> None:
    job = jobform.from_form(
        {
            "name": "train",
            "image": "pytorch/pytorch",
            "commands": "python a.py\n\n  python b.py  \n",
            "instances": "2",
            "gpu": "1",
            "memoryMB": "4096",
            "virtualCluster": "vc1",
            "parameters": "lr=0.1\nnot a pair\nepochs = 3",
        }
    )
    assert job.problems == []
    doc = yaml.safe_load(jobform.to_yaml(job))
    assert doc["name"] == "train" and doc["protocolVersion"] == 2
    assert doc["parameters"] == {"lr": "0.1", "epochs": "3"}
    role = doc["taskRoles"]["worker"]
    assert role["instances"] == 2 and role["commands"] == ["python a.py", "python b.py"]
    assert role["resourcePerInstance"] == {"gpu": 1, "cpu": 1, "memoryMB": 4096}
    assert doc["defaults"] == {"virtualCluster": "vc1"}


def test_simple_form_reports_bad_numbers() -> None:
    job = jobform.from_form({"name": "x", "instances": "two", "gpu": "-1"})
    assert job.problems == ["instances: 'two' is not a whole number", "gpu: must be at least 0"]


def test_clone_names_and_job_names() -> None:
    assert jobform.next_name("train-clone-ab12", "cd34") == "train-clone-cd34"
    assert len(jobform.next_name("x" * 300, "ab")) == 255
    text = jobform.clone_yaml({"name": "a", "secrets": {"k": "******"}}, "a-clone-1")
    assert yaml.safe_load(text)["name"] == "a-clone-1"
    assert jobform.job_name_of("name: hello\n") == "hello"
    assert jobform.job_name_of("a: [") is None


def test_charts_escape_their_labels() -> None:
    svg = charts.bar_chart("<b>", [charts.Segment("<script>", 2, "#000")])
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "&lt;b&gt;" in svg
    bar = charts.quota_bar("vc", guaranteed=4, used=6)
    assert "above quota: 2" in bar and 'role="img"' in bar


def test_format() -> None:
    assert format.when(0) == format.NONE
    assert format.when(1_700_000_000_000) == "2023-11-14 22:13:20 UTC"
    # A job event's firstTimestamp / lastTimestamp: the events table showed a dash for every event.
    assert format.when("2023-11-14T22:13:20.277Z") == "2023-11-14 22:13:20 UTC"
    assert format.when("2023-11-15T00:13:20+02:00") == "2023-11-14 22:13:20 UTC"
    assert format.when("yesterday") == format.when(None) == format.when(True) == format.NONE
    assert format.duration(1000, 62_000, 0) == "1m 1s"
    assert format.state_class("<x>") == "state-unknown"
    assert format.state_class("RUNNING") == "state-running"


def test_token_description_never_holds_the_token() -> None:
    payload = base64.urlsafe_b64encode(json.dumps({"jti": "abc", "iat": 10, "application": True}).encode())
    token = f"h.{payload.decode().rstrip('=')}.s"
    seen = tokens.describe(token, current="other")
    assert seen == {
        "id": "abc",
        "application": True,
        "issued_ms": 10_000,
        "expires_ms": None,
        "current": False,
    }
    assert token not in str(seen)
    assert tokens.claims("garbage") == {}


@pytest.mark.parametrize(
    ("mask", "shown"),
    [
        (12, "2,3"),
        (1, "0"),
        (0, "\u2013"),
        (None, "\u2013"),
        (-1, "\u2013"),
        (True, "\u2013"),
        (255, "0,1,2,3,4,5,6,7"),
    ],
)
def test_gpu_indexes_reads_openpais_bit_mask(mask: object, shown: str) -> None:
    assert format.gpu_indexes(mask) == shown


def test_sso_failure_keeps_the_reason_whole_on_one_line_and_short() -> None:
    shown = sso_failure("The identity provider refused the sign-in:\n  access_denied (no).")
    assert shown == (
        "Single sign-on failed: The identity provider refused the sign-in: access_denied (no). Sign in again."
    )
    assert sso_failure("") == "Single sign-on failed: no reason was given. Sign in again."
    long = sso_failure("x" * 5000)
    assert len(long) < MAX_REASON + 60 and "x" * (MAX_REASON - 1) + "…" in long
    # Markup is kept as text here: the template escapes it (tests/portal/test_portal_sso.py).
    assert "<b>" in sso_failure("<b>")


def test_node_rows_show_bad_gpus_from_the_apis_annotation() -> None:
    """`pai.platform/bad-gpus` is the name the gateway's node list writes (services/gateway k8s_views)."""
    assert BAD_GPUS_ANNOTATION == "pai.platform/bad-gpus"
    ready = {
        "metadata": {"name": "node-0", "annotations": {"pai.platform/bad-gpus": "1,3"}},
        "status": {
            "capacity": {"cpu": "32", "memory": "1024Mi", "nvidia.com/gpu": "4"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady"}],
        },
    }
    lost = {
        "metadata": {"name": "node-1"},
        "status": {"conditions": [{"type": "Ready", "status": "Unknown", "message": "not registered"}]},
    }
    first, second = node_rows([ready, lost])
    assert (first["name"], first["ready"], first["gpus"], first["bad_gpus"]) == ("node-0", True, "4", "1,3")
    assert (second["ready"], second["bad_gpus"]) == (False, "")


def test_a_busy_api_answer_tells_when_to_try_again(tmp_path: Path) -> None:
    busy = httpx.Response(
        429,
        headers={"Retry-After": "7"},
        json={"code": "TooManyRequestsError", "message": "Too many submit requests from ann; retry in 7 s."},
    )
    error = _error(busy)
    assert (error.status, error.code, error.retry_after_s) == (429, "TooManyRequestsError", 7)
    # An HTTP-date or a missing header gives no figure rather than a wrong one.
    dated = httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"})
    assert _error(dated).retry_after_s is None
    assert _error(httpx.Response(500, json={"code": "UnknownError", "message": "x"})).retry_after_s is None

    app = build_app(PortalSettings(portal_session_key=Fernet.generate_key().decode(), data_dir=tmp_path))

    @app.get("/busy")
    async def busy_page() -> None:
        raise error

    @app.get("/broken")
    async def broken_page() -> None:
        raise ApiError(500, "UnknownError", "internal error")

    with TestClient(app) as client:
        page = client.get("/busy")
        assert page.status_code == 429 and page.headers["Retry-After"] == "7"
        assert "retry in 7 s" in page.text and "wait 7 s before you try" in page.text
        other = client.get("/broken")
        assert other.status_code == 500 and "Retry-After" not in other.headers
        assert "before you try" not in other.text
