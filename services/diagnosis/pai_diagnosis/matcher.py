"""The matcher: one task exit in, one diagnosis out. Pure, deterministic, bounded in time and size.

OpenPAI's rules, in OpenPAI's order:
1. exit code 0 is success, whatever else was reported;
2. what Kubernetes saw (pod and container reasons) is matched against the entries' pod patterns, first
   entry in file order wins (the framework controller's view: the container did not end on its own);
3. otherwise the exit code, the log tails and the GPU health are matched against the entries' runtime
   patterns, first entry in file order wins (the runtime's exit handler);
4. otherwise: a negative code the spec defines is that entry, any other negative code is -8000, a positive
   code is 255 (the task failed and nothing says why), or 256 above 255 (not a process exit code).
An entry matches when ANY of its patterns matches; a pattern matches when ALL of its given fields match.
Logs are searched as bytes, and only their last ``MAX_LOG_BYTES``; patterns are RE2 (linear time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pai_common.contract.types import FailureType
from pai_diagnosis.gpu import GpuHealth, read_gpu_health
from pai_diagnosis.regex import Pattern, PatternHits
from pai_diagnosis.spec import (
    SUCCESS_CODE,
    UNDEFINED_NEGATIVE_CODE,
    UNDEFINED_POSITIVE_CODE,
    UNKNOWN_USER_FAILURE_CODE,
    ContainerPattern,
    ExitSpec,
    GpuCondition,
    PodPattern,
    RuntimePattern,
    SpecEntry,
)

MAX_LOG_BYTES = 10 * 1024 * 1024
CONTEXT_BEFORE = 3
CONTEXT_AFTER = 6
MAX_LINE_CHARS = 512
MAX_CONTEXT_CHARS = 8000
# How far from the match to look for its line's ends; a longer line is cut there.
LINE_WINDOW = 4096
MAX_EXPLANATION_QUOTE = 160
DEFAULT_CONTAINER = "app"

MatchedBy = Literal["success", "pod", "runtime", "fallback"]


@dataclass(frozen=True)
class ContainerStatus:
    name: str = DEFAULT_CONTAINER
    reason: str | None = None
    message: str | None = None
    exit_code: int | None = None


@dataclass(frozen=True)
class PodStatus:
    reason: str | None = None
    message: str | None = None
    containers: tuple[ContainerStatus, ...] = ()


@dataclass(frozen=True)
class TaskEnd:
    """Everything known about how a task ended."""

    exit_code: int
    signal: int | None = None
    user_log: bytes | str = b""
    platform_log: bytes | str = b""
    pod: PodStatus | None = None
    gpu_health: Any = None


@dataclass(frozen=True)
class Diagnosis:
    entry: SpecEntry
    # The task's own exit code (a death by signal as 128 + signal); the entry's code is ``code``.
    exit_code: int
    failure_type: FailureType
    matched_by: MatchedBy
    matched_line: str | None
    matched_context: str | None
    evidence: str
    explanation: str
    suggestion: str

    @property
    def code(self) -> int:
        return self.entry.code

    @property
    def phrase(self) -> str:
        return self.entry.phrase

    @property
    def reaction(self) -> str:
        return str(self.entry.fields.get("reaction", ""))

    def summary(self) -> dict[str, Any]:
        """The one JSON object ``pai-diagnose`` prints."""
        f = self.entry.fields
        return {
            "code": self.entry.code,
            "name": self.entry.phrase,
            "type": f.get("type"),
            "behavior": f.get("behavior"),
            "reaction": f.get("reaction"),
            "failure_type": self.failure_type,
            "exit_code": self.exit_code,
            "matched": self.matched_line,
            "context": self.matched_context,
            "explanation": self.explanation,
            "suggestion": self.suggestion,
        }


# ---- the failure type the orchestrator's retry policy reads -------------------------------------------

_BY_BEHAVIOR: dict[str, FailureType] = {
    "TRANSIENT": "Transient",
    "TRANSIENT_CONFLICT": "TransientConflict",
    "PERMANENT": "Permanent",
    "UNKNOWN": "Unknown",
}
_BY_REACTION: dict[str, FailureType] = {
    "ALWAYS_RETRY": "Transient",
    "ALWAYS_BACKOFF_RETRY": "TransientConflict",
    "NEVER_RETRY": "Permanent",
    "RETRY_TO_MAX": "Unknown",
}


def failure_type_of(entry: SpecEntry) -> FailureType:
    """Succeeded for success; else the behaviour (TRANSIENT -> Transient...), else the reaction."""
    f = entry.fields
    if entry.code == SUCCESS_CODE or f.get("type") == "USER_SUCCESS":
        return "Succeeded"
    behavior = f.get("behavior")
    if behavior in _BY_BEHAVIOR:
        return _BY_BEHAVIOR[behavior]
    return _BY_REACTION.get(str(f.get("reaction")), "Unknown")


# ---- matching ---------------------------------------------------------------------------------------------


def normalized_exit_code(exit_code: int, signal: int | None) -> int:
    """A death by signal reads as a shell shows it (128 + signal): Python reports it as a negative code."""
    if signal is not None and exit_code < 0 and 0 < signal < 128:
        return 128 + signal
    return exit_code


def _tail(log: bytes | str) -> bytes:
    data = log.encode("utf-8", "replace") if isinstance(log, str) else log
    return data[-MAX_LOG_BYTES:]


def _text(value: str | None) -> bytes:
    return (value or "").encode("utf-8", "replace")[:LINE_WINDOW]


def _hit(pattern: Pattern | None, text: bytes) -> bool:
    return pattern is None or pattern.search(text) is not None


def _container_hit(p: ContainerPattern, c: ContainerStatus) -> bool:
    return (
        (p.exit_code is None or p.exit_code == c.exit_code)
        and _hit(p.name, _text(c.name))
        and _hit(p.reason, _text(c.reason))
        and _hit(p.message, _text(c.message))
    )


def _pod_hit(p: PodPattern, pod: PodStatus) -> bool:
    return (
        _hit(p.reason, _text(pod.reason))
        and _hit(p.message, _text(pod.message))
        and all(any(_container_hit(cp, c) for c in pod.containers) for cp in p.containers)
    )


def _gpu_hit(cond: GpuCondition, gpu: GpuHealth) -> str | None:
    """The evidence when the GPU condition holds, else None."""
    said = []
    if cond.double_ecc is not None:
        if gpu.double_ecc != cond.double_ecc:
            return None
        if gpu.double_ecc:
            said.append(", ".join(f"GPU {g}: uncorrectable ECC errors" for g in gpu.double_ecc_gpus))
    if cond.xids is not None:
        hits = [(g, x) for g, x in gpu.xid_by_gpu if x in cond.xids]
        if not hits:
            return None
        said.append(", ".join(f"GPU {g}: Xid {x}" for g, x in hits[:8]))
    return "; ".join(said) or "GPU health"


@dataclass(frozen=True)
class _RuntimeHit:
    evidence: str
    log: bytes | None = None
    start: int = 0
    end: int = 0


@dataclass(frozen=True)
class _Log:
    """A log and, when the one-pass set search worked, which patterns can match it at all."""

    data: bytes
    hits: PatternHits | None

    def search(self, pattern: Pattern) -> tuple[int, int] | None:
        if self.hits is not None and not self.hits.may_match(pattern):
            return None
        m = pattern.search(self.data)
        return None if m is None else (m.start(), m.end())


def _runtime_hit(
    p: RuntimePattern, code: int, user: _Log, platform: _Log, gpu: GpuHealth
) -> _RuntimeHit | None:
    # Cheap conditions first: most patterns fail on the exit code without reading a byte of log.
    if p.exit_code is not None and p.exit_code != code:
        return None
    hit = _RuntimeHit(f"exit code {code}")
    if p.gpu is not None:
        said = _gpu_hit(p.gpu, gpu)
        if said is None:
            return None
        hit = _RuntimeHit(said)
    # The user's log goes last so that its line is the one shown when both logs are matched.
    for pattern, log in ((p.platform_log, platform), (p.user_log, user)):
        if pattern is None:
            continue
        span = log.search(pattern)
        if span is None:
            return None
        hit = _RuntimeHit("the log", log.data, span[0], span[1])
    return hit


def _clip(line: bytes) -> str:
    text = line.decode("utf-8", "replace").rstrip("\r")
    return text if len(text) <= MAX_LINE_CHARS else text[: MAX_LINE_CHARS - 1] + "…"


def matched_text(log: bytes, start: int, end: int) -> tuple[str, str]:
    """The line the match starts on and a few lines around it, each line and the whole bounded.

    Every search looks at most ``LINE_WINDOW`` bytes away, so a log of one enormous line costs no more
    than a log of short ones; such a line is shown cut.
    """
    newline = ord("\n")
    window_lo = max(0, start - LINE_WINDOW)
    lo = log.rfind(b"\n", window_lo, start) + 1 or window_lo
    window_hi = min(len(log), start + LINE_WINDOW)
    hi = log.find(b"\n", start, window_hi)
    hi = hi if hi != -1 else window_hi
    line = _clip(log[lo:hi])
    before: list[str] = []
    cursor = lo
    while len(before) < CONTEXT_BEFORE and cursor > 0 and log[cursor - 1] == newline:
        window_lo = max(0, cursor - 1 - LINE_WINDOW)
        prev = log.rfind(b"\n", window_lo, cursor - 1) + 1 or window_lo
        before.insert(0, _clip(log[prev : cursor - 1]))
        cursor = prev
    after: list[str] = []
    cursor = hi
    while len(after) < CONTEXT_AFTER and cursor < len(log) and log[cursor] == newline:
        window_hi = min(len(log), cursor + 1 + LINE_WINDOW)
        nxt = log.find(b"\n", cursor + 1, window_hi)
        nxt = nxt if nxt != -1 else window_hi
        after.append(_clip(log[cursor + 1 : nxt]))
        cursor = nxt
    while after and not after[-1]:
        after.pop()
    context = "\n".join([*before, line, *after])
    if len(context) > MAX_CONTEXT_CHARS:
        context = context[: MAX_CONTEXT_CHARS - 1] + "…"
    return line, context


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _diagnosis(
    entry: SpecEntry,
    raw: int,
    by: MatchedBy,
    evidence: str,
    line: str | None = None,
    context: str | None = None,
) -> Diagnosis:
    reason = _one_line(entry.reason, 400) or entry.phrase
    said = _one_line(evidence, MAX_EXPLANATION_QUOTE)
    if by != "success" and not said.startswith("exit code"):
        said += f"; exit code {raw}"
    if line is not None:
        explanation = f'{reason} The log says: "{_one_line(line, MAX_EXPLANATION_QUOTE)}" (exit code {raw})'
    else:
        explanation = f"{reason} ({said})"
    return Diagnosis(
        entry=entry,
        exit_code=raw,
        failure_type=failure_type_of(entry),
        matched_by=by,
        matched_line=line,
        matched_context=context,
        evidence=evidence,
        explanation=explanation,
        suggestion="; ".join(entry.solution),
    )


def _fallback_entry(spec: ExitSpec, code: int) -> SpecEntry:
    wanted = code if code < 0 and spec.by_code(code) is not None else None
    if wanted is None:
        if code < 0:
            wanted = UNDEFINED_NEGATIVE_CODE
        elif code > UNKNOWN_USER_FAILURE_CODE:
            wanted = UNDEFINED_POSITIVE_CODE
        else:
            wanted = UNKNOWN_USER_FAILURE_CODE
    entry = spec.by_code(wanted)
    if entry is None:
        raise LookupError(f"the exit spec lacks the fallback code {wanted}")
    return entry


def lookup(spec: ExitSpec, code: int) -> SpecEntry:
    """The entry a bare code stands for (OpenPAI's generateExitSpec): itself, else -8000 or 256."""
    fallback = UNDEFINED_NEGATIVE_CODE if code < 0 else UNDEFINED_POSITIVE_CODE
    entry = spec.by_code(code) or spec.by_code(fallback)
    if entry is None:
        raise LookupError(f"the exit spec has neither {code} nor its fallback")
    return entry


def diagnose(spec: ExitSpec, end: TaskEnd) -> Diagnosis:
    code = normalized_exit_code(end.exit_code, end.signal)
    if code == SUCCESS_CODE:
        success = spec.by_code(SUCCESS_CODE)
        if success is None:
            raise LookupError("the exit spec lacks code 0")
        return _diagnosis(success, code, "success", "exit code 0")

    pod = end.pod
    if pod is not None:
        for entry in spec.entries:
            for pp in entry.pod_patterns:
                if _pod_hit(pp, pod):
                    said = [f"pod reason {pod.reason}"] if pod.reason else []
                    said += [
                        f"container {c.name}: {c.reason}" + (f" (exit {c.exit_code})" if c.exit_code else "")
                        for c in pod.containers
                        if c.reason
                    ]
                    return _diagnosis(entry, code, "pod", "; ".join(said) or "pod status")

    user_data, platform_data = _tail(end.user_log), _tail(end.platform_log)
    patterns = spec.log_patterns()
    user = _Log(user_data, patterns.matching(user_data))
    # The service offers one tail as both logs: one pass then answers for both.
    same = platform_data == user_data
    platform = user if same else _Log(platform_data, patterns.matching(platform_data))
    gpu = read_gpu_health(end.gpu_health)
    for entry in spec.entries:
        for rp in entry.runtime_patterns:
            hit = _runtime_hit(rp, code, user, platform, gpu)
            if hit is None:
                continue
            if hit.log is not None:
                line, context = matched_text(hit.log, hit.start, hit.end)
                return _diagnosis(entry, code, "runtime", hit.evidence, line, context)
            return _diagnosis(entry, code, "runtime", hit.evidence)

    evidence = f"exit code {code}" + (f", signal {end.signal}" if end.signal is not None else "")
    return _diagnosis(_fallback_entry(spec, code), code, "fallback", evidence)
