"""The diagnosis service: every task exit classified."""
