"""The architecture's first rules, executable.

1. Services never import each other: a service's package (and its tests) imports no other service's
   package nor the CLI; ``libs/common`` imports no service and not the CLI; the CLI imports no service
   (it starts them as processes, ``python -m pai_<name>``).
2. The contract tells the truth: every event's declared consumers are exactly the services that subscribe
   to it, every command's consumer takes it, and every RPC is served by the service that owns it. The
   subscriptions are read from each service's own app as its ``build_app`` registers them, not guessed.
"""

from __future__ import annotations

import ast
import importlib
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from pai_common.contract.base import COMMAND_SUBJECT_PREFIX, event_subject, rpc_subject
from pai_common.contract.commands import ALL_COMMANDS
from pai_common.contract.events import ALL_EVENTS
from pai_common.contract.rpc import ALL_RPCS
from pai_common.service import ServiceApp

ROOT = Path(__file__).resolve().parents[1]
SERVICES_DIR = ROOT / "services"


# ---- 1. imports ---------------------------------------------------------------------------------------


def service_names(services_dir: Path = SERVICES_DIR) -> list[str]:
    return sorted(p.name for p in services_dir.iterdir() if (p / f"pai_{p.name}").is_dir())


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """(line, top-level module) of every absolute import in a file, dynamic imports of constants included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value.split(".")[0]


def import_violations(root: Path) -> list[str]:
    """Every import that crosses a boundary it may not, as `path:line: what`."""
    services = service_names(root / "services")
    packages = {f"pai_{name}": name for name in services}
    found = []

    def check(files: Iterator[Path], owner: str, forbidden: set[str]) -> None:  # owner: who imports
        for path in files:
            for line, module in imported_modules(path):
                if module in forbidden:
                    what = "the CLI" if module == "pai_cli" else f"the {packages[module]} service"
                    found.append(f"{path.relative_to(root)}:{line}: {owner} imports {what} ({module})")

    for name in services:
        others = {pkg for pkg, svc in packages.items() if svc != name} | {"pai_cli"}
        check((root / "services" / name).rglob("*.py"), name, others)
    check((root / "libs" / "common").rglob("*.py"), "common", set(packages) | {"pai_cli"})
    check((root / "libs" / "cli").rglob("*.py"), "cli", set(packages))
    return sorted(found)


def test_no_service_imports_another_and_common_imports_no_service_or_cli() -> None:
    assert len(service_names()) >= 9
    violations = import_violations(ROOT)
    assert not violations, "imports across service boundaries:\n" + "\n".join(violations)


def test_the_import_check_finds_every_kind_of_crossing(tmp_path: Path) -> None:
    files = {
        "services/jobs/pai_jobs/shell.py": "import pai_jobs.protocol\nfrom pai_common import bus\n",
        "services/jobs/pai_jobs/bad.py": "from pai_orchestrator.core import Framework\n",
        "services/jobs/tests/test_x.py": "import pai_scheduler\n",
        "services/orchestrator/pai_orchestrator/dyn.py": "import importlib\n"
        "importlib.import_module('pai_jobs')\n",
        "services/orchestrator/pai_orchestrator/cli.py": "def f():\n    from pai_cli import up\n",
        "services/scheduler/pai_scheduler/__init__.py": "",
        "libs/common/pai_common/x.py": "from pai_scheduler import hived\n",
        "libs/common/pai_common/y.py": "import pai_cli.up\n",
        "libs/cli/pai_cli/z.py": "from pai_runtime import shell\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    (tmp_path / "services/runtime/pai_runtime").mkdir(parents=True)
    found = import_violations(tmp_path)
    assert found == [
        "libs/cli/pai_cli/z.py:1: cli imports the runtime service (pai_runtime)",
        "libs/common/pai_common/x.py:1: common imports the scheduler service (pai_scheduler)",
        "libs/common/pai_common/y.py:1: common imports the CLI (pai_cli)",
        "services/jobs/pai_jobs/bad.py:1: jobs imports the orchestrator service (pai_orchestrator)",
        "services/jobs/tests/test_x.py:1: jobs imports the scheduler service (pai_scheduler)",
        "services/orchestrator/pai_orchestrator/cli.py:2: orchestrator imports the CLI (pai_cli)",
        "services/orchestrator/pai_orchestrator/dyn.py:2: orchestrator imports the jobs service (pai_jobs)",
    ]


# ---- 2. the contract against the real subscriptions ------------------------------------------------------


def service_apps() -> dict[str, ServiceApp]:
    """Every service's app on the bus as its process builds it (registration only: nothing connects).

    A service without a bus shell (the portal, a client of the REST API) subscribes to nothing."""
    apps = {}
    for name in service_names():
        if not (SERVICES_DIR / name / f"pai_{name}" / "shell.py").exists():
            continue
        if name == "runtime":
            from pai_runtime.settings import RuntimeSettings
            from pai_runtime.shell import Agent

            apps[name] = Agent(RuntimeSettings(node_name="node-x")).app
        else:
            apps[name] = importlib.import_module(f"pai_{name}.shell").build_app()
    return apps


@pytest.fixture(scope="module")
def apps() -> dict[str, ServiceApp]:
    return service_apps()


def event_subscribers(apps: dict[str, ServiceApp]) -> dict[str, set[str]]:
    """Event type -> the services that consume it: durable consumers, and the gateway's core-NATS
    subscriptions (its identity cache drops entries on the events in INVALIDATING_EVENTS)."""
    from pai_gateway.identity import INVALIDATING_EVENTS

    subscribers: dict[str, set[str]] = defaultdict(set)
    for name, app in apps.items():
        for event_type in app._event_handlers:
            subscribers[event_type].add(name)
    for event in INVALIDATING_EVENTS:
        subscribers[event.TYPE].add("gateway")
    return subscribers


def test_every_event_is_consumed_by_exactly_the_services_the_contract_names(
    apps: dict[str, ServiceApp],
) -> None:
    subscribers = event_subscribers(apps)
    wrong = []
    for event in ALL_EVENTS:
        declared, real = set(event.CONSUMERS), subscribers.pop(event.TYPE, set())
        if declared != real:
            wrong.append(
                f"{event.TYPE} ({event.__name__}): the contract names {sorted(declared)},"
                f" subscribed by {sorted(real)}"
            )
    wrong += [f"{t}: subscribed by {sorted(s)} but not in the contract" for t, s in subscribers.items()]
    assert not wrong, "\n".join(wrong)
    # Each subscription is a real filter of the service's durable consumer on the events stream.
    assert event_subject("task.exited") in {event_subject(t) for t in apps["diagnosis"]._event_handlers}


def test_every_command_is_taken_by_its_consumer(apps: dict[str, ServiceApp]) -> None:
    for command in ALL_COMMANDS:
        owner = command.TYPE.split(".", 1)[0]
        assert owner == command.CONSUMER, (
            f"{command.TYPE} is addressed to {owner}, declared for {command.CONSUMER}"
        )
        filters = [f for _, f, _ in apps[command.CONSUMER]._command_consumers]
        assert any(f.startswith(f"{COMMAND_SUBJECT_PREFIX}.{owner}.") for f in filters), (
            command.TYPE,
            filters,
        )
        for name, app in apps.items():
            if name != command.CONSUMER:
                assert not app._command_consumers, f"{name} takes commands it is not declared for"


def test_every_rpc_is_served_by_the_service_that_owns_it(apps: dict[str, ServiceApp]) -> None:
    served: dict[str, str] = {}
    for name, app in apps.items():
        for handlers, target, *_ in app._rpc:
            for request in handlers:
                served[rpc_subject(request.SERVICE, request.ENDPOINT)] = name
                assert request.SERVICE == name, (
                    f"{name} answers {request.__name__}, owned by {request.SERVICE}"
                )
                assert target is None or name == "runtime", f"{name} serves per-target RPCs"
    missing = [
        f"{r.SERVICE}.{r.ENDPOINT} ({r.__name__})"
        for r in ALL_RPCS
        if rpc_subject(r.SERVICE, r.ENDPOINT) not in served
    ]
    assert not missing, "RPCs nobody serves: " + ", ".join(missing)
