"""Rights from groups, what others see of a user, group ACL checks: the pure core."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pai_auth import rights
from pai_common.errors import InvalidParametersError


def group(
    name: str, admin: bool = False, vcs: list[str] | None = None, storages: list[str] | None = None
) -> Any:
    acls = {"admin": admin, "virtualClusters": vcs or [], "storageConfigs": storages or []}
    return {"_id": name, "description": "", "externalName": "", "extension": {"acls": acls}}


GROUPS = {
    "admingroup": group("admingroup", admin=True),
    "default": group("default", vcs=["default"], storages=["local"]),
    "team": group("team", vcs=["vc1", "vc2"], storages=["nfs"]),
    "empty": {"_id": "empty"},
}


@pytest.mark.parametrize(
    ("grouplist", "admin", "vcs", "storages"),
    [
        ([], False, (), ()),
        (["default"], False, ("default",), ("local",)),
        (["default", "team"], False, ("default", "vc1", "vc2"), ("local", "nfs")),
        (["admingroup"], True, (), ()),
        (["gone", "default"], False, ("default",), ("local",)),
        (["empty"], False, (), ()),
    ],
)
def test_rights_are_the_union_of_the_groups(
    grouplist: list[str], admin: bool, vcs: tuple[str, ...], storages: tuple[str, ...]
) -> None:
    r = rights.rights_of(grouplist, GROUPS)
    assert r.admin is admin
    assert r.virtual_clusters == vcs
    assert set(r.storage_configs) == set(storages)


def test_admins_may_use_everything_others_only_what_is_granted() -> None:
    admin = rights.rights_of(["admingroup"], GROUPS)
    user = rights.rights_of(["default"], GROUPS)
    assert admin.may_use_vc("anything") and admin.may_use_storage("anything")
    assert user.may_use_vc("default") and not user.may_use_vc("vc1")
    assert user.may_use_storage("local") and not user.may_use_storage("nfs")


@given(st.lists(st.sampled_from([*sorted(GROUPS), "missing"]), max_size=6))
def test_adding_a_group_never_takes_a_right_away(grouplist: list[str]) -> None:
    base = rights.rights_of(grouplist, GROUPS)
    for extra in GROUPS:
        more = rights.rights_of([*grouplist, extra], GROUPS)
        assert set(base.virtual_clusters) <= set(more.virtual_clusters)
        assert set(base.storage_configs) <= set(more.storage_configs)
        assert more.admin or not base.admin


@pytest.mark.parametrize(
    ("extension", "message"),
    [
        ({"acls": []}, "extension.acls must be an object"),
        ({"acls": {"admin": "yes"}}, "extension.acls.admin"),
        ({"acls": {"virtualClusters": "vc1"}}, "extension.acls.virtualClusters"),
        ({"acls": {"storageConfigs": [1]}}, "extension.acls.storageConfigs"),
        ({"acls": {"storageConfigs": [""]}}, "extension.acls.storageConfigs"),
    ],
)
def test_malformed_acls_are_refused(extension: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidParametersError, match=message):
        rights.normalize_acls(extension)


def test_acls_are_completed_and_deduplicated() -> None:
    out = rights.normalize_acls({"acls": {"virtualClusters": ["b", "a", "b"]}, "other": 1})
    assert out == {"acls": {"admin": False, "virtualClusters": ["a", "b"], "storageConfigs": []}, "other": 1}


def test_merge_is_recursive_and_leaves_its_inputs_alone() -> None:
    base = {"a": {"x": 1, "y": [1]}, "b": 2}
    patch = {"a": {"y": [2], "z": 3}, "c": 4}
    assert rights.merge(base, patch) == {"a": {"x": 1, "y": [2], "z": 3}, "b": 2, "c": 4}
    assert base == {"a": {"x": 1, "y": [1]}, "b": 2}


USER = {
    "_id": "alice",
    "password_hash": "$argon2id$v=19$secret",
    "grouplist": ["default", "team"],
    "email": "a@x",
    "extension": {
        "jobSSH": {"key": "PRIVATE", "pubKey": "PUBLIC"},
        "sshKeys": [{"title": "t", "value": "v"}],
    },
}


def test_the_user_sees_their_own_private_key() -> None:
    view = rights.user_view(USER, GROUPS, "alice")
    assert view["extension"]["jobSSH"]["key"] == "PRIVATE"
    assert "password_hash" not in view and "$argon2" not in str(view)


@pytest.mark.parametrize("reader", ["bob", "admin", ""])
def test_others_never_see_the_private_key(reader: str) -> None:
    view = rights.user_view(USER, GROUPS, reader)
    assert view == {
        "username": "alice",
        "grouplist": ["default", "team"],
        "email": "a@x",
        "extension": {
            "jobSSH": {"key": "******", "pubKey": "PUBLIC"},
            "sshKeys": [{"title": "t", "value": "v"}],
        },
        "admin": False,
        "virtualCluster": ["default", "vc1", "vc2"],
        "storageConfig": ["local", "nfs"],
    }
    assert USER["extension"]["jobSSH"]["key"] == "PRIVATE"  # type: ignore[index]


@given(
    st.recursive(
        st.none() | st.text() | st.integers(), lambda c: st.dictionaries(st.text(), c), max_leaves=10
    )
)
def test_masking_never_fails_and_hides_the_key(extension: Any) -> None:
    ext = {"jobSSH": extension} if isinstance(extension, dict) else {"x": extension}
    masked = rights.mask_private(ext)
    if isinstance(extension, dict) and "key" in extension:
        assert masked["jobSSH"]["key"] == rights.MASK


def test_an_admin_is_shown_every_virtual_cluster() -> None:
    view = rights.user_view({"_id": "root", "grouplist": ["admingroup"]}, GROUPS, "root")
    assert view["admin"] and view["virtualCluster"] == ["default", "vc1", "vc2"]


@pytest.mark.parametrize(
    ("admin", "vcs", "grouplist"),
    [
        (False, [], ["default"]),
        (False, ["vc1", "default", "vc1"], ["default", "vc1"]),
        (True, ["vc1"], ["default", "vc1", "admingroup"]),
    ],
)
def test_basic_mode_maps_admin_and_vcs_to_groups(admin: bool, vcs: list[str], grouplist: list[str]) -> None:
    assert rights.grouplist_for(admin, vcs) == grouplist


def test_oversized_extensions_are_refused() -> None:
    rights.check_extension_size({"a": "x" * 1000})
    with pytest.raises(InvalidParametersError, match="extension exceeds"):
        rights.check_extension_size({"a": "x" * (rights.MAX_EXTENSION_BYTES + 1)})


def test_group_view_is_openpai_shaped() -> None:
    assert rights.group_view(GROUPS["team"]) == {
        "groupname": "team",
        "description": "",
        "externalName": "",
        "extension": {"acls": {"admin": False, "virtualClusters": ["vc1", "vc2"], "storageConfigs": ["nfs"]}},
    }
