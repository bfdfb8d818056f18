"""Shared library of the OpenPAI-in-Python services.

Only what every service needs lives here: settings, the bus (events, commands, RPC), the message
contract, MongoDB access, telemetry and the service runner. Nothing service-specific.
"""

from pai_common.nats_import import import_nats_without_websockets

import_nats_without_websockets()
