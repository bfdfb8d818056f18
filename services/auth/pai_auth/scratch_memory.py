"""argon2's scratch memory handed back to the system after each hash, not kept by the allocator.

Each argon2id hash allocates its whole memory cost (19 MiB by default) at once and frees it at the end.
glibc's malloc serves a block that large with mmap and unmaps it on free, but then raises its mmap
threshold to the freed block's size, so the next hash's block comes from the heap (of the thread that
hashes: logins hash in worker threads, each with its own arena) and stays resident after it is freed. The
auth service held 19 MiB more than the other services at ready (the hash made at start) and 39 MiB more
after the first login (`benchmarks/ready_footprint.py --jobs`). A fixed threshold (``mallopt``'s
``M_MMAP_THRESHOLD``, as the ``MALLOC_MMAP_THRESHOLD_`` variable would set it) keeps every such block
mapped on its own and unmapped when freed; allocations under the threshold (nearly everything Python does)
are served as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
THRESHOLD_BYTES = 1024 * 1024


def unmap_large_blocks(threshold_bytes: int = THRESHOLD_BYTES) -> bool:
    """Fix malloc's mmap threshold; False where the C library has no ``mallopt`` (musl) or refuses it."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.info("no mallopt in this C library: argon2's scratch memory stays with the allocator")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold_bytes))
