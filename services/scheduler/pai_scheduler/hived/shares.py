"""Fractional accelerators: how fragmented the GPU shares leave the cluster.

A leaf (one GPU) holds either one whole-leaf pod or any number of shares (``gpu_milli`` thousandths of its
compute and ``gpu_memory_mb`` of its memory) that add up to at most the device. Whole-leaf pods never land
on a leaf holding shares, so idle compute on a partly shared leaf is usable only by another share that fits
there. :func:`fragmentation` measures that waste for a "typical next request": by default a whole GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from pai_scheduler.hived.cells import MILLI_PER_LEAF, PhysicalCluster


@dataclass(frozen=True)
class Fragmentation:
    """Healthy, unreserved leaves seen by a next pod asking for ``milli``/``memory_mb`` of one leaf
    (``milli=1000, memory_mb=0``: a whole GPU)."""

    milli: int
    memory_mb: int
    free_leaves: int  # nothing on them: usable by any request
    shared_leaves: int  # holding at least one share
    stranded_leaves: int  # shared, with idle compute left, and still unusable by the request
    stranded_milli: int  # the idle milli-GPU on the stranded leaves

    @property
    def stranded_ratio(self) -> float:
        """Stranded leaves among the leaves with idle compute (free or partly shared); 0 when none."""
        idle = self.free_leaves + self.stranded_leaves
        return self.stranded_leaves / idle if idle else 0.0


def fragmentation(
    cluster: PhysicalCluster, milli: int = MILLI_PER_LEAF, memory_mb: int = 0, leaf_type: str | None = None
) -> Fragmentation:
    """Count the leaves a next pod of ``milli``/``memory_mb`` cannot use although they have idle compute.

    A whole-GPU request (``milli >= 1000``) can use only free leaves, so every partly shared leaf with idle
    compute is stranded; a share request can also use a shared leaf with enough milli and memory left
    (whatever VC or kind its sharers are: this is the cluster's view). Bad nodes, bad leaves and reserved
    leaves are left out; ``leaf_type`` restricts the count to one leaf type (without it, CPU leaves are
    left out).
    """
    whole = milli >= MILLI_PER_LEAF
    free = shared = stranded = stranded_milli = 0
    for chain, spec in cluster.chains.items():
        if leaf_type is not None and spec.leaf_type != leaf_type:
            continue
        if leaf_type is None and not cluster.config.is_gpu_leaf(spec.leaf_type):
            continue  # CPU leaves and FPGAs are no GPUs
        for top in cluster.tops[chain]:
            for node in top.node_cells:
                if not node.n_bad_nodes:  # n_free leaves out bad leaves already
                    free += node.n_free
        capacity = cluster.leaf_memory_mb[chain]
        for leaf in cluster.shared[chain]:
            if not leaf.healthy or leaf.reserver is not None:
                continue
            shared += 1
            idle = MILLI_PER_LEAF - leaf.share_milli
            if idle <= 0:
                continue
            fits = not whole and idle >= milli and capacity - leaf.share_memory >= memory_mb
            if not fits:
                stranded += 1
                stranded_milli += idle
    return Fragmentation(milli, memory_mb, free, shared, stranded, stranded_milli)
