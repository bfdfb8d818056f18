"""The job list held in memory: every job's filter and order fields, kept current from `job_list` changes,
filtered, ordered and paged here.

Pure. Why: the embedded MongoDB-wire server decodes every document an index lookup names before it applies
`limit`, so a page in any order but submission order, or a keyword search, read all 100,000 entries
(5-13 s). Here a page costs a walk of one cached sorted order (C-level iteration, a few ms at 100,000
jobs). The JobSummary of each job is held too, deflated against a dictionary of the summary's own field
names (about 90 bytes instead of 480), so that a page reads nothing but the changes from the database.

- Each `job_list` write carries `update_seq`, taken from one counter in the writing transaction; the
  counter document serializes those transactions, so commits come in `update_seq` order and a reader that
  has applied everything up to `watermark` only needs the entries above it.
- Equality filters (user, vc, state, priority, tagsContain) are sets of job keys per value; a keyword is
  matched against the few distinct users and VCs and scanned over the names.
- One ascending order per order field is sorted lazily on first use and patched (bisect) as entries
  change; DESC walks it backwards, which is exactly MongoDB's `[(field, -1), (_id, -1)]`.
"""

from __future__ import annotations

import json
import sys
import zlib
from bisect import bisect_left, bisect_right, insort
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import accumulate, filterfalse, islice
from typing import Any, Final, NamedTuple

from pai_common.contract.rpc import ListJobsRequest
from pai_jobs.queries import ORDER_FIELDS, PRIORITY_FILTERS

# A match set smaller than this share of all jobs is sorted by itself rather than found in a walk.
SORT_MATCHES_BELOW: Final = 1 / 64
# More changes than this share of all jobs at once: sorted orders are dropped and rebuilt when next asked.
REBUILD_ABOVE: Final = 1 / 8
_EMPTY: Final[frozenset[str]] = frozenset()

# What most summaries share: their field names and the common values. Raw deflate (no header) primed with
# it stores a summary in a fifth of its JSON.
SUMMARY_DICTIONARY: Final = (
    b'WAITING","subState":"FrameworkWaitingRUNNING","subState":"AttemptRunningFAILED","subState":"Completed'
    b'STOPPEDnull,"appExitCode":1,"virtualCluster":"default","jobPriority":"test","jobPriority":"oppo"'
    b'{"debugId":"0123456789abcdef0123456789abcdef","name":"job1","username":"user1","state":"SUCCEEDED",'
    b'"subState":"Completed","executionType":"START","tags":[],"retries":0,"retryDetails":{"user":0,'
    b'"platform":0,"resource":0},"retryDelayTime":0,"submissionTime":1700000000000,"createdTime":'
    b'1700000000100,"launchedTime":1700000002000,"completedTime":1700000060000,"appExitCode":0,'
    b'"virtualCluster":"default","totalGpuNumber":1,"totalTaskNumber":1,"totalTaskRoleNumber":1,'
    b'"jobPriority":"prod"}'
)


def pack_summary(summary: str) -> bytes:
    """A `job_list` document's summary (JSON text), deflated."""
    packer = zlib.compressobj(6, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, SUMMARY_DICTIONARY)
    return packer.compress(summary.encode()) + packer.flush()


def unpack_summary(packed: bytes) -> dict[str, Any]:
    unpacker = zlib.decompressobj(-15, SUMMARY_DICTIONARY)
    summary: dict[str, Any] = json.loads(unpacker.decompress(packed) + unpacker.flush())
    return summary


class Entry(NamedTuple):
    """What the list needs of a `job_list` document to filter and order it (a tuple: built several times
    as fast as a frozen dataclass, which matters when 100,000 are loaded)."""

    key: str
    seq: int
    name: str
    user: str
    vc: str
    state: str
    priority: int
    tags: tuple[str, ...]
    retries: int
    completed_at: int | None
    total_tasks: int
    total_gpus: int
    update_seq: int
    summary: bytes  # pack_summary of the JobSummary's JSON


def entry_of(doc: Mapping[str, Any]) -> Entry:
    """The entry of a `job_list` document; an entry written before `update_seq` existed counts as 0."""
    intern = sys.intern  # few distinct users, VCs, states and tags: share one string each
    return Entry(
        key=doc["_id"],
        seq=int(doc["seq"]),
        name=doc["name"],
        user=intern(doc["user"]),
        vc=intern(doc["vc"]),
        state=intern(doc["state"]),
        priority=int(doc["priority"]),
        tags=tuple(intern(t) for t in doc.get("tags", ())),
        retries=int(doc.get("retries", 0)),
        completed_at=doc.get("completed_at"),
        total_tasks=int(doc["total_tasks"]),
        total_gpus=int(doc["total_gpus"]),
        update_seq=int(doc.get("update_seq", 0)),
        summary=pack_summary(doc["summary"]),
    )


SortKey = tuple[Any, ...]


def _completion(e: Entry) -> SortKey:
    # MongoDB orders null before every number.
    return (0, 0, e.key) if e.completed_at is None else (1, e.completed_at, e.key)


# Each order field's ascending key, `_id` last as queries.list_sort breaks ties.
SORT_KEYS: Final[Mapping[str, Callable[[Entry], SortKey]]] = {
    "jobName": lambda e: (e.name, e.key),
    "submissionTime": lambda e: (e.seq, e.key),
    "username": lambda e: (e.user, e.key),
    "vc": lambda e: (e.vc, e.key),
    "retries": lambda e: (e.retries, e.key),
    "totalTaskNumber": lambda e: (e.total_tasks, e.key),
    "totalGpuNumber": lambda e: (e.total_gpus, e.key),
    "state": lambda e: (e.state, e.key),
    "completionTime": _completion,
    "jobPriority": lambda e: (e.priority, e.key),
}
assert set(SORT_KEYS) == set(ORDER_FIELDS)

# The equality filters, each a set of job keys per value.
_POSTED: Final = ("user", "vc", "state", "priority", "tags")


def _posted_values(e: Entry, field: str) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(e.tags)) if field == "tags" else (getattr(e, field),)


def keyword_matches(e: Entry, keyword: str) -> bool:
    """list_plan.matches' keyword rule: a substring of the name, the user or the VC."""
    return keyword in e.name or keyword in e.user or keyword in e.vc


@dataclass(frozen=True)
class Page:
    """The job keys of one page, in order, and how many jobs match the filters."""

    keys: list[str]
    total: int


class ListIndex:
    """Every job's list entry, with the sets and sorted orders that answer `ListJobsRequest`s.

    `watermark` is the highest `update_seq` seen (or the counter value a full load started from);
    `apply` takes the `job_list` documents above it, in any order, repeated or not.
    """

    def __init__(
        self, sort_matches_below: float = SORT_MATCHES_BELOW, rebuild_above: float = REBUILD_ABOVE
    ) -> None:
        self.sort_matches_below = sort_matches_below
        self.rebuild_above = rebuild_above
        self.watermark = 0
        self._entries: dict[str, Entry] = {}
        self._posted: dict[str, dict[Any, set[str]]] = {field: {} for field in _POSTED}
        self._orders: dict[str, list[str]] = {}
        # Every name with its key, in parallel lists, for the keyword scan (a list comprehension over two
        # lists is the cheapest scan CPython has). Names never change; a job is never removed.
        self._names: list[str] = []
        self._name_keys: list[str] = []
        # The same names joined, each followed by "\n", and where each starts: one str.find scans them
        # all at C speed. Extended as names are added.
        self._haystack = ""
        self._starts: list[int] = []

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Entry | None:
        return self._entries.get(key)

    def summaries(self, keys: Iterable[str]) -> list[dict[str, Any]]:
        """The JobSummaries of the given jobs (a page's keys), in that order."""
        entries = self._entries
        return [unpack_summary(entries[key].summary) for key in keys]

    # ---- changes ------------------------------------------------------------------------------------

    def apply(self, docs: Iterable[Mapping[str, Any]], watermark: int | None = None) -> int:
        """Apply `job_list` documents; an entry older than the one held (by `update_seq`) is ignored.
        Returns how many entries changed.

        The watermark becomes the highest `update_seq` seen so far; or, for a full load, exactly
        `watermark`, the counter value read before the scan began: a scan is not one snapshot, so what
        was committed during it is read again as changes (applying twice is harmless)."""
        newest: dict[str, Entry] = {}
        for e in map(entry_of, docs):
            seen = newest.get(e.key)
            if seen is None or e.update_seq > seen.update_seq:
                newest[e.key] = e
        changed = [e for e in newest.values() if self._is_newer(e)]
        if len(changed) > self.rebuild_above * max(len(self._entries), 1):
            self._orders.clear()
        for e in changed:
            self._replace(e)
        if watermark is not None:
            self.watermark = watermark
        else:
            self.watermark = max([self.watermark, *(e.update_seq for e in newest.values())])
        return len(changed)

    def _is_newer(self, e: Entry) -> bool:
        held = self._entries.get(e.key)
        return held is None or e.update_seq > held.update_seq

    def _replace(self, new: Entry) -> None:
        old = self._entries.get(new.key)
        moved: list[tuple[list[str], Callable[[Entry], SortKey]]] = []
        for field, order in self._orders.items():
            sort_key = SORT_KEYS[field]
            if old is not None:
                before = sort_key(old)
                if before == sort_key(new):
                    continue
                # The entry is still the old one here, so the walk finds it where it is.
                del order[bisect_left(order, before, key=self._keyed(sort_key))]
            moved.append((order, sort_key))
        for field, by_value in self._posted.items():
            if old is not None:
                for value in _posted_values(old, field):
                    keys = by_value[value]
                    keys.discard(old.key)
                    if not keys:
                        del by_value[value]
            for value in _posted_values(new, field):
                by_value.setdefault(value, set()).add(new.key)
        self._entries[new.key] = new
        if old is None:
            self._names.append(new.name)
            self._name_keys.append(new.key)
        elif old.name != new.name:
            self._names = [e.name for e in self._entries.values()]
            self._name_keys = list(self._entries)
            self._haystack, self._starts = "", []
        for order, sort_key in moved:
            insort(order, new.key, key=self._keyed(sort_key))

    def _keyed(self, sort_key: Callable[[Entry], SortKey]) -> Callable[[str], SortKey]:
        entries = self._entries
        return lambda key: sort_key(entries[key])

    def _order(self, field: str) -> list[str]:
        order = self._orders.get(field)
        if order is None:
            order = sorted(self._entries, key=self._keyed(SORT_KEYS[field]))
            self._orders[field] = order
        return order

    def warm(self, fields: Iterable[str] = SORT_KEYS) -> None:
        """Sort the orders now rather than on the first page that asks for each."""
        for field in fields:
            self._order(field)

    # ---- queries ------------------------------------------------------------------------------------

    def matching(self, req: ListJobsRequest) -> set[str] | frozenset[str] | None:
        """The keys of the jobs that pass every filter of the request; None: every job (no filter).
        The set may be one of the index's own: never change it."""
        found, excluded = self._filtered(req)
        if excluded:
            return (found if found is not None else self._entries.keys()) - excluded
        return found

    def _filtered(
        self, req: ListJobsRequest
    ) -> tuple[set[str] | frozenset[str] | None, set[str] | frozenset[str] | None]:
        """(the keys that pass every filter but tagsNotContain, or None: every job; the keys that
        tagsNotContain excludes, or None). Excluding from "every job" is left to the walk: it would copy
        almost all keys."""
        groups: list[set[str] | frozenset[str]] = []
        for field, values in (
            ("user", req.usernames),
            ("vc", [req.virtual_cluster] if req.virtual_cluster else []),
            ("state", req.states),
            # A value no job can have (refused by queries.list_filter before) matches nothing.
            ("priority", [PRIORITY_FILTERS.get(p) for p in req.job_priorities]),
            ("tags", req.tags_contain),
        ):
            if values:
                groups.append(self._union(field, values))
        found: set[str] | frozenset[str] | None = None
        if groups:
            groups.sort(key=len)
            found = groups[0].intersection(*groups[1:]) if len(groups) > 1 else groups[0]
        if req.keyword:
            found = self._with_keyword(found, req.keyword)
        excluded = self._union("tags", req.tags_not_contain) if req.tags_not_contain else None
        if found is not None and excluded:
            return found - excluded, None
        return found, excluded

    def _union(self, field: str, values: Iterable[Any]) -> set[str] | frozenset[str]:
        sets = [self._posted[field].get(v, _EMPTY) for v in dict.fromkeys(values)]
        if len(sets) == 1:
            return sets[0]
        return set().union(*sets)

    def _with_keyword(
        self, found: set[str] | frozenset[str] | None, keyword: str
    ) -> set[str] | frozenset[str] | None:
        entries = self._entries
        if found is not None and len(found) < self.sort_matches_below * len(entries):
            return {key for key in found if keyword_matches(entries[key], keyword)}
        # Users and VCs are few: match their values, then take their sets; then the names.
        hits = self._name_hits(keyword)
        for field in ("user", "vc"):
            for value, keys in self._posted[field].items():
                if keyword in value:
                    hits |= keys
        if found is None:
            # Every job (a keyword such as "job"): walk the orders as if unfiltered.
            return None if len(hits) == len(entries) else hits
        return hits & found

    def _name_hits(self, keyword: str) -> set[str]:
        """The keys of the jobs whose name holds `keyword`."""
        names, keys = self._names, self._name_keys
        if "\n" not in keyword:
            self._extend_haystack()
            haystack, starts = self._haystack, self._starts
            # A find per hit beats the comprehension while hits are rare.
            if haystack.count(keyword) <= len(names) // 8:
                hits: set[str] = set()
                at = haystack.find(keyword)
                while at >= 0:
                    i = bisect_right(starts, at) - 1
                    hits.add(keys[i])
                    # The next name: a name with the keyword twice is one hit.
                    at = haystack.find(keyword, starts[i + 1]) if i + 1 < len(starts) else -1
                return hits
        return {key for key, name in zip(keys, names, strict=True) if keyword in name}

    def _extend_haystack(self) -> None:
        added = self._names[len(self._starts) :]
        if not added:
            return
        base = len(self._haystack)
        self._starts += [base + at for at in accumulate((len(n) + 1 for n in added[:-1]), initial=0)]
        self._haystack += "\n".join(added) + "\n"

    def state_counts(self, usernames: Iterable[str], virtual_cluster: str | None) -> dict[str, int]:
        """How many jobs of these users (none: everyone's) in this VC (None: every VC) are in each state;
        states with no job are left out."""
        groups: list[set[str] | frozenset[str]] = []
        users = list(usernames)
        if users:
            groups.append(self._union("user", users))
        if virtual_cluster:
            groups.append(self._union("vc", [virtual_cluster]))
        if not groups:
            return {state: len(keys) for state, keys in self._posted["state"].items() if keys}
        groups.sort(key=len)
        found = groups[0].intersection(*groups[1:]) if len(groups) > 1 else groups[0]
        entries = self._entries
        return dict(Counter(entries[key].state for key in found))

    def page(self, req: ListJobsRequest) -> Page:
        """The page a request asks for, ordered as `queries.list_sort` orders it (submission order: by
        `seq`), and the number of matches."""
        found, excluded = self._filtered(req)
        descending = req.order == "DESC"
        start, stop = req.offset, req.offset + req.limit
        if found is None and excluded:
            order = self._order(req.order_field)
            walk: Iterator[str] = reversed(order) if descending else iter(order)
            keys = list(islice(filterfalse(excluded.__contains__, walk), start, stop))
            return Page(keys, len(order) - len(excluded))
        if found is None:
            order = self._order(req.order_field)
            n = len(order)
            if descending:
                keys = order[max(0, n - stop) : max(0, n - start)][::-1]
            else:
                keys = order[start:stop]
            return Page(keys, n)
        total = len(found)
        if start >= total:
            return Page([], total)
        if total < self.sort_matches_below * len(self._entries):
            ranked = sorted(found, key=self._keyed(SORT_KEYS[req.order_field]), reverse=descending)
            return Page(ranked[start:stop], total)
        order = self._order(req.order_field)
        walk = reversed(order) if descending else iter(order)
        return Page(list(islice(filter(found.__contains__, walk), start, stop)), total)
