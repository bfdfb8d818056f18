"""JWT signing keys, kept in the data directory (never in the database) and rotatable.

The newest key signs; every key in the file verifies, so adding a key does not log anyone out, and
removing an old one later retires the tokens it signed. The running service rereads the file when it
changes, so ``python -m pai_auth.keys rotate <data-dir>`` (then, a token lifetime later, ``retire``) needs
no restart.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SigningKey:
    kid: str
    secret: str


def load_or_create(path: Path) -> list[SigningKey]:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _write(path, [SigningKey(secrets.token_hex(8), secrets.token_urlsafe(48))])
    data = json.loads(path.read_text())
    keys = [SigningKey(k["kid"], k["secret"]) for k in data["keys"]]
    if not keys:
        raise ValueError(f"{path} holds no signing key")
    return keys


def rotate(path: Path) -> list[SigningKey]:
    keys = [*load_or_create(path), SigningKey(secrets.token_hex(8), secrets.token_urlsafe(48))]
    _write(path, keys)
    return keys


def _write(path: Path, keys: list[SigningKey]) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"keys": [{"kid": k.kid, "secret": k.secret} for k in keys]}, f)
    os.replace(tmp, path)


def retire(path: Path) -> list[SigningKey]:
    """Drop every key but the newest: tokens the older ones signed stop being valid."""
    keys = load_or_create(path)[-1:]
    _write(path, keys)
    return keys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("rotate", "retire"):
        raise SystemExit("usage: python -m pai_auth.keys rotate|retire <data-dir>")
    path = Path(args[1]) / "auth" / "jwt-keys.json"
    keys = rotate(path) if args[0] == "rotate" else retire(path)
    print(f"{path}: {len(keys)} key(s); signing with {keys[-1].kid}")


if __name__ == "__main__":
    main()
