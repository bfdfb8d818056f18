"""Prometheus metrics every service exposes on /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

MESSAGES = Counter(
    "pai_bus_messages_total",
    "Messages handled by a durable consumer, by outcome (ok, duplicate, retried, dead_lettered).",
    ["consumer", "type", "outcome"],
)
HANDLE_SECONDS = Histogram(
    "pai_bus_handle_seconds",
    "Time to handle one message, transaction and outbox included.",
    ["consumer", "type"],
)
RPC_REQUESTS = Counter(
    "pai_rpc_requests_total", "RPC requests answered, by endpoint and outcome.", ["endpoint", "outcome"]
)
