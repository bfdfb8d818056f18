"""The embedded MongoDB-wire server rewrites only the index entries an update changes.

SecantusDB updates a document by removing every index entry the old document had and writing every entry
the new one has, in each of the collection's indexes. The platform's updates change one or two indexed
fields of a document (a job's state, its list entry's update counter) while the collection has up to
ten indexes, so most of those removals and writes put back what they took away. Under a burst of jobs
the two steps were about a fifth of the jobs database server's CPU (py-spy, issue 17).

``rewrite_changed_index_entries`` makes an update statement hold the old document's removal until the
new document's write, then do both only for the indexes whose entries may differ. An index's entries for
a document are derived from the document's values at the index's key paths (each array element, the whole
array, a compound's combinations) if the document is in the index (its partial filter matches), none if
not, and they point at the document's record id, which an update keeps. So an index whose partial filter
gives the same answer for both documents, and whose every key path holds the same value in both (the same
subtree, where the path goes through an array), keeps its entries. "The same" is stricter than Python's
``==`` (``same``): types must match all the way down, embedded documents' field order too. Comparing
values is much cheaper than deriving the keys, which cost about as much as the removals and writes saved
(measured on the first version of this patch). Geo indexes (their cells come from other code) and indexes
with a collation are always rewritten.

What keeps it exact:

- Only the two update statements (one document in one transaction, and a chunk of a multi-update) hold a
  removal, and only until the write of the same record in the same statement attempt, which SecantusDB
  makes right after it. The removal of a deleted document, and every other caller, runs as before.
- A unique index whose keys are unchanged keeps its claim on them (the removal would have released them
  and the write claimed them again for the same record).
- A statement that fails between the two steps aborts its storage transaction, so the held removal is
  dropped with everything else; a write-conflict retry holds its own.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Index = tuple[str, dict[str, Any], bool, bool]
# (storage, db, coll, record id) -> the old document, its indexes and partial filters.
Held = dict[tuple[int, str, str, int], tuple[dict[str, Any], list[Index], dict[str, dict[str, Any]] | None]]

UPDATES = ("_update_matching_single_txn", "_update_chunk")

_local = threading.local()


def _held() -> Held | None:
    held: Held | None = getattr(_local, "held", None)
    return held


def rewrite_changed_index_entries(cls: Any = None) -> bool:
    """Patch SecantusDB's storage class (the whole process), or ``cls``, a subclass of it; False, and
    nothing changed, when this SecantusDB lacks one of the steps it relies on, e.g. after an upgrade."""
    from secantus import storage

    cls = cls or storage.Storage
    if cls.__dict__.get("_pai_index_diff", False):
        return True
    geo_type_of = getattr(storage, "_geo_type_of", None)
    matches = getattr(storage, "matches", None)
    steps = (
        *UPDATES,
        "_delete_index_entries",
        "_write_index_entries",
        "_index_options_map",
        "_partial_filters",
    )
    missing = [name for name in steps if not callable(getattr(cls, name, None))]
    if missing or not all(callable(f) for f in (geo_type_of, matches)):
        log.warning("SecantusDB's storage changed shape: updates rewrite every index entry as before")
        return False
    assert geo_type_of is not None and matches is not None

    remove = cls._delete_index_entries
    write = cls._write_index_entries

    def changed(
        self: Any,
        db: str,
        coll: str,
        old: dict[str, Any],
        new: dict[str, Any],
        indexes: list[Index],
        partials: dict[str, dict[str, Any]] | None,
    ) -> list[Index]:
        if partials is None:
            partials = self._partial_filters(db, coll)
        options = self._index_options_map(db, coll)
        differ: list[Index] = []
        for index in indexes:
            name, key_spec = index[0], index[1]
            if geo_type_of(key_spec) is not None or options.get(name, {}).get("collation") is not None:
                differ.append(index)
                continue
            partial = partials.get(name)
            if partial is not None:
                was, now = bool(matches(old, partial)), bool(matches(new, partial))
                if was != now:
                    differ.append(index)
                    continue
                if not was:
                    continue  # in the index neither before nor after
            if not all(same_at(old, new, field.split(".")) for field in key_spec):
                differ.append(index)
        return differ

    def delete_index_entries(
        self: Any,
        db: str,
        coll: str,
        doc: dict[str, Any],
        indexes: list[Index],
        partials: dict[str, dict[str, Any]] | None = None,
        *,
        recordid: int,
    ) -> None:
        held = _held()
        if held is None or not indexes:
            remove(self, db, coll, doc, indexes, partials, recordid=recordid)
            return
        held[(id(self), db, coll, recordid)] = (doc, indexes, partials)

    def write_index_entries(
        self: Any,
        db: str,
        coll: str,
        doc: dict[str, Any],
        indexes: list[Index],
        partials: dict[str, dict[str, Any]] | None = None,
        *,
        recordid: int,
    ) -> None:
        held = _held()
        old = held.pop((id(self), db, coll, recordid), None) if held is not None else None
        if old is None:
            write(self, db, coll, doc, indexes, partials, recordid=recordid)
            return
        old_doc, old_indexes, old_partials = old
        if old_indexes is not indexes and old_indexes != indexes:
            # Not the pair an update makes: do what SecantusDB would have done.
            remove(self, db, coll, old_doc, old_indexes, old_partials, recordid=recordid)
            write(self, db, coll, doc, indexes, partials, recordid=recordid)
            return
        differ = changed(self, db, coll, old_doc, doc, indexes, partials)
        if differ:
            remove(self, db, coll, old_doc, differ, partials, recordid=recordid)
            write(self, db, coll, doc, differ, partials, recordid=recordid)

    patched: dict[str, Callable[..., Any]] = {
        "_delete_index_entries": delete_index_entries,
        "_write_index_entries": write_index_entries,
        **{name: _holding(getattr(cls, name)) for name in UPDATES},
    }
    for name, fn in patched.items():
        setattr(cls, name, fn)
    cls._pai_index_diff = True
    return True


_MISSING = object()


def same_at(old: Any, new: Any, path: list[str]) -> bool:
    """Whether ``old`` and ``new`` have the same value at ``path``, or the same subtree above it where the
    path goes through an array (an index key of such a path comes from every element)."""
    for part in path:
        if type(old) is not type(new):
            return False
        if type(old) is not dict:
            # An array (the keys come from its elements) or a scalar (the rest of the path is missing in
            # both): the whole value decides.
            return same(old, new)
        old, new = old.get(part, _MISSING), new.get(part, _MISSING)
    return same(old, new)


def same(old: Any, new: Any) -> bool:
    """Equal as index keys would tell: same types all the way down (``1``, ``1.0`` and ``True`` are three
    keys to Python's one), same field order in embedded documents, and ``-0.0`` apart from ``0.0``."""
    kind = type(old)
    if kind is not type(new):
        return False
    if kind is dict:
        return list(old) == list(new) and all(same(v, new[k]) for k, v in old.items())
    if kind is list:
        return len(old) == len(new) and all(same(a, b) for a, b in zip(old, new, strict=True))
    if kind is float:
        return bool(old == new) and math.copysign(1.0, old) == math.copysign(1.0, new)
    return bool(old == new)


def _holding(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def statement(*args: Any, **kwargs: Any) -> Any:
        if _held() is not None:
            return fn(*args, **kwargs)
        _local.held = {}
        try:
            return fn(*args, **kwargs)
        finally:
            held, _local.held = _held(), None
            if held:
                # A removal held for a write that never came: only an attempt that aborted (the statement,
                # or one of its write-conflict retries) leaves one, and its transaction took the rest along.
                log.debug("update statement ended with held index removals", extra={"count": len(held)})

    return statement
