"""The ssh plugin's barrier: wait until every peer of the job answers on its ssh port.

Run by path with the standard library only (inside the task). ``--listen PORT`` keeps answering on this
task's ssh port for the rest of the task, for nodes without an sshd, so that peers' barriers see it;
``--peers host:port,...`` waits (polling every ``--poll`` seconds, at most ``--timeout`` seconds) until
each peer accepts a TCP connection, and exits 10 with OpenPAI's message when the time runs out.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

TIMEOUT_EXIT = 10  # OpenPAI's ssh barrier exit code; the exit spec maps it (with the message) to 249


def reachable(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_for(peers: list[tuple[str, int]], timeout_s: float, poll_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    waiting = list(peers)
    while True:
        waiting = [p for p in waiting if not reachable(*p)]
        if not waiting:
            return True
        if time.monotonic() >= deadline:
            print(f"waiting for {waiting}", file=sys.stderr)
            return False
        time.sleep(poll_s)


def listen(port: int) -> None:
    server = socket.create_server(("0.0.0.0", port), reuse_port=False)
    while True:
        conn, _ = server.accept()
        conn.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="barrier")
    parser.add_argument("--listen", type=int)
    parser.add_argument("--peers", default="")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--poll", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.listen:
        listen(args.listen)
        return 0
    peers = []
    for item in filter(None, args.peers.split(",")):
        host, _, port = item.rpartition(":")
        peers.append((host, int(port)))
    if wait_for(peers, args.timeout, args.poll):
        print("[openpai-runtime] ssh barrier passed")
        return 0
    print("SSH barrier reaches max retry count", file=sys.stderr)
    return TIMEOUT_EXIT


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
