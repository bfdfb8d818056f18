"""`pai vc ...` and `pai node ...`: what there is to run on."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import RenderableType
from rich.text import Text

from pai_cli.cli_common import (
    Format,
    OutputOption,
    cells,
    emit,
    make_client,
    new_app,
    new_table,
    reports_errors,
)
from pai_cli.models import VirtualCluster

vc_app = new_app("Virtual clusters: quotas and what is used of them.")
node_app = new_app("The cluster's nodes.")


def _gpus(values: dict[str, float]) -> str:
    return f"{values.get('gpu', values.get('GPUs', 0)):g}"


def _vc_table(vcs: dict[str, VirtualCluster]) -> RenderableType:
    rows = new_table("NAME", "GPUS USED", "GUARANTEED", "AVAILABLE", "TOTAL", "CPU USED", "CAPACITY %")
    for name, vc in vcs.items():
        rows.add_row(
            *cells(
                name,
                _gpus(vc.resources_used),
                _gpus(vc.resources_guaranteed),
                _gpus(vc.resources_available),
                _gpus(vc.resources_total),
                f"{vc.resources_used.get('cpu', 0):g}",
                f"{vc.capacity:g}",
            )
        )
    return rows


@vc_app.command("list")
@reports_errors
def vc_list(output: OutputOption = Format.table) -> None:
    """Every virtual cluster's GPUs: used, guaranteed, available."""
    with make_client() as client:
        vcs = client.virtual_clusters()
    emit(vcs, output, lambda: _vc_table(vcs))


@vc_app.command("get")
@reports_errors
def vc_get(
    name: Annotated[str, typer.Argument(help="Virtual cluster")], output: OutputOption = Format.table
) -> None:
    """One virtual cluster, with the SKU types it has."""
    with make_client() as client:
        vc = client.virtual_cluster(name)
        skus = client.sku_types(name)

    def table() -> RenderableType:
        sku_rows = new_table("SKU", "GPU", "CPU", "MEMORY MB")
        for sku, values in skus.items():
            sku_rows.add_row(*cells(sku, f"{values.gpu:g}", f"{values.cpu:g}", f"{values.memory:g}"))
        from rich.console import Group

        return Group(_vc_table({name: vc}), Text(""), sku_rows)

    emit({"virtualCluster": vc, "skuTypes": skus}, output, table)


@node_app.command("list")
@reports_errors
def node_list(output: OutputOption = Format.table) -> None:
    """The nodes: ready or not, schedulable or cordoned, GPUs."""
    with make_client() as client:
        nodes = client.nodes()

    def table() -> RenderableType:
        rows = new_table("NAME", "READY", "SCHEDULABLE", "ADDRESS", "GPUS", "CPU", "MEMORY")
        for node in nodes:
            ready = {True: "yes", False: "no", None: "unknown"}[node.ready]
            rows.add_row(
                *cells(
                    node.name,
                    ready,
                    "yes" if node.schedulable else "no (cordoned)",
                    node.address or "-",
                    node.resource("capacity", "nvidia.com/gpu") or "0",
                    node.resource("capacity", "cpu") or "-",
                    node.resource("capacity", "memory") or "-",
                )
            )
        return rows

    emit(nodes, output, table)


NodeName = Annotated[str, typer.Argument(help="Node name")]
Reason = Annotated[str, typer.Option("--reason", help="Why (kept with the cordon, shown in the node list)")]


def _set_schedulable(node: str, schedulable: bool, drain: bool, reason: str) -> None:
    with make_client() as client:
        answer = client.set_node_schedulable(node, schedulable, drain=drain, reason=reason)
    if schedulable:
        done = "takes new work again"
    elif drain:
        gangs = answer.get("runningGangs", 0) if answer.get("draining") else 0
        done = f"cordoned; {gangs} running gang(s) asked to stop, to be retried elsewhere"
    else:
        done = "cordoned: no new work goes there"
    typer.echo(f"node {node}: {done}")


@node_app.command("cordon")
@reports_errors
def node_cordon(node: NodeName, reason: Reason = "") -> None:
    """(admin) Place no new work on the node; what runs there stays."""
    _set_schedulable(node, False, False, reason)


@node_app.command("drain")
@reports_errors
def node_drain(node: NodeName, reason: Reason = "") -> None:
    """(admin) Cordon the node and stop its running jobs gracefully; they are retried elsewhere."""
    _set_schedulable(node, False, True, reason)


@node_app.command("uncordon")
@reports_errors
def node_uncordon(node: NodeName) -> None:
    """(admin) Let the node take new work again."""
    _set_schedulable(node, True, False, "")
