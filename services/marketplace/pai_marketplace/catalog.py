"""The marketplace's rules, with no I/O: what a template may hold, who sees it, who changes it, how a
search matches and orders. The shell loads documents and applies these.

A template document: ``{_id, name, description, tags, protocol, author, visibility, groups, stars,
useCount, createdTime, updatedTime}``; ``stars`` is the set of users who starred it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import yaml

from pai_common.errors import InvalidParametersError

# The author of the templates the platform ships; not a valid user name, so no user can own them.
PLATFORM_AUTHOR: Final = "(platform)"
MAX_TAGS: Final = 16
_TAG: Final = re.compile(r"^[^,\s][^,]{0,62}[^,\s]?$")
_GROUP: Final = re.compile(r"^[A-Za-z0-9_]+$")
MAX_PROTOCOL_BYTES: Final = 256 * 1024


def new_id(name: str) -> str:
    """A readable, unique id: the name as a slug, and a random suffix."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60] or "template"
    return f"{slug}-{secrets.token_hex(3)}"


def check_protocol(text: str) -> list[str]:
    """Problems that make a text unusable as a job template (the jobs service judges the rest at submit)."""
    if len(text.encode()) > MAX_PROTOCOL_BYTES:
        return [f"protocol: larger than {MAX_PROTOCOL_BYTES // 1024} KiB"]
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return [f"protocol: not YAML ({str(exc).splitlines()[0]})"]
    if not isinstance(doc, dict):
        return ["protocol: must be a YAML mapping (a job protocol v2 document)"]
    problems = []
    if str(doc.get("protocolVersion")) not in ("2", "2.0"):
        problems.append("protocol: protocolVersion must be 2")
    if not isinstance(doc.get("taskRoles"), dict) or not doc["taskRoles"]:
        problems.append("protocol: taskRoles must name at least one task role")
    return problems


def clean_fields(fields: Mapping[str, Any], creating: bool) -> dict[str, Any]:
    """The given fields, checked and normalised; every problem is reported at once."""
    problems: list[str] = []
    out: dict[str, Any] = {}
    if fields.get("name") is not None or creating:
        name = str(fields.get("name") or "").strip()
        if not name:
            problems.append("name: required")
        out["name"] = name
    if fields.get("description") is not None or creating:
        out["description"] = str(fields.get("description") or "").strip()
    if fields.get("tags") is not None or creating:
        tags = [str(t).strip() for t in fields.get("tags") or [] if str(t).strip()]
        bad = [t for t in tags if not _TAG.match(t)]
        if bad:
            problems.append(f"tags: {', '.join(repr(t) for t in bad)}: at most 64 characters, no commas")
        if len(tags) > MAX_TAGS:
            problems.append(f"tags: at most {MAX_TAGS}")
        out["tags"] = sorted(set(tags), key=tags.index)
    if fields.get("protocol") is not None or creating:
        protocol = str(fields.get("protocol") or "")
        problems += check_protocol(protocol)
        out["protocol"] = protocol
    if fields.get("visibility") is not None or creating:
        out["visibility"] = fields.get("visibility") or "all"
    if fields.get("groups") is not None or creating:
        groups = [str(g).strip() for g in fields.get("groups") or [] if str(g).strip()]
        bad = [g for g in groups if not _GROUP.match(g)]
        if bad:
            problems.append(f"groups: {', '.join(repr(g) for g in bad)} are not group names")
        out["groups"] = sorted(set(groups))
    if out.get("visibility") == "groups" and "groups" in out and not out["groups"]:
        problems.append("groups: name at least one group when the template is visible to groups")
    if problems:
        raise InvalidParametersError("; ".join(problems))
    return out


def visible(doc: Mapping[str, Any], username: str, admin: bool, groups: Iterable[str]) -> bool:
    if admin or doc.get("author") == username or doc.get("visibility", "all") == "all":
        return True
    return bool(set(groups).intersection(doc.get("groups") or []))


def may_edit(doc: Mapping[str, Any], username: str, admin: bool) -> bool:
    return admin or doc.get("author") == username


def matches(doc: Mapping[str, Any], keyword: str, tag: str, author: str) -> bool:
    if author and doc.get("author") != author:
        return False
    if tag and tag.lower() not in (t.lower() for t in doc.get("tags") or []):
        return False
    if keyword:
        needle = keyword.lower()
        haystack = [
            doc.get("name", ""),
            doc.get("description", ""),
            doc.get("author", ""),
            *doc.get("tags", []),
        ]
        return any(needle in str(h).lower() for h in haystack)
    return True


def ordered(docs: Sequence[Mapping[str, Any]], order: str) -> list[Mapping[str, Any]]:
    if order == "name":
        return sorted(docs, key=lambda d: (str(d.get("name", "")).lower(), d["_id"]))
    field = {"stars": "starCount", "uses": "useCount", "updated": "updatedTime"}.get(order, "starCount")

    def key(d: Mapping[str, Any]) -> tuple[Any, ...]:
        value = len(d.get("stars") or []) if field == "starCount" else d.get(field, 0)
        return (-(value or 0), -(d.get("updatedTime") or 0), d["_id"])

    return sorted(docs, key=key)


def view(doc: Mapping[str, Any], username: str, admin: bool, with_protocol: bool = True) -> dict[str, Any]:
    """A template as the API shows it to ``username`` (who starred it is not shown, only the count)."""
    stars = doc.get("stars") or []
    out: dict[str, Any] = {
        "id": doc["_id"],
        "name": doc.get("name", ""),
        "description": doc.get("description", ""),
        "tags": list(doc.get("tags") or []),
        "author": doc.get("author", ""),
        "visibility": {"type": doc.get("visibility", "all"), "groups": list(doc.get("groups") or [])},
        "starCount": len(stars),
        "starred": username in stars,
        "useCount": int(doc.get("useCount", 0)),
        "createdTime": doc.get("createdTime"),
        "updatedTime": doc.get("updatedTime"),
        "editable": may_edit(doc, username, admin),
    }
    if with_protocol:
        out["protocol"] = doc.get("protocol", "")
    return out
