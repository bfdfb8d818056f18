"""The matcher: the corpus of real-looking failures, OpenPAI's rules one by one, the bounds on what it
returns, and that it never raises and stays linear on random and adversarial input."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import re2
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pai_diagnosis.gpu import read_gpu_health
from pai_diagnosis.matcher import (
    CONTEXT_BEFORE,
    MAX_CONTEXT_CHARS,
    MAX_LINE_CHARS,
    MAX_LOG_BYTES,
    ContainerStatus,
    PodStatus,
    TaskEnd,
    diagnose,
    lookup,
    matched_text,
    normalized_exit_code,
)
from pai_diagnosis.spec import build_spec, builtin_spec

CORPUS = Path(__file__).parent / "corpus"
CASES: list[dict[str, Any]] = yaml.safe_load((CORPUS / "cases.yaml").read_text())["cases"]
SPEC = builtin_spec()


def _end(case: dict[str, Any]) -> TaskEnd:
    pod = None
    if any(k in case for k in ("pod_reason", "container_reason", "container_message")):
        container = ContainerStatus(
            name=case.get("container_name", "app"),
            reason=case.get("container_reason"),
            message=case.get("container_message"),
            exit_code=case["exit_code"],
        )
        pod = PodStatus(reason=case.get("pod_reason"), containers=(container,))
    log = (CORPUS / case["log"]).read_bytes() if "log" in case else b""
    return TaskEnd(case["exit_code"], case.get("signal"), log, log, pod, case.get("gpu_health"))


# ---- the corpus -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[f"{c['expect']}-{c.get('log', '')}" for c in CASES])
def test_corpus_case_is_classified(case: dict[str, Any]) -> None:
    d = diagnose(SPEC, _end(case))
    assert d.code == case["expect"], (d.phrase, d.matched_line)
    assert d.explanation and "\n" not in d.explanation
    if d.matched_line is not None:
        # The quoted line is really in the log, and it is what made the match.
        assert d.matched_line in (CORPUS / case["log"]).read_text()
        assert d.matched_context is not None and d.matched_line in d.matched_context


def test_every_code_with_a_pattern_has_a_corpus_case() -> None:
    with_patterns = {e.code for e in SPEC.entries if e.runtime_patterns or e.pod_patterns}
    assert len(with_patterns) == 59
    assert with_patterns <= {c["expect"] for c in CASES}


def test_every_log_regex_of_the_new_codes_is_exercised_or_has_a_sample() -> None:
    # One line per log regex of this project's codes (the corpus covers one per code).
    samples = {
        300: [
            "torch.OutOfMemoryError: x",
            "RuntimeError: CUDA error: out of memory",
            "CUBLAS_STATUS_ALLOC_FAILED",
        ],
        301: ["Out of memory: Kill process 12 (python)", "oom-kill:constraint=CONSTRAINT_MEMCG"],
        302: ["RuntimeError: unable to write to file </torch_31_2>: No space left on device (28)"],
        303: ["aten/native/cuda/IndexKernel.cu:92: operator(): block: [1,0,0] Assertion `idx` failed."],
        305: ["NCCL WARN Net : Connection closed by remote peer, NCCL error", "ncclInvalidUsage: bad rank"],
        306: ["NCCL watchdog thread terminated with exception", "ProcessGroupNCCL: Timeout at NCCL work: 42"],
        320: ["NVRM: Xid (PCI:0000:3b:00): 48, pid=1, DBE (0x1)"],
        340: ["OSError: [Errno 122] Disk quota exceeded", "Error: ENOSPC: no space left"],
        341: [
            "curl: (6) Could not resolve host: pypi.org",
            "dial tcp: lookup registry on 10.0.0.2:53: no such host",
        ],
        342: ["curl: (7) Failed to connect to x port 443", "urlopen error [Errno 110] Connection timed out"],
    }
    for code, lines in samples.items():
        for line in lines:
            d = diagnose(SPEC, TaskEnd(1, user_log=f"step 1\n{line}\n"))
            assert d.code == code, (line, d.code)


# ---- OpenPAI's rules --------------------------------------------------------------------------------------


def test_success_wins_over_everything_else() -> None:
    d = diagnose(
        SPEC,
        TaskEnd(
            0,
            9,
            b"CUDA out of memory. Tried to allocate",
            pod=PodStatus(reason="Evicted"),
            gpu_health={"0": {"xid": 79}},
        ),
    )
    assert (d.code, d.failure_type, d.matched_by) == (0, "Succeeded", "success")


def test_pod_patterns_come_before_runtime_patterns() -> None:
    end = TaskEnd(
        137, user_log=b"Memory cgroup out of memory: Killed process 1", pod=PodStatus(reason="Evicted")
    )
    assert diagnose(SPEC, end).code == -1000
    assert diagnose(SPEC, TaskEnd(137, user_log=end.user_log)).code == 301


def test_first_entry_in_file_order_wins() -> None:
    # The init container's OOM (-1300) is listed before any container's OOM (-1200).
    init = PodStatus(containers=(ContainerStatus(name="init", reason="OOMKilled"),))
    app = PodStatus(containers=(ContainerStatus(name="app", reason="OOMKilled"),))
    assert diagnose(SPEC, TaskEnd(137, pod=init)).code == -1300
    assert diagnose(SPEC, TaskEnd(137, pod=app)).code == -1200
    # 229 (data) is listed before 231 (syntax): a log with both is 229.
    both = b"SyntaxError: invalid syntax\nFileNotFoundError: [Errno 2] No such file or directory: 'a'\n"
    assert diagnose(SPEC, TaskEnd(1, user_log=both)).code == 229
    # A bare signal exit code beats OpenPAI's log regexes (they come later in the file)...
    assert diagnose(SPEC, TaskEnd(139, user_log=b"Segmentation fault (core dumped)")).code == 139
    # ...but this project's evidence-backed codes sit before the signals.
    assert diagnose(SPEC, TaskEnd(134, 6, b"Watchdog caught collective operation timeout")).code == 306


def test_a_pattern_needs_all_its_fields() -> None:
    # 220 needs exit code 127 AND "command not found".
    assert diagnose(SPEC, TaskEnd(127, user_log=b"bash: foo: command not found")).code == 220
    assert diagnose(SPEC, TaskEnd(1, user_log=b"bash: foo: command not found")).code == 255
    assert diagnose(SPEC, TaskEnd(127, user_log=b"no such thing")).code == 255
    # 249 needs exit code 10 AND the runtime's line.
    assert diagnose(SPEC, TaskEnd(10, platform_log=b"SSH barrier reaches max retry count")).code == 249
    assert diagnose(SPEC, TaskEnd(11, platform_log=b"SSH barrier reaches max retry count")).code == 255
    # A bare "Killed" is OOM evidence only with SIGKILL's exit code.
    assert diagnose(SPEC, TaskEnd(137, user_log=b"Killed\n")).code == 301
    assert diagnose(SPEC, TaskEnd(1, user_log=b"Killed\n")).code == 255


def test_container_patterns_need_one_container_matching_every_field() -> None:
    two = PodStatus(
        containers=(
            ContainerStatus(name="a", reason="ContainerCannotRun", exit_code=1),
            ContainerStatus(name="b", reason="Error", exit_code=125),
        )
    )
    # No single container is ContainerCannotRun with exit 125: not -1201.
    assert diagnose(SPEC, TaskEnd(1, pod=two)).code == 255
    one = PodStatus(containers=(ContainerStatus(name="b", reason="ContainerCannotRun", exit_code=125),))
    assert diagnose(SPEC, TaskEnd(1, pod=one)).code == -1201


@pytest.mark.parametrize(
    ("exit_code", "signal", "expected"),
    [
        (-9, 9, 137),
        (137, 9, 137),
        (137, None, 137),
        (0, 9, 0),
        (1, 9, 1),
        (-15, 15, 143),
        (-9, None, -9),
        (-9, 0, -9),
        (-9, 200, -9),
    ],
)
def test_a_death_by_signal_reads_as_the_shell_shows_it(
    exit_code: int, signal: int | None, expected: int
) -> None:
    assert normalized_exit_code(exit_code, signal) == expected


@pytest.mark.parametrize(
    ("exit_code", "expected"),
    [
        (1, 255),
        (2, 255),
        (255, 255),
        (256, 256),
        (70000, 256),
        (-100, -100),
        (-1100, -1100),
        (-3, -8000),
        (-99999, -8000),
    ],
)
def test_fallbacks(exit_code: int, expected: int) -> None:
    d = diagnose(SPEC, TaskEnd(exit_code, user_log=b"nothing to see\n"))
    assert (d.code, d.matched_by, d.exit_code, d.matched_line) == (expected, "fallback", exit_code, None)
    assert f"exit code {exit_code}" in d.explanation


def test_lookup_is_openpai_generate_exit_spec() -> None:
    assert lookup(SPEC, 251).phrase == "JobGangAllocationTimeout"
    assert lookup(SPEC, -7).code == -8000
    assert lookup(SPEC, 17).code == 256


def test_the_raw_exit_code_is_kept_and_the_entry_fields_are_openpais_shape() -> None:
    d = diagnose(SPEC, TaskEnd(1, user_log=b"ModuleNotFoundError: No module named 'x'\n"))
    assert (d.exit_code, d.code, d.reaction, d.failure_type) == (1, 304, "NEVER_RETRY", "Permanent")
    view = d.entry.api_view()
    assert set(view) == {
        "code",
        "phrase",
        "issuer",
        "causer",
        "type",
        "stage",
        "behavior",
        "reaction",
        "reason",
        "repro",
        "solution",
    }
    summary = d.summary()
    for key in ("code", "name", "type", "behavior", "reaction", "matched", "explanation", "suggestion"):
        assert key in summary
    assert summary["matched"] == "ModuleNotFoundError: No module named 'x'"


# ---- GPU health -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("report", "double_ecc", "xids"),
    [
        (None, False, set()),
        ("not a dict", False, set()),
        ({}, False, set()),
        ({"0": {"xid": 79}}, False, {79}),
        ({"0": {"xids": [48, "63", "x", None, [1]]}}, False, {48, 63}),
        ({"0": {"xid_errors": {"94": 2}}}, False, {94}),
        ({"xid": [79], "ecc_double": 0}, False, {79}),
        ({"1": {"ecc": {"double": 3}}}, True, set()),
        ({"1": {"ECC_DOUBLE": "2"}}, True, set()),
        ({"1": {"nvidiaDoubleEccError": True}}, True, set()),
        ({"2": {"ecc_uncorrected": 1}}, True, set()),
        ({"2": {"ecc_errors": {"uncorrected": 4}}}, True, set()),
        ({"1": {"ecc_double": float("nan")}}, False, set()),
        ({"1": {"ecc_double": True, "xid": True}}, True, set()),
        ({"0": 5, "1": {"last_xid": 13}}, False, {13}),
    ],
)
def test_gpu_health_is_read_defensively(report: Any, double_ecc: bool, xids: set[int]) -> None:
    health = read_gpu_health(report)
    assert (health.double_ecc, set(health.xids)) == (double_ecc, xids)


def test_only_hardware_xids_count() -> None:
    # Xid 13 and 31 are usually the program's own fault (an illegal access in a kernel).
    assert diagnose(SPEC, TaskEnd(1, gpu_health={"0": {"xid": [13, 31]}})).code == 255
    d = diagnose(SPEC, TaskEnd(1, gpu_health={"0": {"xid": [13]}, "2": {"xid": [79]}}))
    assert d.code == 320 and "GPU 2: Xid 79" in d.explanation


# ---- what is returned is bounded --------------------------------------------------------------------------


def test_the_matched_line_has_context_and_bounds() -> None:
    lines = [f"line {i}" for i in range(20)]
    lines[10] = "ModuleNotFoundError: No module named 'x'"
    d = diagnose(SPEC, TaskEnd(1, user_log="\n".join(lines)))
    assert d.matched_line == lines[10]
    assert d.matched_context is not None
    context = d.matched_context.split("\n")
    assert context[: CONTEXT_BEFORE + 1] == lines[10 - CONTEXT_BEFORE : 11]
    assert len(context) <= 10


def test_a_huge_line_is_cut() -> None:
    log = b"x" * 200_000 + b" No space left on device " + b"y" * 200_000
    d = diagnose(SPEC, TaskEnd(1, user_log=log))
    assert d.code == 340
    assert d.matched_line is not None and len(d.matched_line) <= MAX_LINE_CHARS
    assert d.matched_context is not None and len(d.matched_context) <= MAX_CONTEXT_CHARS


def test_only_the_last_10_mb_of_a_log_count() -> None:
    early = b"ModuleNotFoundError: No module named 'old'\n"
    log = early + b"." * MAX_LOG_BYTES
    assert diagnose(SPEC, TaskEnd(1, user_log=log)).code == 255
    assert diagnose(SPEC, TaskEnd(1, user_log=log[-MAX_LOG_BYTES:] + early)).code == 304


@given(st.binary(max_size=3000), st.integers(0, 3000), st.integers(0, 3000))
def test_matched_text_never_raises_and_stays_bounded(log: bytes, a: int, b: int) -> None:
    start, end = sorted((min(a, len(log)), min(b, len(log))))
    line, context = matched_text(log, start, end)
    assert len(line) <= MAX_LINE_CHARS and len(context) <= MAX_CONTEXT_CHARS
    assert line in context


# ---- never raises, always linear --------------------------------------------------------------------------

GPU = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
LOG = st.one_of(
    st.binary(max_size=4000),
    st.text(max_size=2000),
    st.lists(
        st.sampled_from(
            [
                "Killed",
                "CUDA out of memory",
                "NCCL error in:",
                "Xid (PCI:0): 79",
                "\n",
                "tensorflow",
                "ResourceExhaustedError",
                "OOM",
                "importerror:",
                "(",
                "[",
                "\\",
                " ",
                "\x00",
                "\u00e9",
            ]
        ),
        max_size=300,
    ).map("".join),
)
POD = st.none() | st.builds(
    PodStatus,
    reason=st.none() | st.text(max_size=30),
    message=st.none() | st.text(max_size=60),
    containers=st.lists(
        st.builds(
            ContainerStatus,
            name=st.text(max_size=10),
            reason=st.none()
            | st.sampled_from(["OOMKilled", "ContainerCannotRun", "Error"])
            | st.text(max_size=10),
            message=st.none() | st.text(max_size=40),
            exit_code=st.none() | st.integers(-300, 300),
        ),
        max_size=3,
    ).map(tuple),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(-(2**40), 2**40) | st.sampled_from([0, 1, 10, 127, 128, 134, 137, 139, 143, -1, -9]),
    st.none() | st.integers(-5, 300),
    LOG,
    LOG,
    POD,
    GPU,
)
def test_the_matcher_never_raises(
    exit_code: int, signal: int | None, user: Any, platform: Any, pod: PodStatus | None, gpu: Any
) -> None:
    d = diagnose(SPEC, TaskEnd(exit_code, signal, user, platform, pod, gpu))
    assert SPEC.by_code(d.code) is d.entry
    assert d.failure_type in ("Succeeded", "Transient", "TransientConflict", "Permanent", "Unknown")
    assert d.explanation and "\n" not in d.explanation
    assert d.matched_context is None or len(d.matched_context) <= MAX_CONTEXT_CHARS


def _all_patterns() -> list[Any]:
    found = []
    for e in SPEC.entries:
        for rp in e.runtime_patterns:
            found += [p for p in (rp.user_log, rp.platform_log) if p is not None]
        for pp in e.pod_patterns:
            found += [p for p in (pp.reason, pp.message) if p is not None]
            for c in pp.containers:
                found += [p for p in (c.name, c.reason, c.message) if p is not None]
    return found


def test_every_pattern_is_compiled_by_re2() -> None:
    # The structural guarantee: RE2 runs in time linear in the input, whatever the pattern; the patterns it
    # could not run that way (backreferences, lookaround) it refuses to compile.
    patterns = _all_patterns()
    assert len(patterns) > 100
    assert all(type(p) is type(re2.compile(b"x")) for p in patterns)


ADVERSARIAL = {
    # Inputs built to make a backtracking engine explode on the spec's ".*"-heavy patterns.
    "repeated prefix": b"tensorflow " * 10_000,
    "near misses": b"tensorflow ResourceExhaustedError " * 3_000,
    "one long line": b"a" * 100_000,
    "many newlines": b"\n" * 100_000,
    "nested parens": b"(" * 50_000 + b")" * 50_000,
    "almost oom": b"Out of memory: Kil" * 5_000,
    "almost nccl": b"ProcessGroupNCCL" + b" x" * 50_000,
    "almost assert": b".cu:1: " + b"Assertion " * 10_000,
    "binary": bytes(range(256)) * 400,
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_100kb_inputs_finish(name: str) -> None:
    text = ADVERSARIAL[name]
    assert len(text) >= 90_000
    started = time.perf_counter()
    for pattern in _all_patterns():
        pattern.search(text)
    diagnose(SPEC, TaskEnd(1, user_log=text, platform_log=text))
    # A generous bound: RE2 takes milliseconds here; a backtracking engine would take hours on some of
    # these. The bound only catches a catastrophe, it does not measure speed.
    assert time.perf_counter() - started < 30


def test_an_admin_pattern_that_backtracks_in_python_is_linear_here() -> None:
    doc = dict(SPEC.document)
    doc["spec"] = [
        *SPEC.document["spec"],
        {
            "code": 499,
            "phrase": "Evil",
            "pattern": {
                "runtimeContainerPatterns": [{"userLogRegex": "(a+)+$"}, {"userLogRegex": "(x|x)*y"}]
            },
        },
    ]
    spec = build_spec(doc)
    started = time.perf_counter()
    d = diagnose(spec, TaskEnd(1, user_log=b"a" * 100_000 + b"!" + b"x" * 100_000))
    assert d.code == 255
    assert time.perf_counter() - started < 30


# ---- the one-pass set search agrees with searching pattern by pattern --------------------------------------

FRAGMENTS = [p.read_bytes() for p in sorted(CORPUS.glob("*.log"))]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS) | st.binary(max_size=200), max_size=6).map(b"".join))
def test_the_set_search_never_misses_a_pattern(text: bytes) -> None:
    hits = SPEC.log_patterns().matching(text)
    assert hits is not None
    for pattern in _all_log_patterns():
        if pattern.search(text) is not None:
            assert hits.may_match(pattern), pattern.pattern


def _all_log_patterns() -> list[Any]:
    return [p for e in SPEC.entries for rp in e.runtime_patterns for p in (rp.user_log, rp.platform_log) if p]


def test_when_the_set_search_gives_up_each_pattern_is_searched() -> None:
    from pai_diagnosis.matcher import _Log

    log = (CORPUS / "oom_torch.log").read_bytes()
    pattern = next(p for p in _all_log_patterns() if b"Tried to allocate" in p.pattern)
    assert _Log(log, None).search(pattern) is not None
    other = next(p for p in _all_log_patterns() if b"ENOSPC" in p.pattern)
    hits = SPEC.log_patterns().matching(log)
    assert hits is not None and not hits.may_match(other) and hits.may_match(pattern)
    assert _Log(log, hits).search(other) is None


# ---- user code that cannot succeed on a retry, as the real interpreter reports it -----------------------

_BROKEN_PROGRAMS = [
    # (files of the job, the command, the code, what the log must show)
    ({"train.py": "x = (1,\n"}, ["python", "train.py"], 307, "was never closed"),
    ({"train.py": "for i in range(3)\n    print(i)\n"}, ["python", "train.py"], 307, "expected ':'"),
    ({"train.py": "print 'loss'\n"}, ["python", "train.py"], 307, "SyntaxError"),
    ({"train.py": "def f():\nreturn 1\n"}, ["python", "train.py"], 307, "IndentationError"),
    ({"train.py": "if True:\n\tx = 1\n        y = 2\n"}, ["python", "train.py"], 307, "TabError"),
    # OpenPAI's own ContainerSyntaxError keeps the plain "invalid syntax" (first entry in file order wins).
    ({"train.py": "x = = 1\n"}, ["python", "train.py"], 231, "invalid syntax"),
    # The error is in a module of the job's own that the script imports.
    (
        {"main.py": "import helper\n", "helper.py": "def f()\n  pass\n"},
        ["python", "main.py"],
        307,
        "helper.py",
    ),
    # The job's own package is not on the path (run from elsewhere).
    (
        {"scripts/run.py": "import mypkg.data\n", "mypkg/__init__.py": ""},
        ["python", "scripts/run.py"],
        304,
        "mypkg",
    ),
    ({"main.py": "from os import not_a_name\n"}, ["python", "main.py"], 232, "cannot import name"),
    ({}, ["python", "tarin.py"], 308, "can't open file"),
    ({}, ["bash", "-c", "./run_experiment.sh"], 308, "No such file or directory"),
]


@pytest.mark.parametrize(("files", "argv", "code", "shown"), _BROKEN_PROGRAMS)
def test_broken_user_code_is_a_permanent_failure_with_a_fix(
    tmp_path: Path, files: dict[str, str], argv: list[str], code: int, shown: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    argv = [sys.executable if a == "python" else a for a in argv]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, timeout=60)
    log = done.stdout + done.stderr
    assert done.returncode != 0 and shown.encode() in log, log
    d = diagnose(SPEC, TaskEnd(done.returncode, user_log=b"epoch 0 starting\n" + log))
    assert d.code == code, (log, d.code, d.phrase)
    assert (d.failure_type, d.reaction) == ("Permanent", "NEVER_RETRY")
    assert d.matched_line and d.matched_line in log.decode()
    assert d.explanation and d.suggestion


def test_a_program_that_mentions_such_errors_is_not_taken_for_them() -> None:
    log = b"config check: SyntaxError: unexpected token in formula (row 12 skipped)\ntraining failed\n"
    assert diagnose(SPEC, TaskEnd(1, user_log=log)).code == 255
    missing_config = b"note: can't open file 'optional.cfg': [Errno 2] No such file or directory\n"
    assert diagnose(SPEC, TaskEnd(1, user_log=missing_config)).code == 255  # not the interpreter's exit 2
