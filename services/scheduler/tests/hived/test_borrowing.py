"""Fair sharing of idle quota: borrowing within limits, by weight, reclaim with a grace, teams."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pai_scheduler import vc_views
from pai_scheduler.hived import (
    Allocated,
    ConfigError,
    GangRequest,
    HivedAllocator,
    Member,
    Preempting,
    Queued,
    Rejected,
    parse_hived_config,
)
from pai_scheduler.hived.audit import audit


def config(vcs: dict[str, Any], nodes: int = 4, grace: float = 300.0) -> dict[str, Any]:
    return {
        "physicalCluster": {
            "skuTypes": {"V100": {"gpu": 1, "cpu": 8, "memory": "65536Mi"}},
            "cellTypes": {
                "NODE": {"childCellType": "V100", "childCellNumber": 4, "isNodeLevel": True},
                "RACK": {"childCellType": "NODE", "childCellNumber": nodes},
            },
            "physicalCells": [
                {"cellType": "RACK", "cellChildren": [{"cellAddress": f"n{i}"} for i in range(nodes)]}
            ],
        },
        "virtualClusters": {
            name: {"virtualCells": [{"cellType": "RACK.NODE", "cellNumber": n}], **extra}
            for name, (n, extra) in vcs.items()
        },
        "sharing": {"reclaimGraceSeconds": grace},
    }


def gang(key: str, vc: str, gpus: int = 4, prio: int = 100, pods: int = 1) -> GangRequest:
    return GangRequest(key, vc, prio, (Member("w", pods, gpus),))


def nodes_of(d: Any) -> set[str]:
    return {p.node for p in d.placements}


def checked(a: HivedAllocator) -> HivedAllocator:
    assert audit(a) == []
    snap = json.loads(json.dumps(a.snapshot()))
    b = HivedAllocator.restore(a.config, snap)
    assert b.snapshot() == snap and audit(b) == [] and b.borrowing() == a.borrowing()
    return b


def test_a_busy_vc_borrows_idle_quota_within_its_limit_and_the_lender_reclaims_it() -> None:
    a = HivedAllocator(parse_hived_config(config({"busy": (1, {"borrowingLimit": 4}), "idle": (3, {})})))
    assert isinstance(a.submit(gang("own", "busy")), Allocated)
    borrowed = a.submit(gang("extra", "busy"))
    assert isinstance(borrowed, Allocated) and nodes_of(borrowed) != {"n0"}
    # Its limit is 4 GPUs: the next one waits although the idle VC has two more idle nodes.
    more = a.submit(gang("more", "busy"))
    assert isinstance(more, Queued) and "borrowing: 4 of its 4 GPUs limit in use" in more.reason
    assert a.borrowing() == {
        "busy": {"borrowed": {"V100": 4.0}, "lent": {}},
        "idle": {"borrowed": {}, "lent": {"V100": 4.0}},
    }
    vcs = vc_views.virtual_clusters(checked(a))
    assert vcs["busy"]["resourcesBorrowed"]["gpu"] == 4 and vcs["idle"]["resourcesLent"]["gpu"] == 4
    assert vcs["busy"]["sharing"] == {"weight": 1.0, "borrowingLimit": 4.0, "preemptionGraceSeconds": 300.0}
    # The lender's own jobs take its free nodes first, then reclaim the borrowed one, with the grace.
    for i in range(2):
        assert isinstance(a.submit(gang(f"idle{i}", "idle")), Allocated)
    reclaim = a.submit(gang("idle2", "idle"))
    assert isinstance(reclaim, Preempting) and reclaim.victims == ("extra",) and reclaim.grace_s == 300.0
    assert nodes_of(reclaim) == nodes_of(borrowed)
    checked(a)
    out = a.release("extra")
    assert [type(d).__name__ for d in out] == ["Released", "Allocated"] and out[1].key == "idle2"
    assert a.borrowing() == {}
    checked(a)


def test_a_vc_without_a_limit_never_borrows_and_opportunistic_victims_get_no_grace() -> None:
    a = HivedAllocator(parse_hived_config(config({"busy": (1, {}), "idle": (3, {})})))
    a.submit(gang("own", "busy"))
    assert isinstance(a.submit(gang("extra", "busy")), Queued)
    assert isinstance(a.submit(gang("oppo", "busy", prio=-1)), Allocated)
    for i in range(2):
        a.submit(gang(f"idle{i}", "idle"))
    reclaim = a.submit(gang("idle2", "idle"))
    assert isinstance(reclaim, Preempting) and reclaim.victims == ("oppo",) and reclaim.grace_s == 0.0


def test_idle_capacity_goes_to_borrowers_by_weight() -> None:
    # 6 nodes: a and c own one each (and may borrow 16 GPUs), the lender 4, all busy with its own jobs.
    vcs = {"a": (1, {"borrowingLimit": 16}), "c": (1, {"borrowingLimit": 16, "weight": 3}), "lender": (4, {})}
    a = HivedAllocator(parse_hived_config(config(vcs, nodes=6)))
    for i in range(4):
        assert isinstance(a.submit(gang(f"l{i}", "lender")), Allocated)
    for vc in ("a", "c"):
        assert isinstance(a.submit(gang(f"{vc}-own", vc)), Allocated)
    for vc in ("a", "c"):
        for i in range(4):
            assert isinstance(a.submit(gang(f"{vc}{i}", vc)), Queued)
    started: list[str] = []
    for i in range(4):
        started += [d.key for d in a.release(f"l{i}") if isinstance(d, Allocated)]
    # Weighted progressive filling, borrowed GPUs / weight: a and c tie at 0 (a's gang is older), then c at
    # 0/3, 4/3 and 8/3 against a's 4/1.
    assert started == ["a0", "c0", "c1", "c2"]
    assert a.borrowing()["c"]["borrowed"] == {"V100": 12.0} and a.borrowing()["a"]["borrowed"] == {
        "V100": 4.0
    }
    checked(a)


def test_the_lender_can_always_bind_its_whole_quota() -> None:
    # Borrowers fill every idle node; the lender then asks for all of its quota at once: every gang of it is
    # placed or preempting at once (none waits for want of bindable quota), and the chain stays safe.
    a = HivedAllocator(parse_hived_config(config({"busy": (1, {"borrowingLimit": 12}), "idle": (3, {})})))
    for i in range(4):
        assert isinstance(a.submit(gang(f"b{i}", "busy")), Allocated)
    decisions = [a.submit(gang(f"i{i}", "idle")) for i in range(3)]
    assert all(isinstance(d, Preempting) and d.grace_s == 300.0 for d in decisions)
    assert a.quota.unsafe_level("RACK") is None and audit(a) == []


def test_teams_divide_a_vc_by_share_and_are_vcs_of_their_own() -> None:
    teams = {"nlp": {"share": 0.75, "borrowingLimit": 4}, "cv": {"share": 0.25}}
    parsed = parse_hived_config(config({"research": (4, {"teams": teams})}))
    specs = {v.name: v for v in parsed.virtual_clusters}
    assert [c.number for c in specs["nlp"].virtual_cells] == [3]
    assert [c.number for c in specs["cv"].virtual_cells] == [1]
    assert specs["research"].virtual_cells == () and specs["nlp"].parent == "research"
    assert specs["nlp"].weight == 0.75 and specs["cv"].borrowing_limit == 0
    a = HivedAllocator(parsed)
    assert isinstance(a.submit(gang("cv0", "cv")), Allocated)
    assert isinstance(a.submit(gang("cv1", "cv")), Queued)  # cv's quarter is one node; it may not borrow
    assert isinstance(a.submit(gang("nlp0", "nlp", pods=3)), Allocated)
    views = vc_views.virtual_clusters(a)
    assert views["research"]["sharing"]["teams"] == ["nlp", "cv"]
    assert views["cv"]["sharing"] == {
        "weight": 0.25,
        "borrowingLimit": 0.0,
        "preemptionGraceSeconds": 300.0,
        "parent": "research",
        "share": 0.25,
    }
    # The VC itself keeps no quota once its teams have it all.
    refused = a.submit(gang("r", "research"))
    assert isinstance(refused, Rejected) and "no guaranteed quota" in refused.reason


@pytest.mark.parametrize(
    ("teams", "message"),
    [
        ({"a": {"share": 0.75}, "b": {"share": 0.5}}, r"add up to 1\.25"),
        ({"a": {}}, "share is required"),
        ({"a": {"share": 0}}, "share must be > 0"),
        ({"a": {"share": 0.5, "color": "red"}}, "unknown key"),
        ({}, "at least one team"),
    ],
)
def test_bad_teams_are_refused_naming_the_field(teams: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_hived_config(config({"research": (4, {"teams": teams})}))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"weight": 0}, "weight must be > 0"),
        ({"borrowingLimit": -1}, "borrowingLimit must be >= 0"),
        ({"borrowingLimit": "all"}, "borrowingLimit must be a number"),
    ],
)
def test_bad_sharing_settings_are_refused(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_hived_config(config({"v": (4, extra)}))
    with pytest.raises(ConfigError, match=r"sharing\.reclaimGraceSeconds must be >= 0"):
        parse_hived_config(config({"v": (4, {})}, grace=-5))


PROPERTY_CONFIG = parse_hived_config(
    config(
        {
            "a": (1, {"borrowingLimit": 8, "weight": 2}),
            "b": (1, {"borrowingLimit": 4}),
            "lender": (2, {}),
        }
    )
)
op = st.one_of(
    st.tuples(
        st.just("submit"),
        st.sampled_from(["a", "b", "lender"]),
        st.sampled_from([-1, 10, 100]),
        st.integers(1, 2),
        st.sampled_from([1, 2, 4]),
    ),
    st.tuples(st.just("release"), st.integers(0, 40)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, max_size=35))
def test_borrowing_keeps_the_books_and_every_guarantee(seq: list[tuple[Any, ...]]) -> None:
    """After every step: the audit is clean (every chain safe: each VC can still bind all its quota), no VC
    borrows beyond its limit, victims that borrow come with the grace, and snapshots round-trip."""
    a = HivedAllocator(PROPERTY_CONFIG)
    for i, step in enumerate(seq):
        if step[0] == "submit":
            _, vc, prio, pods, gpus = step
            decisions = a.submit_all(gang(f"g{i}", vc, gpus, prio, pods))
        else:
            keys = sorted(a.groups(), key=lambda k: int(k[1:]))
            decisions = a.release(keys[step[1] % len(keys)]) if keys else []
        assert audit(a) == [], (step, decisions)
        for vc, books in a.borrowing().items():
            limit = {"a": 8, "b": 4}.get(vc, 0)
            assert sum(books["borrowed"].values()) <= limit, (vc, books)
        for d in decisions:
            if isinstance(d, Preempting):
                borrowers = [v for v in d.victims if a._groups[v].borrowed]
                assert d.grace_s == (300.0 if borrowers else 0.0)
    checked(a)
