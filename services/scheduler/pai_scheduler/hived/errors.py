"""The two kinds of error the HiveD core raises (user errors in a request are decisions, not exceptions)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A cluster or VC config that cannot be used; the message names the chain, level or field."""


class UnsupportedRequestError(ValueError):
    """A request for a feature this part of the allocator does not implement yet (see the package README).

    Raised instead of silently scheduling the request some other way.
    """
