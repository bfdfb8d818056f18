"""The gateway: OpenPAI REST API v2 over the bus."""
