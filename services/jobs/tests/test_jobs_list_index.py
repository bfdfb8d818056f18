"""The in-memory job list (pai_jobs.list_index): for any entries, changes and requests, the same page and
total as a plain filter (list_plan.matches) and sort (MongoDB's order of `queries.list_sort`) of the
documents."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pai_common.contract.rpc import ListJobsRequest
from pai_common.contract.types import JobSpec, TaskRoleSpec
from pai_jobs import list_index, list_plan
from pai_jobs.list_index import ListIndex, entry_of
from pai_jobs.queries import ORDER_FIELDS
from pai_jobs.shell import new_job_document

USERS = ("ann", "ben", "cy", "annie")
VCS = ("default", "gpu", "gpu2")
STATES = ("WAITING", "RUNNING", "SUCCEEDED", "FAILED")
PRIORITIES = (100, 10, -1)
TAGS = ("nightly", "big", "keep")
NAMES = ("job", "train", "gpu-bench", "Job")


def document(seq: int, rng: random.Random, update_seq: int = 0) -> dict[str, Any]:
    """A `job_list` document as the shell writes it."""
    user = rng.choice(USERS)
    name = f"{rng.choice(NAMES)}{seq}"
    spec = JobSpec(
        job_key=f"{user}~{name}",
        user=user,
        name=name,
        virtual_cluster=rng.choice(VCS),
        priority=rng.choice(PRIORITIES),
        task_roles=[
            TaskRoleSpec(
                name="w",
                instances=rng.randint(1, 3),
                gpu=rng.randint(0, 2),
                cpu=1,
                memory_mb=1,
                entrypoint="x",
            )
        ],
        submitted_at=1000 + seq,
    )
    job = new_job_document(spec.model_dump(mode="json"), {})
    job["seq"] = seq
    change(job, rng)
    return {**list_plan.list_entry(job), "update_seq": update_seq}


def change(job: dict[str, Any], rng: random.Random) -> None:
    """What a later write may change of a job: state, tags, retries, completion (often to equal values)."""
    job["state"] = rng.choice(STATES)
    job["tags"] = rng.sample(TAGS, rng.randint(0, 2))
    job["retries"] = rng.randint(0, 2)
    job["completed_at"] = rng.choice([None, None, 5000, 5000 + rng.randint(0, 3)])


def changed(doc: dict[str, Any], rng: random.Random, update_seq: int) -> dict[str, Any]:
    after = dict(doc)
    change(after, rng)
    after["update_seq"] = update_seq
    return after


def mongo_key(doc: dict[str, Any], order_field: str) -> tuple[Any, ...]:
    """MongoDB's ascending order of `[(field, 1), (_id, 1)]`: null before every number."""
    if order_field == list_plan.SEQ_ORDER_FIELD:
        return (doc["seq"],)
    value = doc[ORDER_FIELDS[order_field]]
    return ((0, 0) if value is None else (1, value), doc["_id"])


def reference(docs: list[dict[str, Any]], req: ListJobsRequest) -> tuple[list[str], int]:
    """The plain scan: filter with list_plan.matches, sort everything, slice."""
    hits = sorted(
        (d for d in docs if list_plan.matches(d, req)),
        key=lambda d: mongo_key(d, req.order_field),
        reverse=req.order == "DESC",
    )
    return [d["_id"] for d in hits[req.offset : req.offset + req.limit]], len(hits)


requests = st.builds(
    ListJobsRequest,
    usernames=st.lists(st.sampled_from(USERS), max_size=2),
    virtual_cluster=st.none() | st.sampled_from(VCS),
    states=st.lists(st.sampled_from(STATES), max_size=2),
    keyword=st.none() | st.sampled_from(["job1", "ann", "gpu", "1", "J", "b\n", "\n", "zzz", "11"]),
    tags_contain=st.lists(st.sampled_from(TAGS), max_size=2),
    tags_not_contain=st.lists(st.sampled_from(TAGS), max_size=2),
    job_priorities=st.lists(st.sampled_from(["prod", "test", "oppo", "default"]), max_size=2),
    offset=st.integers(0, 60),
    limit=st.integers(1, 40),
    order_field=st.sampled_from(sorted(ORDER_FIELDS)),
    order=st.sampled_from(["ASC", "DESC"]),
)


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    n=st.integers(0, 60),
    rounds=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 3), requests), max_size=5),
    final=requests,
    sort_below=st.sampled_from([0.0, list_index.SORT_MATCHES_BELOW, 1.0]),
    rebuild_above=st.sampled_from([0.0, list_index.REBUILD_ABOVE, 10.0]),
)
def test_the_index_returns_what_a_plain_scan_returns(
    seed: int,
    n: int,
    rounds: list[tuple[int, int, ListJobsRequest]],
    final: ListJobsRequest,
    sort_below: float,
    rebuild_above: float,
) -> None:
    rng = random.Random(seed)
    update = 0
    docs: dict[str, dict[str, Any]] = {}
    for seq in range(1, n + 1):
        update += 1
        doc = document(seq, rng, update)
        docs[doc["_id"]] = doc
    index = ListIndex(sort_matches_below=sort_below, rebuild_above=rebuild_above)
    assert index.apply(list(docs.values()), watermark=update) == len(docs)
    seq = n
    for changes, new_jobs, req in rounds:
        # Pages between changes, so that sorted orders are cached and then patched.
        assert _page(index, req) == reference(list(docs.values()), req)
        batch: list[dict[str, Any]] = []
        for _ in range(changes if docs else 0):
            update += 1
            stale = rng.choice(list(docs.values()))
            fresh = changed(stale, rng, update)
            docs[fresh["_id"]] = fresh
            batch += [fresh, stale]  # a stale copy (lower update_seq) changes nothing
        for _ in range(new_jobs):
            seq += 1
            update += 1
            doc = document(seq, rng, update)
            docs[doc["_id"]] = doc
            batch.append(doc)
        rng.shuffle(batch)
        index.apply(batch)
        assert index.watermark == update
    assert len(index) == len(docs)
    assert _page(index, final) == reference(list(docs.values()), final)
    keys = index.page(final).keys
    assert index.summaries(keys) == [list_plan.summary_of(docs[key]) for key in keys]
    # Jobs per state (the portal's home page), for the final request's users and VC, and for everyone.
    for users, vc in ((final.usernames, final.virtual_cluster), ([], None)):
        chosen = [d for d in docs.values() if (not users or d["user"] in users) and (not vc or d["vc"] == vc)]
        expected = Counter(d["state"] for d in chosen)
        assert index.state_counts(users, vc) == dict(expected)


def _page(index: ListIndex, req: ListJobsRequest) -> tuple[list[str], int]:
    page = index.page(req)
    return page.keys, page.total


BIG = [document(seq, random.Random(seq), seq) for seq in range(1, 1501)]


@settings(max_examples=200, deadline=None)
@given(requests, st.integers(0, 1400))
def test_a_large_index_after_many_changes(req: ListJobsRequest, offset: int) -> None:
    index = _big_index()
    req = req.model_copy(update={"offset": offset if req.offset % 2 else req.offset, "limit": req.limit * 3})
    assert _page(index, req) == reference(list(_BIG_DOCS.values()), req)


_BIG_DOCS: dict[str, dict[str, Any]] = {}
_BIG_INDEX: list[ListIndex] = []


def _big_index() -> ListIndex:
    """1500 jobs, every order cached, then 600 changes in batches of 20 (orders patched, not rebuilt)."""
    if not _BIG_INDEX:
        index = ListIndex()
        index.apply(BIG)
        index.warm()
        _BIG_DOCS.update({d["_id"]: d for d in BIG})
        rng = random.Random(11)
        update = len(BIG)
        for _ in range(30):
            batch = []
            for _ in range(20):
                update += 1
                fresh = changed(rng.choice(list(_BIG_DOCS.values())), rng, update)
                _BIG_DOCS[fresh["_id"]] = fresh
                batch.append(fresh)
            index.apply(batch)
        _BIG_INDEX.append(index)
    return _BIG_INDEX[0]


# ---- the pieces ----------------------------------------------------------------------------------------


def test_entries_without_update_seq_count_as_zero_and_newer_wins() -> None:
    doc = document(1, random.Random(1))
    del doc["update_seq"]
    index = ListIndex()
    assert index.apply([doc], watermark=7) == 1 and index.watermark == 7
    entry = index.get(doc["_id"])
    assert entry is not None and entry.update_seq == 0 and entry == entry_of(doc)
    newer = {**doc, "state": "STOPPED", "update_seq": 9}
    assert index.apply([newer]) == 1 and index.watermark == 9
    assert index.apply([{**doc, "state": "RUNNING", "update_seq": 8}]) == 0  # older: ignored
    again = index.get(doc["_id"])
    assert again is not None and again.state == "STOPPED"
    assert index.apply([]) == 0 and index.watermark == 9


def test_a_load_keeps_the_counter_it_started_from() -> None:
    """Entries changed during a load's scan (update_seq above the counter read first) are read again."""
    docs = [document(seq, random.Random(seq), update_seq=seq) for seq in range(1, 6)]
    index = ListIndex()
    index.apply(docs, watermark=3)
    assert index.watermark == 3
    index.apply(docs[2:])  # read again as changes: nothing new, the watermark moves on
    assert index.watermark == 5 and len(index) == 5


def test_summaries_are_held_deflated() -> None:
    docs = [document(seq, random.Random(seq), update_seq=seq) for seq in range(1, 50)]
    index = ListIndex()
    index.apply(docs)
    for doc in docs:
        entry = index.get(doc["_id"])
        assert entry is not None and len(entry.summary) < len(doc["summary"]) / 3
    assert index.summaries([docs[3]["_id"], docs[0]["_id"]]) == [
        list_plan.summary_of(docs[3]),
        list_plan.summary_of(docs[0]),
    ]
    assert list_index.unpack_summary(list_index.pack_summary('{"name":"\u00e9"}')) == {"name": "é"}


def test_sets_follow_changes() -> None:
    doc = {**document(1, random.Random(2)), "state": "RUNNING", "tags": ["big"], "update_seq": 1}
    index = ListIndex()
    index.apply([doc])
    assert index.matching(ListJobsRequest(states=["RUNNING"])) == {doc["_id"]}
    index.apply([{**doc, "state": "FAILED", "tags": ["keep"], "update_seq": 2}])
    assert index.matching(ListJobsRequest(states=["RUNNING"])) == set()
    assert index.matching(ListJobsRequest(tags_contain=["big"])) == set()
    assert index.matching(ListJobsRequest(tags_contain=["keep"], states=["FAILED"])) == {doc["_id"]}
    assert index.matching(ListJobsRequest(tags_not_contain=["keep"])) == set()
    assert index.matching(ListJobsRequest()) is None
    # A tag stored twice (no writer does it, but nothing forbids it) is one membership.
    index.apply([{**doc, "tags": ["big", "big"], "update_seq": 3}])
    index.apply([{**doc, "tags": [], "update_seq": 4}])
    assert index.matching(ListJobsRequest(tags_contain=["big"])) == set()


@pytest.mark.parametrize("order_field", sorted(ORDER_FIELDS))
@pytest.mark.parametrize("order", ["ASC", "DESC"])
def test_every_order_pages_without_overlap_or_gap(order_field: str, order: str) -> None:
    index = _big_index()
    seen: list[str] = []
    for offset in range(0, 1600, 100):
        req = ListJobsRequest(offset=offset, limit=100, order_field=order_field, order=order)  # type: ignore[arg-type]
        page = index.page(req)
        assert page.total == len(_BIG_DOCS)
        seen += page.keys
    assert len(seen) == len(set(seen)) == len(_BIG_DOCS)
    assert (
        seen
        == reference(
            list(_BIG_DOCS.values()), ListJobsRequest(limit=2000, order_field=order_field, order=order)
        )[0]
    )  # type: ignore[arg-type]


def test_completion_time_puts_unfinished_jobs_first_ascending() -> None:
    index = _big_index()
    first = index.page(ListJobsRequest(order_field="completionTime", order="ASC", limit=1)).keys[0]
    last = index.page(ListJobsRequest(order_field="completionTime", order="DESC", limit=1)).keys[0]
    assert _BIG_DOCS[first]["completed_at"] is None and _BIG_DOCS[last]["completed_at"] is not None


def test_a_keyword_with_a_separator_or_unknown_priority_matches_exactly() -> None:
    index = _big_index()
    assert index.page(ListJobsRequest(keyword="\x00")).total == 0
    assert index.page(ListJobsRequest(job_priorities=["bogus"])).total == 0
    ann = index.page(ListJobsRequest(keyword="ann", limit=2000))
    assert ann.total == sum(1 for d in _BIG_DOCS.values() if "ann" in d["user"]) > 0
