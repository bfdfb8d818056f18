"""HiveD-grade cell allocator: a pure core (see README.md in this folder for what is done and what is not)."""

from pai_scheduler.hived.allocator import GroupState, HivedAllocator
from pai_scheduler.hived.config import (
    ClusterConfig,
    load_hived_config,
    parse_hived_config,
    parse_inventory_csv,
)
from pai_scheduler.hived.decisions import (
    Allocated,
    Decision,
    Downgraded,
    Lost,
    PodPlacement,
    Preempting,
    Queued,
    Rejected,
    Released,
)
from pai_scheduler.hived.errors import ConfigError, UnsupportedRequestError
from pai_scheduler.hived.requests import GangRequest, Member, gang_from_pods, parse_leaf_types
from pai_scheduler.hived.shares import Fragmentation, fragmentation

__all__ = [
    "Allocated",
    "ClusterConfig",
    "ConfigError",
    "Decision",
    "Downgraded",
    "Fragmentation",
    "GangRequest",
    "GroupState",
    "HivedAllocator",
    "Lost",
    "Member",
    "PodPlacement",
    "Preempting",
    "Queued",
    "Rejected",
    "Released",
    "UnsupportedRequestError",
    "fragmentation",
    "gang_from_pods",
    "load_hived_config",
    "parse_hived_config",
    "parse_inventory_csv",
    "parse_leaf_types",
]
