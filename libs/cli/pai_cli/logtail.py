"""Following a log through a route that only serves its tail. Pure.

Each poll fetches the last bytes of the log; what is new is the part after what the previous poll saw.
When the server says how long the whole log is (the ``X-PAI-Log-Size`` header of this platform), that is
exact: the log grew by that many bytes. Without it (another OpenPAI), the new part starts after the longest
overlap of the previous tail with the new one, which is right unless the log repeats itself exactly.
"""

from __future__ import annotations

SIZE_HEADER = "x-pai-log-size"


def overlap(before: str, after: str) -> int:
    """The length of the longest end of ``before`` that ``after`` starts with (KMP, linear time): ``after``
    is the pattern, ``before`` the text, and the match state at the text's end is the answer."""
    if not before or not after:
        return 0
    fail = [0] * len(after)
    k = 0
    for i in range(1, len(after)):
        while k and after[i] != after[k]:
            k = fail[k - 1]
        if after[i] == after[k]:
            k += 1
        fail[i] = k
    k = 0
    for char in before:
        while k and (k == len(after) or char != after[k]):
            k = fail[k - 1]
        if k < len(after) and char == after[k]:
            k += 1
    return k


class LogFollower:
    def __init__(self) -> None:
        self._tail: str | None = None
        self._size: int | None = None

    def reset(self) -> None:
        """A new log (the task was retried): the next tail is all new."""
        self._tail, self._size = None, None

    def update(self, tail: str, size: int | None = None) -> str:
        """What ``tail`` (the log's end now; ``size``: the whole log's length in bytes) adds."""
        before, before_size = self._tail, self._size
        self._tail, self._size = tail, size
        if before is None:
            return tail
        if size is not None and before_size is not None and size >= before_size:
            grown = size - before_size
            data = tail.encode("utf-8")
            if grown <= len(data):
                return data[len(data) - grown :].decode("utf-8", errors="replace")
            return f"[... {grown - len(data)} bytes not shown ...]\n{tail}"
        # No size, or the log shrank (old rotated files were dropped): match the tails.
        return tail[overlap(before, tail) :]
