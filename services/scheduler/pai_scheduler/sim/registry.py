"""Every simulator policy by name: the baselines (``baselines.py``) and HiveD (``hived_policy.py``).

Kept apart from ``policy.py`` (the protocol the policies implement), which the policy modules import: the
registry imports them, never the other way round.
"""

from __future__ import annotations

from pai_scheduler.sim.baselines import FirstFitPolicy, QuotaOnlyPolicy
from pai_scheduler.sim.cluster import SimCluster
from pai_scheduler.sim.hived_policy import HivedPolicy
from pai_scheduler.sim.policy import Policy, PolicyFactory


def _hived_strict(cluster: SimCluster) -> Policy:
    return HivedPolicy(cluster, protect_head_after_s=0.0)


def _hived_no_protect(cluster: SimCluster) -> Policy:
    return HivedPolicy(cluster, protect_head_after_s=None)


def policies() -> dict[str, PolicyFactory]:
    """Every policy this installation can run, by name, in the order a comparison shows them."""
    return {
        "first-fit": FirstFitPolicy,
        "quota-only": QuotaOnlyPolicy,
        # As the service runs it by default: backfill protection as a starvation guard (24 h).
        "hived": HivedPolicy,
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
