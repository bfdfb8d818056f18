"""Which MongoDB-wire server of the embedded default holds which service's database (issue 17).

Each service owns one database (``pai_<service>``); a real MongoDB serves them all from one URL
(``PAI_MONGO_URL``). The embedded server is one Python process (SecantusDB), and under load one process
serialises every service's transactions: ``pai up`` gives the busiest databases a server process of
their own (``PAI_MONGO_SPLIT``, default ``DEFAULT_SPLIT``) and serves the rest from the shared one.
Each service still gets one URL, in its own ``PAI_MONGO_URL``: the services do not know.

A data dir keeps the layout it was made with (``<data dir>/mongo-layout.json``): changing the setting
later never moves a database, so nothing is ever looked for on a server that does not hold it. A data
dir written before this file existed has every database in the shared store (``<data dir>/mongo``) and
keeps it that way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LAYOUT_FILE = "mongo-layout.json"
# The shared server's store: the only one before issue 17, so an older data dir is served as it was.
SHARED_STORE = "mongo"
# The services with a database (the portal has none); every node agent uses the runtime's.
DATABASES = (
    "auth",
    "storage",
    "jobs",
    "scheduler",
    "orchestrator",
    "diagnosis",
    "monitoring",
    "marketplace",
    "gateway",
    "runtime",
)
# The databases that get a server of their own when the setting says nothing. Measured on the 2-core
# machine (benchmarks/RESULTS.md, issue 17, "one MongoDB-wire server per busy database", main and this
# alternated): with jobs and the orchestrator on servers of their own, jobs/s rose 50-65% and CPU per job
# fell 14-16% on a quiet machine, 22-35% and 7% under moderate load, nothing under load 12-36, for 60-100 MiB
# more RSS.
DEFAULT_SPLIT: tuple[str, ...] = ("jobs", "orchestrator")
SPLIT_ENV = "PAI_MONGO_SPLIT"


def own_store(service: str) -> str:
    """The store (and the server's name) of ``service``'s database when it has a server of its own."""
    return f"{SHARED_STORE}-{service}"


class LayoutError(ValueError):
    """The split setting or the data dir's layout file names something that is not a database."""


@dataclass(frozen=True)
class MongoLayout:
    """``own``: the services whose database has a server of its own; every other one is on the shared."""

    own: tuple[str, ...] = ()

    def store(self, service: str) -> str:
        return own_store(service) if service in self.own else SHARED_STORE

    @property
    def stores(self) -> list[str]:
        return [SHARED_STORE, *(self.store(s) for s in self.own)]

    def to_json(self) -> str:
        return json.dumps({"own_server": list(self.own)}) + "\n"


def parse_split(text: str | None) -> tuple[str, ...]:
    """``PAI_MONGO_SPLIT``: unset or empty for the default, ``none`` for one shared server, or the
    services that get their own server, comma-separated (``jobs,orchestrator``)."""
    if text is None or not text.strip():
        return DEFAULT_SPLIT
    if text.strip().lower() == "none":
        return ()
    names = [n.strip() for n in text.split(",") if n.strip()]
    return _checked(names, f"{SPLIT_ENV}={text!r}")


def _checked(names: Sequence[str], where: str) -> tuple[str, ...]:
    unknown = [n for n in names if n not in DATABASES]
    if unknown:
        raise LayoutError(
            f"{where}: {', '.join(unknown)} is not a service with a database (one of {', '.join(DATABASES)})"
        )
    return tuple(dict.fromkeys(names))  # in order, once each


def choose(
    recorded: str | None, shared_store_used: bool, wanted: tuple[str, ...]
) -> tuple[MongoLayout, str | None]:
    """The layout to serve: the one the data dir records (``recorded``: the layout file's text), else one
    shared server for a data dir whose shared store already holds data (written before layouts), else
    ``wanted``. Answers it and, where it is not ``wanted``, a line that says why (``pai up`` prints it)."""
    if recorded is not None:
        try:
            names = json.loads(recorded)["own_server"]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise LayoutError(
                f"{LAYOUT_FILE} is not a layout this version wrote: {recorded[:200]!r}"
            ) from None
        layout = MongoLayout(_checked(names, LAYOUT_FILE))
        why = (
            f"this data dir keeps the MongoDB-wire servers it was made with ({SPLIT_ENV} applies to new ones)"
        )
    elif shared_store_used:
        layout = MongoLayout()
        why = "this data dir was written by a version with one MongoDB-wire server: it keeps that one"
    else:
        return MongoLayout(wanted), None
    if layout.own == wanted:
        return layout, None
    return layout, f"{why}; own servers: {', '.join(layout.own) or 'none'}"


def load(data_dir: Path, wanted: tuple[str, ...]) -> tuple[MongoLayout, str | None]:
    """The data dir's layout (written on first use, so that it never changes afterwards)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LAYOUT_FILE
    recorded = path.read_text() if path.exists() else None
    shared = data_dir / SHARED_STORE
    layout, note = choose(recorded, shared.is_dir() and any(shared.iterdir()), wanted)
    if recorded is None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(layout.to_json())
        tmp.replace(path)
    return layout, note
