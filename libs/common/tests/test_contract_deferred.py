"""The contract's models are built at their first use, not when a service imports them (``defer_build``
on ``Message``), and a deferred model validates as before: unknown fields refused, frozen, the same errors."""

from __future__ import annotations

import subprocess
import sys

import pydantic
import pytest

from pai_common.contract import rpc

PROBE = """
import pydantic
import pai_jobs.shell
from pai_common.contract import base, commands, events, rpc
models = [
    m for module in (commands, events, rpc) for m in vars(module).values()
    if isinstance(m, type) and issubclass(m, base.Message) and m.__module__ == module.__name__
]
print(len(models), sum(1 for m in models if m.__pydantic_complete__))
"""


def test_a_service_imports_the_contract_without_building_it() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    models, built = (int(n) for n in out.split())
    assert models > 100
    assert built == 0


def test_a_deferred_model_validates_as_before() -> None:
    model = rpc.ListNodesRequest
    value = model.model_validate({})
    assert model.__pydantic_complete__
    with pytest.raises(pydantic.ValidationError) as refused:
        model.model_validate({"bogus": 1})
    assert [(e["type"], e["loc"]) for e in refused.value.errors()] == [("extra_forbidden", ("bogus",))]
    with pytest.raises(pydantic.ValidationError):
        value.__setattr__("bogus", 1)
