"""The runtime service: one agent per node."""
