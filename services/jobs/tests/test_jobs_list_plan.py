"""The job list plan (pai_jobs.list_plan): list entries, counters, drivers, windows and paging, checked
against a plain filter-sort-slice of the same jobs."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pai_common.contract.rpc import ListJobsRequest
from pai_common.contract.types import JobSpec, TaskRoleSpec
from pai_jobs import list_plan
from pai_jobs.list_plan import Drivers, Paging
from pai_jobs.shell import new_job_document

USERS = ("ann", "ben", "cy")
VCS = ("default", "gpu")
STATES = ("WAITING", "RUNNING", "SUCCEEDED", "FAILED")
PRIORITIES = (100, 10, -1)
TAGS = ("nightly", "big", "keep")


def entry(seq: int, rng: random.Random) -> dict[str, Any]:
    user = rng.choice(USERS)
    spec = JobSpec(
        job_key=f"{user}~job{seq}",
        user=user,
        name=f"job{seq}",
        virtual_cluster=rng.choice(VCS),
        priority=rng.choice(PRIORITIES),
        task_roles=[TaskRoleSpec(name="w", instances=1, gpu=0, cpu=1, memory_mb=1, entrypoint="x")],
        submitted_at=1000 + seq,
    )
    job = new_job_document(spec.model_dump(mode="json"), {})
    job["seq"] = seq
    job["state"] = rng.choice(STATES)
    job["tags"] = rng.sample(TAGS, rng.randint(0, 2))
    return list_plan.list_entry(job)


def jobs(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [entry(seq, rng) for seq in range(1, n + 1)]


def naive_page(entries: list[dict[str, Any]], req: ListJobsRequest) -> list[str]:
    hits = sorted(
        (e for e in entries if list_plan.matches(e, req)), key=lambda e: e["seq"], reverse=req.order == "DESC"
    )
    return [list_plan.summary_of(e)["name"] for e in hits[req.offset : req.offset + req.limit]]


def run_plan(entries: list[dict[str, Any]], req: ListJobsRequest) -> tuple[list[str], int]:
    """The shell's loop over an in-memory collection; returns the page and how many documents it read."""
    top = len(entries)
    direct = list_plan.direct_window(req, top)
    if direct is not None:
        hits = [e for e in entries if direct.lo < e["seq"] <= direct.hi]
        hits.sort(key=lambda e: e["seq"], reverse=req.order == "DESC")
        return [list_plan.summary_of(e)["name"] for e in hits], len(hits)
    counts: dict[str, int] = {}
    for e in entries:
        for key in list_plan.count_keys(e):
            counts[key] = counts.get(key, 0) + 1
    drivers = list_plan.choose_drivers(req, counts, top)
    paging = Paging(req)
    read = 0
    for window in list_plan.windows(
        top, list_plan.first_width(req, paging.need, top, drivers), paging.descending
    ):
        batch = []
        for part in drivers.parts:
            batch += [
                e
                for e in entries
                if window.lo < e["seq"] <= window.hi and all(_eq(e, f, v) for f, v in part.items())
            ]
        read += len(batch)
        if paging.add(batch):
            break
    return [s["name"] for s in paging.page()], read


def _eq(entry: dict[str, Any], field: str, value: Any) -> bool:
    have = entry[field]
    return value in have if isinstance(have, list) else bool(have == value)


requests = st.builds(
    ListJobsRequest,
    usernames=st.lists(st.sampled_from(USERS), max_size=2),
    virtual_cluster=st.none() | st.sampled_from(VCS),
    states=st.lists(st.sampled_from(STATES), max_size=2),
    keyword=st.none() | st.sampled_from(["job1", "ann", "gp"]),
    tags_contain=st.lists(st.sampled_from(TAGS), max_size=2),
    tags_not_contain=st.lists(st.sampled_from(TAGS), max_size=1),
    job_priorities=st.lists(st.sampled_from(["prod", "test", "oppo", "default"]), max_size=2),
    offset=st.integers(0, 400),
    limit=st.integers(1, 150),
    order=st.sampled_from(["ASC", "DESC"]),
)
ENTRIES = jobs(1500, seed=3)


@settings(max_examples=250, deadline=None)
@given(requests)
def test_the_plan_returns_what_a_plain_scan_returns(req: ListJobsRequest) -> None:
    page, _ = run_plan(ENTRIES, req)
    assert page == naive_page(ENTRIES, req)


def test_an_unfiltered_page_reads_only_its_own_jobs() -> None:
    for offset in (0, 700, 1450, 5000):
        req = ListJobsRequest(offset=offset, limit=100)
        page, read = run_plan(ENTRIES, req)
        assert page == naive_page(ENTRIES, req) and read == len(page) <= 100


def test_a_selective_filter_reads_about_a_page() -> None:
    req = ListJobsRequest(usernames=["ann"], states=["FAILED"], limit=50)
    page, read = run_plan(ENTRIES, req)
    assert page == naive_page(ENTRIES, req) and len(page) == 50
    matching = sum(1 for e in ENTRIES if list_plan.matches(e, req))
    assert read < 4 * 50 * len(ENTRIES) / matching  # far from the whole collection


# ---- the pieces ----------------------------------------------------------------------------------------


@given(st.integers(0, 5000), st.integers(1, 400), st.booleans())
def test_windows_cover_every_seq_once(top: int, width: int, descending: bool) -> None:
    found = list(list_plan.windows(top, width, descending))
    covered = [seq for w in found for seq in range(w.lo + 1, w.hi + 1)]
    assert sorted(covered) == list(range(1, top + 1))
    for before, after in itertools.pairwise(found):
        assert (after.hi == before.lo) if descending else (after.lo == before.hi)
    widths = [w.hi - w.lo for w in found[:-1]]  # the last one stops at the end
    assert widths == sorted(widths)
    assert len(found) <= 2 + max(0, top // width).bit_length()  # they grow geometrically


@pytest.mark.parametrize(
    ("offset", "limit", "order", "expected"),
    [
        (0, 100, "DESC", (900, 1000)),
        (950, 100, "DESC", (0, 50)),
        (2000, 100, "DESC", (0, 0)),
        (0, 100, "ASC", (0, 100)),
        (990, 100, "ASC", (990, 1000)),
        (2000, 5, "ASC", (1000, 1000)),
    ],
)
def test_direct_window(offset: int, limit: int, order: str, expected: tuple[int, int]) -> None:
    window = list_plan.direct_window(ListJobsRequest(offset=offset, limit=limit, order=order), 1000)  # type: ignore[arg-type]
    assert window is not None and (window.lo, window.hi) == expected
    assert list_plan.direct_window(ListJobsRequest(states=["RUNNING"]), 1000) is None


def test_the_fewest_jobs_drive_and_density_multiplies() -> None:
    counts = {"user:ann": 50, "state:RUNNING": 100, "vc:gpu": 500}
    drivers = list_plan.choose_drivers(
        ListJobsRequest(usernames=["ann"], states=["RUNNING"], virtual_cluster="gpu"), counts, 1000
    )
    # user and state together (one index walk of the pair) name fewer jobs than either alone.
    assert drivers.parts == [{"user": "ann", "state": "RUNNING"}] and drivers.estimate == 5
    assert drivers.density == pytest.approx(0.05 * 0.1 * 0.5)
    alone = list_plan.choose_drivers(ListJobsRequest(usernames=["ann"], virtual_cluster="gpu"), counts, 1000)
    assert alone.parts == [{"user": "ann"}] and alone.estimate == 50
    pairs = list_plan.choose_drivers(
        ListJobsRequest(virtual_cluster="gpu", states=["RUNNING", "FAILED"]),
        {"vc:gpu": 500, "state:RUNNING": 100},
        1000,
    )
    assert pairs.parts == [{"vc": "gpu", "state": "RUNNING"}, {"vc": "gpu", "state": "FAILED"}]
    two = list_plan.choose_drivers(ListJobsRequest(states=["RUNNING", "WAITING"]), {"state:RUNNING": 3}, 10)
    assert two.parts == [{"state": "RUNNING"}, {"state": "WAITING"}] and two.estimate == 3
    assert list_plan.choose_drivers(ListJobsRequest(keyword="x"), {}, 10) == Drivers([{}], None)


def test_first_width() -> None:
    assert list_plan.first_width(ListJobsRequest(), 100, 10_000, Drivers([{}], None)) == 100
    sparse = Drivers([{"user": "a"}], 100, density=0.01)
    assert list_plan.first_width(ListJobsRequest(usernames=["a"]), 100, 10_000, sparse) == 12_501
    unknown = Drivers([{}], None)
    assert list_plan.first_width(ListJobsRequest(keyword="x"), 100, 10_000, unknown) == 256


def test_counters_follow_a_job() -> None:
    rng = random.Random(1)
    before = entry(1, rng)
    assert list_plan.count_changes(None, before) == {key: 1 for key in list_plan.count_keys(before)}
    after = {**before, "state": "STOPPED", "tags": [*before["tags"], "zzz"]}
    changes = list_plan.count_changes(before, after)
    assert changes == {f"state:{before['state']}": -1, "state:STOPPED": 1, "tag:zzz": 1}
    assert list_plan.count_changes(after, after) == {}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, ["all"]),
        ({"usernames": ["a", "b"]}, ["user:a", "user:b"]),
        ({"states": ["RUNNING"]}, ["state:RUNNING"]),
        ({"job_priorities": ["test", "default"]}, ["priority:10"]),
        ({"tags_contain": ["x"]}, ["tag:x"]),
        ({"tags_contain": ["x", "y"]}, None),
        ({"usernames": ["a"], "states": ["RUNNING"]}, None),
        ({"keyword": "a"}, None),
        ({"tags_not_contain": ["x"]}, None),
    ],
)
def test_count_plan(fields: dict[str, Any], expected: list[str] | None) -> None:
    assert list_plan.count_plan(ListJobsRequest(**fields)) == expected


def test_list_entry_holds_the_summary() -> None:
    e = entry(7, random.Random(2))
    assert e["seq"] == 7 and list_plan.summary_of(e)["name"] == "job7"
    assert list_plan.summary_of(e)["username"] == e["user"] and e["_id"] == f"{e['user']}~job7"
