"""The message contract: every event, command and RPC body as a pydantic model.

`proto/` is generated from these models (``python -m pai_common.contract.generate``) and a test checks
that the two never drift.
"""
