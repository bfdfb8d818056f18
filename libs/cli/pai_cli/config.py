"""Where the CLI keeps the platform URL, the user name and the bearer token.

The file is `$PAI_CLI_CONFIG`, or `~/.config/pai/cli.json`, holding `{"url", "username", "token"}`.
Environment variables win over the file (`PAI_URL`, `PAI_TOKEN`, `PAI_USER`), so CI jobs and scripts can
talk to a platform without writing a token to disk.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:9186"
"""Where `pai up` serves the REST API; 9186 is OpenPAI's rest-server port, kept for familiarity."""

ENV_CONFIG_PATH = "PAI_CLI_CONFIG"
ENV_URL = "PAI_URL"
ENV_TOKEN = "PAI_TOKEN"
ENV_USER = "PAI_USER"


@dataclass(frozen=True)
class CliConfig:
    """What a client needs to talk to the platform; `token`/`username` are None before `pai login`."""

    url: str = DEFAULT_URL
    username: str | None = None
    token: str | None = None


def config_path() -> Path:
    """The config file: `$PAI_CLI_CONFIG` when set, else `~/.config/pai/cli.json`."""
    override = os.environ.get(ENV_CONFIG_PATH)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".config" / "pai" / "cli.json"


def _read_file(path: Path) -> dict[str, object]:
    # A missing or damaged file means "not logged in yet", not a crash: the user's next step is `pai login`,
    # which rewrites the file anyway.
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def load_config(path: Path | None = None) -> CliConfig:
    """The file's values, each overridden by its environment variable when that is set and non-empty."""
    data = _read_file(path if path is not None else config_path())
    url = os.environ.get(ENV_URL) or _str_or_none(data.get("url")) or DEFAULT_URL
    username = os.environ.get(ENV_USER) or _str_or_none(data.get("username"))
    token = os.environ.get(ENV_TOKEN) or _str_or_none(data.get("token"))
    return CliConfig(url=url.rstrip("/"), username=username, token=token)


def save_config(url: str, username: str, token: str, path: Path | None = None) -> Path:
    """Write the config file readable by its owner only (0600) and return its path.

    Also called by `pai up` after it logs in, so the signature is part of the package's contract.
    """
    target = path if path is not None else config_path()
    # The directory holds a bearer token too, so create it private; an existing one is left as it is.
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    body = json.dumps({"url": url.rstrip("/"), "username": username, "token": token}, indent=2) + "\n"
    # Write a sibling file created 0600 and rename it over the target: the token is never readable by others,
    # not even for a moment, and a crash mid-write cannot leave a truncated config behind.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            # O_CREAT's mode is ignored when a stale temp file already exists, so set it explicitly.
            os.fchmod(handle.fileno(), 0o600)
            handle.write(body)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)
    return target
