"""The monitoring service: platform metrics and alerts."""
