"""Alerts as kept and shown: Alertmanager's shape, OpenPAI's visibility rule, late notifications."""

from __future__ import annotations

from pai_common.contract.rpc import ReceivedAlert
from pai_monitoring import alerts


def alert(**labels: str) -> ReceivedAlert:
    return ReceivedAlert(
        status="firing",
        labels={"alertname": "PaiJobGpuIdle", **labels},
        annotations={"summary": "idle"},
        starts_at="2026-12-01T10:00:00Z",
        generator_url="http://prometheus/graph",
        fingerprint="abc123",
    )


def test_view_has_alertmanagers_alert_shape() -> None:
    doc = alerts.stored(alert(job_name="alice~train", username="alice"), "pai", 1000)
    view = alerts.view(doc)
    assert set(view) == {
        "labels",
        "annotations",
        "startsAt",
        "endsAt",
        "generatorURL",
        "status",
        "receivers",
        "fingerprint",
    }
    assert view["status"] == {"state": "active", "silencedBy": [], "inhibitedBy": []}
    assert view["endsAt"] == alerts.ZERO_TIME and view["receivers"] == ["pai"]
    assert view["fingerprint"] == "abc123"


def test_users_see_only_alerts_about_their_jobs() -> None:
    mine = {"alertname": "x", "job_name": "alice~a", "username": "alice"}
    node = {"alertname": "PaiNodeLost", "node": "node-1"}
    assert alerts.visible_to(mine, "alice", admin=False)
    assert not alerts.visible_to(mine, "bob", admin=False)
    assert not alerts.visible_to(node, "alice", admin=False)
    assert alerts.visible_to(node, "root", admin=True)


def test_fingerprint_falls_back_to_the_labels() -> None:
    a = alert(job_name="a~b").model_copy(update={"fingerprint": ""})
    b = alert(job_name="a~b").model_copy(update={"fingerprint": ""})
    c = alert(job_name="a~c").model_copy(update={"fingerprint": ""})
    assert alerts.fingerprint(a) == alerts.fingerprint(b) != alerts.fingerprint(c)


def test_a_late_notification_of_an_earlier_firing_changes_nothing() -> None:
    stored = {"starts_at": "2026-12-01T10:00:00Z"}
    assert alerts.newer_or_same(stored, alert())
    earlier = alert().model_copy(update={"starts_at": "2026-12-01T09:00:00Z"})
    assert not alerts.newer_or_same(stored, earlier)
    assert alerts.newer_or_same(None, earlier)


def test_owner_and_node_come_from_openpais_labels_too() -> None:
    assert alerts.job_owner({"job_name": "alice~a"}) == "alice"
    assert alerts.job_owner({"username": "bob", "job_name": "alice~a"}) == "bob"
    assert alerts.job_owner({"alertname": "x"}) is None
    assert alerts.node_of({"node_name": "n1"}) == "n1"
    assert alerts.node_of({"node": "n2", "node_name": "n1"}) == "n2"
