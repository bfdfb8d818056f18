"""Storage definitions: what an admin may define, what anyone is shown, what a job mounts. Pure: no I/O.

A definition is ``{name, type, share, default, readOnly?, mountOptions?, data}``. ``data`` is the type's
(OpenPAI's field names): ``nfs`` server + path, ``samba`` address (``//server/share``) + username,
``azureFile`` accountName + shareName, ``azureBlob`` accountName + containerName, ``local`` path (a host
folder), ``pvc`` claimName (an existing Kubernetes claim); any type may name a Kubernetes Secret
(``secretName``). Credentials given in ``data`` (``password``, ``accountKey``, ``sasToken``) are split off
here: they are stored apart and never shown, logged or sent in an event.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pai_common.contract.rpc import STORAGE_NAME
from pai_common.contract.types import StorageMount

TYPES: Final = ("nfs", "samba", "azureFile", "azureBlob", "local", "pvc")
_HOST = re.compile(r"^[A-Za-z0-9_.:\[\]-]{1,253}$")
_DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
_AZURE_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")
_SAMBA = re.compile(r"^//[^/\s]+/[^\s]+$")
_USER = re.compile(r"^[^\s,=]{1,256}$")
_OPTION = re.compile(r"^[A-Za-z0-9_.=:/@+-]{1,256}$")
MAX_OPTIONS = 32
TOP_FIELDS: Final = ("name", "type", "share", "default", "readOnly", "mountOptions", "data")
# Per type: (required data fields, optional data fields, credential fields).
DATA: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]]] = {
    "nfs": (("server", "path"), ("secretName",), ()),
    "samba": (("address",), ("username", "secretName"), ("password",)),
    "azureFile": (("accountName", "shareName"), ("secretName",), ("accountKey",)),
    "azureBlob": (("accountName", "containerName"), ("secretName",), ("accountKey", "sasToken")),
    "local": (("path",), (), ()),
    "pvc": (("claimName",), (), ()),
}
# Where no task may mount a storage: the system's own folders and the runtime's.
RESERVED_PATHS: Final = (
    "/proc", "/sys", "/dev", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/usr", "/boot", "/run",
    "/var/run", "/usr/local/pai",
)  # fmt: skip
MOUNT_ROOT: Final = "/mnt"


class DefinitionError(ValueError):
    """A definition with wrong fields; ``problems`` names every one."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass
class Definition:
    """A checked definition: the document to store (no credential in it) and the credentials."""

    doc: dict[str, Any]
    credentials: dict[str, str] = field(default_factory=dict)


def _abs_path(value: str) -> bool:
    return value.startswith("/") and posixpath.normpath(value) == value


def _check_data(kind: str, data: Mapping[str, Any], problems: list[str]) -> None:
    required, optional, secret = DATA[kind]
    for key in required:
        if key not in data:
            problems.append(f"data.{key}: required for a {kind} storage")
    for key, value in data.items():
        if key not in (*required, *optional, *secret):
            allowed = ", ".join((*required, *optional, *secret))
            problems.append(f"data.{key}: not a field of a {kind} storage (fields: {allowed})")
        elif not isinstance(value, str) or not value:
            problems.append(f"data.{key}: must be a non-empty string")
    text = {k: v for k, v in data.items() if isinstance(v, str) and v}
    checks: list[tuple[str, re.Pattern[str] | None, str]] = [
        ("server", _HOST, "a host name or IP address"),
        ("address", _SAMBA, "//server/share"),
        ("username", _USER, "a user name without spaces, ',' or '='"),
        ("accountName", _ACCOUNT, "3-24 lowercase letters and digits (an Azure storage account)"),
        ("shareName", _AZURE_NAME, "3-63 lowercase letters, digits and single '-' (an Azure file share)"),
        ("containerName", _AZURE_NAME, "3-63 lowercase letters, digits and single '-' (a blob container)"),
        ("claimName", _DNS_1123, "a Kubernetes object name (DNS-1123)"),
        ("secretName", _DNS_1123, "a Kubernetes object name (DNS-1123)"),
    ]
    for key, pattern, what in checks:
        if key in text and pattern is not None and not pattern.fullmatch(text[key]):
            problems.append(f"data.{key}: must be {what}, got {text[key]!r}")
    for key in ("path",):
        if key in text and (not _abs_path(text[key]) or ".." in text[key].split("/")):
            problems.append(f"data.{key}: must be an absolute, normalised path, got {text[key]!r}")


def check(body: Any, name: str | None = None, old_credentials: Mapping[str, str] | None = None) -> Definition:
    """The definition in ``body`` (create: ``name`` None; update: the route's name, which the body may
    repeat). Credentials left out of an update are kept (``old_credentials``)."""
    if not isinstance(body, Mapping):
        raise DefinitionError(["body: must be a JSON object"])
    problems: list[str] = []
    for key in body:
        if key not in TOP_FIELDS:
            problems.append(f"{key}: not a field of a storage (fields: {', '.join(TOP_FIELDS)})")
    given = body.get("name", name)
    if not isinstance(given, str) or not re.fullmatch(STORAGE_NAME, given):
        problems.append(f"name: must match {STORAGE_NAME}, got {given!r}")
    elif name is not None and given != name:
        problems.append(f"name: {given!r} differs from the storage in the route, {name!r}")
    kind = body.get("type")
    if kind not in TYPES:
        problems.append(f"type: must be one of {', '.join(TYPES)}, got {kind!r}")
    flags: dict[str, bool] = {}
    for key, default in (("share", True), ("default", False), ("readOnly", False)):
        value = body.get(key, default)
        if not isinstance(value, bool):
            problems.append(f"{key}: must be true or false, got {value!r}")
        flags[key] = bool(value)
    options = body.get("mountOptions", [])
    if not isinstance(options, list) or len(options) > MAX_OPTIONS:
        problems.append(f"mountOptions: must be a list of at most {MAX_OPTIONS} strings")
        options = []
    for i, option in enumerate(options):
        if not isinstance(option, str) or not _OPTION.fullmatch(option):
            problems.append(f"mountOptions[{i}]: must be one option without spaces or ',', got {option!r}")
    data = body.get("data", {})
    if not isinstance(data, Mapping):
        problems.append("data: must be an object")
        data = {}
    elif kind in TYPES:
        _check_data(str(kind), data, problems)
    if problems:
        raise DefinitionError(problems)
    _, _, secret_fields = DATA[str(kind)]
    credentials = {k: str(v) for k, v in data.items() if k in secret_fields}
    if not credentials and old_credentials:
        credentials = {k: v for k, v in old_credentials.items() if k in secret_fields}
    shown = {k: str(v) for k, v in data.items() if k not in secret_fields and k != "secretName"}
    doc: dict[str, Any] = {
        "_id": given,
        "type": kind,
        "share": flags["share"],
        "default": flags["default"],
        "readOnly": flags["readOnly"],
        "mountOptions": [str(o) for o in options],
        "data": shown,
        "secretName": data.get("secretName"),
        "hasCredentials": bool(credentials),
    }
    return Definition(doc, credentials)


def summary(doc: Mapping[str, Any]) -> dict[str, Any]:
    """OpenPAI's entry of ``GET /api/v2/storages``."""
    return {
        "name": doc["_id"],
        "share": bool(doc.get("share", True)),
        "volumeName": _volume_name(doc),
        "default": bool(doc.get("default")),
    }


# OpenPAI's `type` has no value for a host folder or a bare claim: those are "other" there.
OPENPAI_TYPES: Final = ("nfs", "samba", "azureFile", "azureBlob")


def detail(doc: Mapping[str, Any]) -> dict[str, Any]:
    """OpenPAI's ``GET /api/v2/storages/{name}`` (``type`` within OpenPAI's values, ``local`` and ``pvc``
    being ``other``), plus ``default`` and the exact ``storageType``; never a credential."""
    shown: dict[str, Any] = {
        **summary(doc),
        "type": doc["type"] if doc["type"] in OPENPAI_TYPES else "other",
        "storageType": doc["type"],
        "data": dict(doc.get("data") or {}),
        "readOnly": bool(doc.get("readOnly")),
    }
    if doc.get("mountOptions"):
        shown["mountOptions"] = list(doc["mountOptions"])
    if doc.get("secretName"):
        shown["secretName"] = doc["secretName"]
    return shown


def _volume_name(doc: Mapping[str, Any]) -> str:
    claim = (doc.get("data") or {}).get("claimName")
    return str(claim) if doc.get("type") == "pvc" and claim else str(doc["_id"])


def mount_path_problem(path: Any) -> str | None:
    if not isinstance(path, str) or not path.startswith("/"):
        return f"must be an absolute path, got {path!r}"
    if posixpath.normpath(path) != path or ".." in path.split("/") or path == "/":
        return f"must be a normalised path below /, got {path!r}"
    for reserved in RESERVED_PATHS:
        if path == reserved or path.startswith(reserved + "/"):
            return f"{path!r} is a system folder ({reserved}); mount storages elsewhere, e.g. under /mnt"
    return None


def mount(doc: Mapping[str, Any], username: str, mount_path: str | None) -> StorageMount:
    """The storage as a task of ``username`` mounts it (a storage that is not shared: the user's folder)."""
    data = dict(doc.get("data") or {})
    return StorageMount(
        name=str(doc["_id"]),
        type=doc["type"],
        mount_path=mount_path or f"{MOUNT_ROOT}/{doc['_id']}",
        read_only=bool(doc.get("readOnly")),
        sub_path=None if doc.get("share", True) else username,
        mount_options=list(doc.get("mountOptions") or []),
        data=data,
        secret_name=doc.get("secretName") or None,
        has_credentials=bool(doc.get("hasCredentials")),
    )
