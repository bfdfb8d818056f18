"""What the token page may show of a token: its id, kind and dates, read from the JWT's claims. Pure.

The claims are read without checking the signature: the API handed these tokens to their owner, and
nothing here trusts them for anything but display. The token itself is never put in a page.
"""

from __future__ import annotations

import base64
import json
from typing import Any


def claims(token: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        data = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def describe(token: str, current: str) -> dict[str, Any]:
    c = claims(token)
    return {
        "id": str(c.get("jti", "")),
        "application": bool(c.get("application")),
        "issued_ms": int(c["iat"]) * 1000 if isinstance(c.get("iat"), int) else None,
        "expires_ms": int(c["exp"]) * 1000 if isinstance(c.get("exp"), int) else None,
        "current": token == current,
    }
