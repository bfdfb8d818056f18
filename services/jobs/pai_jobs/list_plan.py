"""How the job list is read: pages in submission order walked by windows of a dense sequence number.

Pure. Why: the embedded MongoDB-wire server (SecantusDB) reads every document an index lookup names and
applies `limit` afterwards, and serves a sort from an index only without a filter, fetching the whole
collection. A page of the newest 100 out of 100,000 jobs would decode 100,000 documents. So each job gets
`seq`, a number counted up at submission with no gaps, and the list reads `seq` ranges: the newest `n`
jobs are exactly `seq > top - n`, one index range scan of `n` entries. With an equality filter
(`username`, `vc`, `state`, `jobPriority`, `tagsContain`) the range is taken on a compound index
`(field, seq)`, growing the window until the page is full. Whatever the index cannot take (a keyword,
tagsNotContain, a second filter) is checked here, by `matches`.

The list reads a small document per job (`job_list`: the filter fields and the ready JobSummary), never
the job document with its snapshot; counts for `withTotalCount` come from per-value counters
(`job_counts`) when the filter is a single field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pai_common.contract.rpc import ListJobsRequest
from pai_jobs.queries import PRIORITY_FILTERS
from pai_jobs.views import job_summary

SEQ_ORDER_FIELD: Final = "submissionTime"
# The first window holds this many times the jobs a page needs; each next one is GROWTH times wider.
FIRST_WINDOW_FACTOR: Final = 2
MIN_WINDOW: Final = 256
GROWTH: Final = 8
# Beyond this many values, an `$in` filter is not split into one range walk per value.
MAX_DRIVER_VALUES: Final = 16
ALL_KEY: Final = "all"

# The index each equality filter walks, with seq behind it.
DRIVER_INDEXES: Final = (
    ([("seq", 1)], "list_seq"),
    ([("user", 1), ("seq", 1)], "list_user_seq"),
    ([("vc", 1), ("seq", 1)], "list_vc_seq"),
    ([("state", 1), ("seq", 1)], "list_state_seq"),
    ([("priority", 1), ("seq", 1)], "list_priority_seq"),
    ([("tags", 1), ("seq", 1)], "list_tags_seq"),
    # The two pairs the portal asks for most: someone's (or a VC's) jobs in one state.
    ([("user", 1), ("state", 1), ("seq", 1)], "list_user_state_seq"),
    ([("vc", 1), ("state", 1), ("seq", 1)], "list_vc_state_seq"),
)
PAIRED_FIELDS: Final = (("user", "state"), ("vc", "state"))


def list_entry(job: Mapping[str, Any]) -> dict[str, Any]:
    """The `job_list` document of a job document (which must carry its `seq`)."""
    return {
        "_id": job["_id"],
        "seq": job["seq"],
        "name": job["name"],
        "user": job["user"],
        "vc": job["vc"],
        "state": job["state"],
        "priority": job["priority"],
        "tags": list(job.get("tags", [])),
        "retries": job.get("retries", 0),
        "completed_at": job.get("completed_at"),
        "submitted_at": job["submitted_at"],
        "total_tasks": job["total_tasks"],
        "total_gpus": job["total_gpus"],
        # Kept as JSON text: one string is much cheaper for the server to read and send than a
        # 20-field sub-document, and the list only ever hands it on.
        "summary": json.dumps(job_summary(job), separators=(",", ":")),
    }


def summary_of(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The JobSummary a `job_list` document holds."""
    summary: dict[str, Any] = json.loads(entry["summary"])
    return summary


def count_keys(entry: Mapping[str, Any]) -> set[str]:
    """The counters a `job_list` document counts in."""
    keys = {
        ALL_KEY,
        f"user:{entry['user']}",
        f"vc:{entry['vc']}",
        f"state:{entry['state']}",
        f"priority:{entry['priority']}",
    }
    keys.update(f"tag:{tag}" for tag in entry.get("tags", []))
    return keys


def count_changes(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> dict[str, int]:
    """The counter increments that take the counts from `before` (None: a new job) to `after`."""
    old = count_keys(before) if before is not None else set()
    new = count_keys(after)
    return {**{key: -1 for key in old - new}, **{key: 1 for key in new - old}}


def _priorities(req: ListJobsRequest) -> list[int]:
    return sorted({PRIORITY_FILTERS[p] for p in req.job_priorities})


def matches(entry: Mapping[str, Any], req: ListJobsRequest) -> bool:
    """Whether a `job_list` document passes every filter of the request (list_filter's rules)."""
    if req.usernames and entry["user"] not in req.usernames:
        return False
    if req.virtual_cluster and entry["vc"] != req.virtual_cluster:
        return False
    if req.states and entry["state"] not in req.states:
        return False
    if req.keyword and not any(req.keyword in str(entry[f]) for f in ("name", "user", "vc")):
        return False
    tags = set(entry.get("tags", []))
    if req.tags_contain and not tags.intersection(req.tags_contain):
        return False
    if req.tags_not_contain and tags.intersection(req.tags_not_contain):
        return False
    return not req.job_priorities or entry["priority"] in _priorities(req)


def _driver_candidates(req: ListJobsRequest) -> list[tuple[str, list[Any], list[str]]]:
    """(field, values, counter keys) of each equality filter that an index `(field, seq)` can walk."""
    candidates: list[tuple[str, list[Any], str]] = [
        ("user", list(dict.fromkeys(req.usernames)), "user"),
        ("tags", list(dict.fromkeys(req.tags_contain)), "tag"),
        ("vc", [req.virtual_cluster] if req.virtual_cluster else [], "vc"),
        ("priority", _priorities(req) if req.job_priorities else [], "priority"),
        ("state", list(dict.fromkeys(req.states)), "state"),
    ]
    return [
        (field, values, [f"{prefix}:{v}" for v in values])
        for field, values, prefix in candidates
        if values and len(values) <= MAX_DRIVER_VALUES
    ]


def driver_count_keys(req: ListJobsRequest) -> list[str]:
    """The counters `choose_drivers` wants to see."""
    return [key for _, _, keys in _driver_candidates(req) for key in keys]


@dataclass(frozen=True)
class Drivers:
    """The equality parts to walk `(field, seq)` indexes with (one per value; `[{}]`: walk `seq` alone),
    and about how many jobs they name (None: unknown)."""

    parts: list[dict[str, Any]]
    estimate: int | None
    # The share of all jobs expected to match every filter that has counters, taking them as independent.
    density: float | None = None


def choose_drivers(req: ListJobsRequest, counts: Mapping[str, int], top: int) -> Drivers:
    """The filter that names the fewest jobs, by the counters (a job with several of the tags asked for
    counts more than once: the estimates only size the first window)."""
    best: Drivers | None = None
    density = 1.0
    shares: dict[str, tuple[list[Any], float]] = {}
    for field, values, keys in _driver_candidates(req):
        estimate = sum(counts.get(key, 0) for key in keys)
        share = min(1.0, estimate / top) if top > 0 else 1.0
        shares[field] = (values, share)
        density *= share
        if best is None or best.estimate is None or estimate < best.estimate:
            best = Drivers([{field: value} for value in values], estimate)
    if best is None:
        return Drivers([{}], None)
    for first, second in PAIRED_FIELDS:
        if first not in shares or second not in shares:
            continue
        (firsts, first_share), (seconds, second_share) = shares[first], shares[second]
        if len(firsts) * len(seconds) > MAX_DRIVER_VALUES:
            continue
        # No counter per pair: assume the two filters independent.
        estimate = round(top * first_share * second_share)
        if best.estimate is None or estimate < best.estimate:
            best = Drivers([{first: a, second: b} for a in firsts for b in seconds], estimate)
    return Drivers(best.parts, best.estimate, density)


def count_plan(req: ListJobsRequest) -> list[str] | None:
    """The counters whose sum is the number of matches, or None when no counter tells (then the caller
    counts the documents)."""
    if req.keyword or req.tags_not_contain:
        return None
    kinds: list[list[str]] = [
        [f"user:{u}" for u in dict.fromkeys(req.usernames)],
        [f"vc:{req.virtual_cluster}"] if req.virtual_cluster else [],
        [f"state:{s}" for s in dict.fromkeys(req.states)],
        [f"priority:{p}" for p in _priorities(req)] if req.job_priorities else [],
        # A job may carry several of the tags asked for: their counts do not add up.
        [f"tag:{req.tags_contain[0]}"]
        if len(set(req.tags_contain)) == 1
        else (["?"] if req.tags_contain else []),
    ]
    used = [keys for keys in kinds if keys]
    if not used:
        return [ALL_KEY]
    if len(used) > 1 or used[0] == ["?"]:
        return None
    return used[0]


@dataclass(frozen=True)
class Window:
    """Jobs with lo < seq <= hi."""

    lo: int
    hi: int

    def query(self, driver: Mapping[str, Any]) -> dict[str, Any]:
        return {**driver, "seq": {"$gt": self.lo, "$lte": self.hi}}


def first_width(req: ListJobsRequest, need: int, top: int, drivers: Drivers) -> int:
    """The first window: as wide as the page needs when nothing is filtered (seq has no gaps), else wide
    enough to hold about `need` matches at the density the counters give, with some room."""
    if list_is_unfiltered(req):
        return need
    if not drivers.density or top <= 0:
        return max(MIN_WINDOW, need * FIRST_WINDOW_FACTOR)
    return max(MIN_WINDOW, int(need * 1.25 / drivers.density) + 1)


def direct_window(req: ListJobsRequest, top: int) -> Window | None:
    """Without filters, the page at any offset is one exact seq range; None when filters apply."""
    if not list_is_unfiltered(req):
        return None
    if req.order == "DESC":
        hi = max(0, top - req.offset)
        return Window(max(0, hi - req.limit), hi)
    lo = min(top, req.offset)
    return Window(lo, min(top, lo + req.limit))


def list_is_unfiltered(req: ListJobsRequest) -> bool:
    return not (
        req.usernames
        or req.virtual_cluster
        or req.states
        or req.keyword
        or req.tags_contain
        or req.tags_not_contain
        or req.job_priorities
    )


def windows(top: int, width: int, descending: bool) -> Iterator[Window]:
    """Seq windows that cover 1..top, newest first when `descending`, each GROWTH times wider."""
    width = max(1, width)
    if descending:
        hi = top
        while hi > 0:
            lo = max(0, hi - width)
            yield Window(lo, hi)
            hi = lo
            width *= GROWTH
    else:
        lo = 0
        while lo < top:
            hi = min(top, lo + width)
            yield Window(lo, hi)
            lo = hi
            width *= GROWTH


class Paging:
    """Collects one page from the windows' documents: the shell fetches, this decides.

    `add` takes the documents one window's queries returned (any order, unfiltered residuals included) and
    says whether the page is complete; `page` is then the JobSummaries of the page.
    """

    def __init__(self, req: ListJobsRequest) -> None:
        self.req = req
        self.need = req.offset + req.limit
        self.descending = req.order == "DESC"
        self._found: list[Mapping[str, Any]] = []

    def add(self, docs: Sequence[Mapping[str, Any]]) -> bool:
        # A job with two of the tags asked for comes back from both tags' walks: keep it once.
        unique = {doc["seq"]: doc for doc in docs if matches(doc, self.req)}
        self._found += sorted(unique.values(), key=lambda doc: doc["seq"], reverse=self.descending)
        return len(self._found) >= self.need

    def page(self) -> list[dict[str, Any]]:
        return [summary_of(doc) for doc in self._found[self.req.offset : self.need]]
