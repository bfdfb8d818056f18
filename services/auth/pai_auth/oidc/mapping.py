"""From an ID token's claims to a platform user: the name, the email and the groups. Pure.

Groups follow the provider: at every sign-in the user's grouplist becomes ``default``, plus each platform
group whose ``externalName`` is in the token's groups claim (Azure AD sends group object ids, Keycloak and
Dex send names), plus the groups without an external name that the user already had (an admin's choice the
provider knows nothing about).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pai_auth import rights

USERNAME = re.compile(r"^[\w.-]{1,64}$")


class MappingError(Exception):
    """The claims do not name a user this platform can have; the message says which claim is wrong."""


def username(claims: Mapping[str, Any], claim: str) -> str:
    """The platform user name: ``claim`` (its local part when it is an address), else the email's.

    OpenPAI does the same with Azure AD's UPN. A name outside ``[\\w.-]`` is refused, never rewritten:
    two provider names must not collapse onto one platform user.
    """
    for source in (claim, "email"):
        value = claims.get(source)
        if not isinstance(value, str) or not value:
            continue
        name = value.split("@", 1)[0] if "@" in value else value
        if not USERNAME.match(name):
            raise MappingError(f"the {source} claim {value!r} is not a user name (letters, digits, _.-)")
        return name
    raise MappingError(f"the ID token has neither a {claim!r} nor an 'email' claim to name the user")


def email(claims: Mapping[str, Any]) -> str:
    value = claims.get("email")
    return value if isinstance(value, str) and len(value) <= 256 else ""


def external_groups(claims: Mapping[str, Any], claim: str) -> frozenset[str]:
    """The provider's group names or ids (a list, or one string); anything else counts as none."""
    value = claims.get(claim)
    if isinstance(value, str):
        return frozenset({value})
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str) and v)
    return frozenset()


def grouplist(
    current: Iterable[str], groups: Mapping[str, Mapping[str, Any]], external: frozenset[str]
) -> list[str]:
    """The grouplist after a sign-in (see the module's doc); order: kept groups first, then new ones."""
    kept = [
        name
        for name in current
        if name in groups and not str(groups[name].get("externalName") or "") and name != rights.DEFAULT_GROUP
    ]
    mapped = sorted(
        name
        for name, group in groups.items()
        if str(group.get("externalName") or "") in external and name not in kept
    )
    return list(dict.fromkeys([rights.DEFAULT_GROUP, *kept, *mapped]))
