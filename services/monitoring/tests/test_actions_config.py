"""The alert action configuration: what it accepts, what it refuses (precisely), what each alert gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from pai_common.errors import InvalidParametersError
from pai_monitoring.actions_config import ActionSpec, load, parse

REPO = Path(__file__).resolve().parents[3]


def test_rules_add_their_actions_in_order_once_each() -> None:
    config = parse(
        {
            "rules": [
                {"match": {"alertname": "PaiJobGpuIdle"}, "actions": ["email-user", {"tag-jobs": "idle"}]},
                {
                    "match": {"alertname": ["PaiJobGpuIdle", "PaiGpuBad"]},
                    "actions": ["email-user", "stop-jobs"],
                },
                {"match": {}, "actions": [{"webhook": "https://ext.example/hook"}]},
            ]
        }
    )
    assert config.actions_for({"alertname": "PaiJobGpuIdle", "job_name": "a~b"}) == [
        ActionSpec("email-user"),
        ActionSpec("tag-jobs", "idle"),
        ActionSpec("stop-jobs"),
        ActionSpec("webhook", "https://ext.example/hook"),
    ]
    assert config.actions_for({"alertname": "PaiGpuBad"}) == [
        ActionSpec("email-user"),
        ActionSpec("stop-jobs"),
        ActionSpec("webhook", "https://ext.example/hook"),
    ]
    assert config.actions_for({"alertname": "Other"}) == [ActionSpec("webhook", "https://ext.example/hook")]
    assert parse(None).actions_for({"alertname": "x"}) == []


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"rule": []}, "one key, rules"),
        ({"rules": {}}, "rules must be a list"),
        ({"rules": [{"match": {}}]}, "rules[0]: must be a mapping with match and actions"),
        ({"rules": [{"match": [], "actions": ["stop-jobs"]}]}, "rules[0].match"),
        ({"rules": [{"match": {}, "actions": []}]}, "rules[0].actions: must be a non-empty list"),
        ({"rules": [{"match": {}, "actions": ["reboot"]}]}, "unknown action 'reboot'"),
        ({"rules": [{"match": {}, "actions": ["tag-jobs"]}]}, "tag-jobs needs a value"),
        ({"rules": [{"match": {}, "actions": [{"tag-jobs": "a,b"}]}]}, "no comma"),
        ({"rules": [{"match": {}, "actions": [{"stop-jobs": "now"}]}]}, "stop-jobs takes no value"),
        ({"rules": [{"match": {}, "actions": [{"cordon-nodes": "x"}]}]}, "takes no value or 'drain'"),
        ({"rules": [{"match": {}, "actions": [{"webhook": "ftp://x/y"}]}]}, "http(s) URL"),
        ({"rules": [{"match": {}, "actions": [{"a": 1, "b": 2}]}]}, "a mapping of one name"),
    ],
)
def test_bad_configurations_are_refused_with_where_and_why(doc: object, message: str) -> None:
    with pytest.raises(InvalidParametersError) as err:
        parse(doc, "actions.yaml")
    assert message in err.value.message
    assert err.value.message.startswith("actions.yaml")


def test_the_shipped_example_is_valid() -> None:
    config = load(REPO / "deploy" / "monitoring" / "alert-actions.yaml")
    assert config.rules, "the shipped example configures no rule"
    idle = config.actions_for({"alertname": "PaiJobGpuIdle", "job_name": "a~b", "username": "a"})
    assert ActionSpec("stop-jobs") in idle


def test_an_unreadable_file_says_which(tmp_path: Path) -> None:
    with pytest.raises(InvalidParametersError, match="cannot read the alert actions"):
        load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [\n")
    with pytest.raises(InvalidParametersError, match="cannot read the alert actions"):
        load(bad)
