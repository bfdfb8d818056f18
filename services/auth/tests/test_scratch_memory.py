"""argon2's scratch memory goes back to the system after each hash (pai_auth.scratch_memory): hashes in
worker threads, as logins are made, leave the process's resident memory where it was."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys, threading
from argon2 import PasswordHasher
from pai_auth import scratch_memory
if sys.argv[1] == "fixed":
    assert scratch_memory.unmap_large_blocks()
hasher = PasswordHasher(time_cost=1, memory_cost=19 * 1024, parallelism=1)
def rss_kib():
    return int(open("/proc/self/statm").read().split()[1]) * 4
hasher.hash("warm up")  # the first block is mapped whatever the threshold
before = rss_kib()
for _ in range(3):
    hasher.hash("at start")
    worker = threading.Thread(target=hasher.verify, args=(hasher.hash("x"), "x"))
    worker.start()
    worker.join()
print(rss_kib() - before)
"""


def test_argon2_scratch_memory_is_returned() -> None:
    def grown_kib(mode: str) -> int:
        argv = [sys.executable, "-c", PROBE, mode]
        return int(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)

    assert grown_kib("fixed") < 4 * 1024
    # The control: glibc's default keeps at least one 19 MiB block (this is what the module is for).
    assert grown_kib("default") > 15 * 1024
