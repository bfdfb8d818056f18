"""Where the CLI keeps its clusters ("contexts"): each a URL, a user name and a bearer token.

The file is ``$PAI_CLI_CONFIG``, or ``~/.config/pai/cli.json``, readable by its owner only::

    {"version": 2, "current": "lab", "contexts": {"lab": {"url": ..., "username": ..., "token": ...}}}

The single-cluster file of earlier versions (``{"url", "username", "token"}``) is read as one context named
``default`` and written back in this form at the next change. ``PAI_CONTEXT`` picks another context than
the current one; ``PAI_URL``, ``PAI_TOKEN`` and ``PAI_USER`` override the chosen context's values, so CI jobs
and scripts can talk to a platform without writing a token to disk.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_URL = "http://127.0.0.1:9186"
"""Where `pai up` serves the REST API; 9186 is OpenPAI's rest-server port, kept for familiarity."""

ENV_CONFIG_PATH = "PAI_CLI_CONFIG"
ENV_CONTEXT = "PAI_CONTEXT"
ENV_URL = "PAI_URL"
ENV_TOKEN = "PAI_TOKEN"
ENV_USER = "PAI_USER"
VERSION = 2
DEFAULT_CONTEXT = "default"
CONTEXT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,62}$")


class ConfigError(ValueError):
    """A context that does not exist, or a name or URL a context cannot have."""


@dataclass(frozen=True)
class CliConfig:
    """What a client needs to talk to the platform; ``token``/``username`` are None before `pai login`."""

    url: str = DEFAULT_URL
    username: str | None = None
    token: str | None = None
    context: str | None = None


@dataclass(frozen=True)
class Context:
    name: str
    url: str
    username: str | None = None
    token: str | None = None


@dataclass
class ConfigFile:
    current: str | None = None
    contexts: dict[str, Context] = field(default_factory=dict)
    # True when read from the single-cluster file of earlier versions.
    migrated: bool = False

    def get(self, name: str) -> Context:
        if name not in self.contexts:
            known = ", ".join(sorted(self.contexts)) or "none yet (`pai context add` or `pai login`)"
            raise ConfigError(f"no context named {name!r}; known: {known}")
        return self.contexts[name]

    def put(self, context: Context) -> None:
        check_context_name(context.name)
        check_url(context.url)
        self.contexts[context.name] = context

    def delete(self, name: str) -> None:
        self.get(name)
        del self.contexts[name]
        if self.current == name:
            self.current = next(iter(sorted(self.contexts)), None)

    def name_for(self, url: str) -> str:
        """The context a login to ``url`` updates: one already on that URL, else a new name."""
        url = url.rstrip("/")
        for context in self.contexts.values():
            if context.url == url:
                return context.name
        if not self.contexts:
            return DEFAULT_CONTEXT
        parts = urlsplit(url)
        base = re.sub(r"[^A-Za-z0-9_.:@-]", "-", parts.netloc or "cluster")
        name, n = base, 2
        while name in self.contexts:
            name, n = f"{base}-{n}", n + 1
        return name


def check_context_name(name: str) -> str:
    if not CONTEXT_NAME.match(name):
        raise ConfigError(f"context name {name!r}: letters, digits and _ . : @ - only (at most 63)")
    return name


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"URL {url!r} must look like http(s)://host[:port]")
    return url.rstrip("/")


def config_path() -> Path:
    """The config file: ``$PAI_CLI_CONFIG`` when set, else ``~/.config/pai/cli.json``."""
    override = os.environ.get(ENV_CONFIG_PATH)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".config" / "pai" / "cli.json"


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def read_file(path: Path | None = None) -> ConfigFile:
    """The file's contexts. A missing or damaged file has none: the user's next step is `pai login`."""
    try:
        data = json.loads((path or config_path()).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ConfigFile()
    if not isinstance(data, dict):
        return ConfigFile()
    if "contexts" not in data:
        url = _str_or_none(data.get("url"))
        if url is None:
            return ConfigFile()
        old = Context(
            DEFAULT_CONTEXT,
            url.rstrip("/"),
            _str_or_none(data.get("username")),
            _str_or_none(data.get("token")),
        )
        return ConfigFile(DEFAULT_CONTEXT, {DEFAULT_CONTEXT: old}, migrated=True)
    contexts: dict[str, Context] = {}
    raw = data.get("contexts")
    for name, body in (raw if isinstance(raw, dict) else {}).items():
        url = _str_or_none(body.get("url")) if isinstance(body, dict) else None
        if url is None or not CONTEXT_NAME.match(str(name)):
            continue  # a context that cannot be used is dropped at the next write, not a crash now
        assert isinstance(body, dict)
        contexts[str(name)] = Context(
            str(name), url.rstrip("/"), _str_or_none(body.get("username")), _str_or_none(body.get("token"))
        )
    current = _str_or_none(data.get("current"))
    return ConfigFile(current if current in contexts else None, contexts)


def write_file(config: ConfigFile, path: Path | None = None) -> Path:
    """Write the file readable by its owner only (0600), atomically, and return its path."""
    target = path if path is not None else config_path()
    # The directory holds bearer tokens too, so create it private; an existing one is left as it is.
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    body = {
        "version": VERSION,
        "current": config.current,
        "contexts": {
            c.name: {"url": c.url, "username": c.username, "token": c.token}
            for c in sorted(config.contexts.values(), key=lambda c: c.name)
        },
    }
    # A sibling file created 0600 and renamed over the target: the token is never readable by others, not
    # even for a moment, and a crash mid-write cannot leave a truncated config behind.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            # O_CREAT's mode is ignored when a stale temp file already exists, so set it explicitly.
            os.fchmod(handle.fileno(), 0o600)
            handle.write(json.dumps(body, indent=2) + "\n")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)
    return target


def load_config(path: Path | None = None, context: str | None = None) -> CliConfig:
    """The chosen context (``context``, else ``$PAI_CONTEXT``, else the current one), each value overridden
    by its environment variable when that is set and non-empty."""
    file = read_file(path)
    name = context or os.environ.get(ENV_CONTEXT) or file.current
    chosen = file.get(name) if name else None
    url = os.environ.get(ENV_URL) or (chosen.url if chosen else DEFAULT_URL)
    username = os.environ.get(ENV_USER) or (chosen.username if chosen else None)
    token = os.environ.get(ENV_TOKEN) or (chosen.token if chosen else None)
    return CliConfig(
        url=url.rstrip("/"), username=username, token=token, context=chosen.name if chosen else None
    )


def save_config(
    url: str, username: str, token: str | None, path: Path | None = None, context: str | None = None
) -> Path:
    """Keep a login: the context ``context`` (else the one on ``url``, else a new one) gets the URL, user
    and token, and becomes the current one. Returns the file's path.

    Also called by `pai up` after it logs in, so the signature is part of the package's contract.
    """
    file = read_file(path)
    name = context or file.name_for(url)
    file.put(Context(name, check_url(url), username, token))
    file.current = name
    return write_file(file, path)


def forget_token(context: str, path: Path | None = None) -> Path:
    """Drop a context's token (after `pai logout`), keeping its URL and user."""
    file = read_file(path)
    file.put(replace(file.get(context), token=None))
    return write_file(file, path)
