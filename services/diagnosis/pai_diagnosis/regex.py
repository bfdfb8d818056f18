"""Log patterns compiled with RE2, so that matching time grows linearly with the log, whatever the pattern.

Python's ``re`` backtracks: a pattern such as ``tensorflow.*Error.*OOM.*`` costs quadratic time on a long
line full of "tensorflow". RE2 (the engine behind Go's ``regexp``, which OpenPAI's runtime used, so the
syntax and meaning are the same) has no backtracking at all; what it cannot do in linear time
(backreferences, lookaround) it refuses to compile. On top of that a pattern must stay small, which
bounds the automaton's size and memory.
"""

from __future__ import annotations

from typing import Protocol

import re2

MAX_PATTERN_CHARS = 1024
# RE2's compiled program size; the largest pattern of the shipped spec is far below it.
MAX_PROGRAM_SIZE = 5000
# Memory RE2 may use for one pattern's automata; beyond it RE2 falls back to a slower (still linear) engine.
MAX_MEM_BYTES = 8 << 20


class RegexError(ValueError):
    """A pattern that is not allowed: it does not compile under RE2, or it is too large."""


class Match(Protocol):
    def start(self) -> int: ...

    def end(self) -> int: ...


class Pattern(Protocol):
    @property
    def pattern(self) -> bytes: ...

    def search(self, text: bytes) -> Match | None: ...


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = MAX_MEM_BYTES
    # Logs are bytes; patterns are ASCII. Latin-1 makes each byte one character, so invalid UTF-8 in a
    # log is matched like anything else instead of upsetting the engine.
    options.encoding = re2.Options.Encoding.LATIN1
    options.never_capture = True
    return options


def compile_safe(pattern: str) -> Pattern:
    """Compile one spec pattern, or say precisely why it is refused."""
    if not pattern:
        raise RegexError("empty pattern")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise RegexError(f"pattern longer than {MAX_PATTERN_CHARS} characters")
    if not pattern.isascii():
        raise RegexError("pattern must be ASCII (use \\x{..} escapes for other bytes)")
    try:
        compiled = re2.compile(pattern.encode("ascii"), _options())
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise RegexError(f"not a valid RE2 pattern: {detail}") from exc
    if compiled.programsize > MAX_PROGRAM_SIZE:
        raise RegexError(
            f"pattern too complex (program size {compiled.programsize} > {MAX_PROGRAM_SIZE});"
            " use smaller repetition counts"
        )
    result: Pattern = compiled
    return result


class PatternSet:
    """Which of many patterns match somewhere in a text, found in one pass over it.

    Searching a 10 MB log once per pattern costs a pass per pattern; an RE2 set runs all of them in one
    automaton. RE2 gives up (and reports no match at all) if that automaton outgrows its memory; a last
    pattern that always matches, ``\\z``, tells a real "none matched" from giving up, and then the caller
    searches pattern by pattern as before.
    """

    MAX_MEM_BYTES = 64 << 20

    def __init__(self, patterns: list[Pattern]) -> None:
        options = _options()
        options.max_mem = self.MAX_MEM_BYTES
        self._set = re2.Set.SearchSet(options)
        self._index: dict[int, int] = {}
        for pattern in patterns:
            if id(pattern) not in self._index:
                self._index[id(pattern)] = self._set.Add(pattern.pattern)
        self._always = self._set.Add(rb"\z")
        self._set.Compile()

    def matching(self, text: bytes) -> PatternHits | None:
        """The patterns that match somewhere in ``text``; None when RE2 could not tell."""
        found = self._set.Match(text)
        if not found or self._always not in found:
            return None
        return PatternHits(frozenset(found), self._index)


class PatternHits:
    def __init__(self, found: frozenset[int], index: dict[int, int]) -> None:
        self._found = found
        self._index = index

    def may_match(self, pattern: Pattern) -> bool:
        where = self._index.get(id(pattern))
        return where is None or where in self._found
