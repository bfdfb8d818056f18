"""Every simulator policy by name: the baselines (``sharing_baselines.py``, ``baselines.py``) and HiveD
(``hived_policy.py``).

Kept apart from ``policy.py`` (the protocol the policies implement), which the policy modules import: the
registry imports them, never the other way round.
"""

from __future__ import annotations

from dataclasses import replace

from pai_scheduler.sim.baselines import FirstFitPolicy, QuotaOnlyPolicy
from pai_scheduler.sim.cluster import SimCluster
from pai_scheduler.sim.hived_policy import HivedPolicy
from pai_scheduler.sim.policy import Policy, PolicyFactory
from pai_scheduler.sim.sharing_baselines import best_fit, first_fit


def _hived_plain(cluster: SimCluster) -> Policy:
    return HivedPolicy(cluster, mix_aware=False, name="hived-plain")


def _hived_no_borrow(cluster: SimCluster) -> Policy:
    vcs = tuple(replace(vc, borrowing_limit=0.0) for vc in cluster.config.virtual_clusters)
    return HivedPolicy(
        replace(cluster, config=replace(cluster.config, virtual_clusters=vcs)), name="hived-no-borrow"
    )


def _hived_strict(cluster: SimCluster) -> Policy:
    return HivedPolicy(cluster, protect_head_after_s=0.0, name="hived-strict")


def _hived_no_protect(cluster: SimCluster) -> Policy:
    return HivedPolicy(cluster, protect_head_after_s=None, name="hived-no-protect")


def policies() -> dict[str, PolicyFactory]:
    """Every policy this installation can run, by name, in the order a comparison shows them."""
    return {
        # Plain GPU-sharing schedulers (no VCs, no preemption).
        "first-fit": first_fit,
        "best-fit": best_fit,
        # The retired whole-GPU core (a share takes a whole GPU), and VC quotas as GPU counts in front of it.
        "whole-gpu": FirstFitPolicy,
        "quota-only": QuotaOnlyPolicy,
        # As the service runs it by default: backfill protection as a starvation guard (24 h), chains in the
        # order the recent request mix prefers (fragmentation-aware).
        "hived": HivedPolicy,
        # The same with chains in name order, as before the mix.
        "hived-plain": _hived_plain,
        # The same with every VC's borrowing limit 0: idle quota serves opportunistic jobs only.
        "hived-no-borrow": _hived_no_borrow,
        # Every guaranteed head protected at once: the backfill rule to the letter.
        "hived-strict": _hived_strict,
        # Plain HiveD: backfill always passes a waiting head.
        "hived-no-protect": _hived_no_protect,
    }


def make_policy(name: str, cluster: SimCluster) -> Policy:
    found = policies()
    if name not in found:
        raise ValueError(f"unknown policy {name!r}; available: {', '.join(found)}")
    return found[name](cluster)
