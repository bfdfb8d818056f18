"""The marketplace's rules, without I/O: field checks, visibility, edit rights, search and order; and the
shipped templates are the project's example jobs, word for word."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pai_common.errors import InvalidParametersError
from pai_marketplace import catalog
from pai_marketplace.shell import seed_templates

ROOT = Path(__file__).resolve().parents[3]
GOOD = "protocolVersion: 2\nname: x\ntaskRoles:\n  w:\n    instances: 1\n"


def test_clean_fields_on_create_reports_every_problem() -> None:
    with pytest.raises(InvalidParametersError) as err:
        catalog.clean_fields(
            {"name": " ", "tags": ["ok", "a,b"], "protocol": "- not a mapping", "visibility": "groups"},
            creating=True,
        )
    message = err.value.message
    assert "name: required" in message
    assert "'a,b'" in message
    assert "protocol: must be a YAML mapping" in message
    assert "groups: name at least one group" in message


def test_clean_fields_normalises() -> None:
    out = catalog.clean_fields(
        {"name": " Train ", "tags": ["gpu", "gpu", " cv "], "protocol": GOOD, "groups": ["b", "a", "a"]},
        creating=True,
    )
    assert out == {
        "name": "Train",
        "description": "",
        "tags": ["gpu", "cv"],
        "protocol": GOOD,
        "visibility": "all",
        "groups": ["a", "b"],
    }
    # An update touches only what it names.
    assert catalog.clean_fields({"description": "new"}, creating=False) == {"description": "new"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("protocolVersion: 1\ntaskRoles: {w: {}}\n", "protocolVersion must be 2"),
        ("protocolVersion: 2\n", "taskRoles must name"),
        ("a: [", "not YAML"),
        ("x: " + "y" * (300 * 1024), "larger than 256 KiB"),
    ],
)
def test_check_protocol(text: str, problem: str) -> None:
    assert any(problem in p for p in catalog.check_protocol(text))


def test_visibility_and_edit_rights() -> None:
    shared = {"_id": "a", "author": "ann", "visibility": "all", "groups": []}
    team = {"_id": "b", "author": "ann", "visibility": "groups", "groups": ["team"]}
    assert catalog.visible(shared, "bob", False, [])
    assert not catalog.visible(team, "bob", False, ["default"])
    assert catalog.visible(team, "bob", False, ["default", "team"])
    assert catalog.visible(team, "ann", False, [])
    assert catalog.visible(team, "root", True, [])
    assert catalog.may_edit(team, "ann", False) and catalog.may_edit(team, "root", True)
    assert not catalog.may_edit(team, "bob", False)
    assert not catalog.may_edit({"author": catalog.PLATFORM_AUTHOR}, "ann", False)


def test_search_and_order() -> None:
    docs = [
        {"_id": "1", "name": "ResNet", "description": "images", "tags": ["CV"], "author": "ann",
         "stars": ["x"], "useCount": 9, "updatedTime": 1},
        {"_id": "2", "name": "BERT", "description": "text", "tags": ["nlp"], "author": "bob",
         "stars": ["x", "y"], "useCount": 1, "updatedTime": 3},
        {"_id": "3", "name": "hello", "description": "", "tags": [], "author": "ann",
         "stars": [], "useCount": 0, "updatedTime": 2},
    ]  # fmt: skip
    assert [d["_id"] for d in docs if catalog.matches(d, "IMAGE", "", "")] == ["1"]
    assert [d["_id"] for d in docs if catalog.matches(d, "", "cv", "")] == ["1"]
    assert [d["_id"] for d in docs if catalog.matches(d, "", "", "ann")] == ["1", "3"]
    assert [d["_id"] for d in docs if catalog.matches(d, "bob", "", "")] == ["2"]
    assert [d["_id"] for d in catalog.ordered(docs, "stars")] == ["2", "1", "3"]
    assert [d["_id"] for d in catalog.ordered(docs, "uses")] == ["1", "2", "3"]
    assert [d["_id"] for d in catalog.ordered(docs, "updated")] == ["2", "3", "1"]
    assert [d["_id"] for d in catalog.ordered(docs, "name")] == ["2", "3", "1"]


def test_view_hides_who_starred() -> None:
    doc = {"_id": "t", "name": "n", "author": "ann", "stars": ["bob", "eve"], "protocol": GOOD}
    seen = catalog.view(doc, "bob", False)
    assert (seen["starCount"], seen["starred"], seen["editable"]) == (2, True, False)
    assert "stars" not in seen and "eve" not in str(seen)
    assert "protocol" not in catalog.view(doc, "bob", False, with_protocol=False)


def test_new_ids_are_slugs_and_unique() -> None:
    first, second = catalog.new_id("My Job: v2!"), catalog.new_id("My Job: v2!")
    assert first.startswith("my-job-v2-") and first != second


def test_seeds_are_the_shipped_examples() -> None:
    seeds = seed_templates()
    assert len(seeds) >= 4
    for seed in seeds:
        catalog.clean_fields(seed, creating=True)
        example = ROOT / seed["example"]
        if not example.exists():
            pytest.fail(f"{seed['id']}: names {seed['example']}, which does not exist")
        assert seed["protocol"] == example.read_text(), f"{seed['id']} drifted from {seed['example']}"
        assert yaml.safe_load(seed["protocol"])["protocolVersion"] == 2
