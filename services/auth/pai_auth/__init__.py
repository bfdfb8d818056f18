"""The auth service: users, groups, tokens."""
