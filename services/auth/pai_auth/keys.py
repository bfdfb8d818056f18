"""JWT signing keys, kept in a file (never in the database) and rotatable.

The newest key signs; every key in the file verifies, so adding a key does not log anyone out, and
removing an old one later retires the tokens it signed. The running service rereads the file when it
changes, so ``python -m pai_auth.keys rotate <data-dir>`` (then, a token lifetime later, ``retire``) needs
no restart.

One replica keeps the file in its data directory and creates it on first start. Several replicas must
sign and verify with the same keys, so they read one file that the operator provides
(``PAI_AUTH_KEYS_FILE``, a Kubernetes Secret mounted read-only) and never create it: a replica that made
a key of its own would issue tokens its peers reject.
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


class KeysFileError(ValueError):
    """The signing keys file is missing or malformed: the service cannot issue or check tokens."""


def load(path: Path) -> list[SigningKey]:
    """The keys of an existing file; a missing or malformed one is an error, never replaced."""
    try:
        data = json.loads(path.read_text())
        keys = [SigningKey(str(k["kid"]), str(k["secret"])) for k in data["keys"]]
    except FileNotFoundError:
        raise KeysFileError(
            f"signing keys file {path} does not exist (make one: `python -m pai_auth.keys rotate {path}`)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KeysFileError(f"signing keys file {path} cannot be read: {exc!r}") from None
    if not keys:
        raise KeysFileError(f"{path} holds no signing key")
    if any(len(k.secret) < 32 or not k.kid for k in keys):
        raise KeysFileError(f"{path}: every key needs a kid and a secret of at least 32 characters")
    return keys


def load_or_create(path: Path) -> list[SigningKey]:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _write(path, [SigningKey(secrets.token_hex(8), secrets.token_urlsafe(48))])
    return load(path)


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
        raise SystemExit("usage: python -m pai_auth.keys rotate|retire <data-dir | keys file.json>")
    # A data directory (one replica), or the file itself (the content of a Kubernetes Secret).
    target = Path(args[1])
    path = target if target.suffix == ".json" else target / "auth" / "jwt-keys.json"
    keys = rotate(path) if args[0] == "rotate" else retire(path)
    print(f"{path}: {len(keys)} key(s); signing with {keys[-1].kid}")


if __name__ == "__main__":
    main()
