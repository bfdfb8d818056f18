"""Shared library of the OpenPAI-in-Python services.

Only what every service needs lives here: settings, the bus (events, commands, RPC), the message
contract, MongoDB access, telemetry and the service runner. Nothing service-specific.
"""

from pai_common import import_hooks

# nats without aiohttp, httpx without its CLI: before any service imports them (import_hooks.py).
import_hooks.install()
