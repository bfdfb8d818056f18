"""The exit spec file: OpenPAI's facts kept, the fixes and additions in place, and every way an uploaded
spec is refused before it can take effect."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from pai_common.errors import InvalidParametersError
from pai_diagnosis.matcher import failure_type_of
from pai_diagnosis.regex import MAX_PATTERN_CHARS, RegexError, compile_safe
from pai_diagnosis.spec import (
    BUILTIN_LOADER,
    REQUIRED_CODES,
    SCHEMA_FILE,
    SPEC_FILE,
    build_spec,
    builtin_spec,
    overlay,
    packaged_text,
    parse_document,
    parse_spec,
)

REPO = Path(__file__).resolve().parents[3]
PROTO = REPO / "proto" / "exit-spec"

# OpenPAI's 62 codes: code, phrase, issuer, causer, type, stage, behavior, reaction.
OPENPAI = [
    (
        0,
        "Succeeded",
        "USER_CONTAINER",
        "USER_CONTAINER",
        "USER_SUCCESS",
        "COMPLETING",
        "UNKNOWN",
        "NEVER_RETRY",
    ),
    (
        -100,
        "ConfigMapExternalDeleted",
        "PAI_FC",
        "PAI_UNKNOWN",
        "PLATFORM_FAILURE",
        "UNKNOWN",
        "TRANSIENT",
        "ALWAYS_RETRY",
    ),
    (
        -101,
        "PodExternalDeleted",
        "PAI_FC",
        "PAI_UNKNOWN",
        "PLATFORM_FAILURE",
        "UNKNOWN",
        "TRANSIENT",
        "ALWAYS_RETRY",
    ),
    (
        -110,
        "ConfigMapLocalCacheCreationTimeout",
        "PAI_FC",
        "PAI_UNKNOWN",
        "PLATFORM_FAILURE",
        "LAUNCHING",
        "TRANSIENT",
        "ALWAYS_RETRY",
    ),
    (
        -111,
        "PodLocalCacheCreationTimeout",
        "PAI_FC",
        "PAI_UNKNOWN",
        "PLATFORM_FAILURE",
        "LAUNCHING",
        "TRANSIENT",
        "ALWAYS_RETRY",
    ),
    (
        -120,
        "PodCreationTransientError",
        "PAI_FC",
        "PAI_UNKNOWN",
        "PLATFORM_FAILURE",
        "LAUNCHING",
        "TRANSIENT",
        "ALWAYS_RETRY",
    ),
    (
        -200,
        "PodCreationPermanentError",
        "PAI_FC",
        "USER_SUBMISSION",
        "USER_FAILURE",
        "SUBMITTING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        -210,
        "StopFrameworkRequested",
        "PAI_FC",
        "USER_STOP",
        "USER_STOP",
        "UNKNOWN",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        -220,
        "FrameworkAttemptCompletion",
        "PAI_FC",
        "USER_STOP",
        "USER_STOP",
        "UNKNOWN",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        -230,
        "DeleteTaskRequested",
        "PAI_FC",
        "USER_SCALEDOWN",
        "USER_STOP",
        "UNKNOWN",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        -300,
        "PodFailedWithoutFailedContainer",
        "PAI_FC",
        "UNKNOWN",
        "UNKNOWN_FAILURE",
        "LAUNCHING",
        "UNKNOWN",
        "RETRY_TO_MAX",
    ),
    (
        -310,
        "PodCreationUnknownError",
        "PAI_FC",
        "UNKNOWN",
        "UNKNOWN_FAILURE",
        "LAUNCHING",
        "UNKNOWN",
        "RETRY_TO_MAX",
    ),
    (-1000, "PodEvicted", "PAI_K8S", "PAI_K8S", "PLATFORM_FAILURE", "RUNNING", "TRANSIENT", "ALWAYS_RETRY"),
    (-1001, "PodNodeLost", "PAI_K8S", "PAI_K8S", "PLATFORM_FAILURE", "RUNNING", "TRANSIENT", "ALWAYS_RETRY"),
    (
        -1002,
        "PodScheduledToInsufficientResourceNode",
        "PAI_K8S",
        "PAI_K8S",
        "PLATFORM_FAILURE",
        "LAUNCHING",
        "TRANSIENT",
        "ALWAYS_RETRY",
    ),
    (
        -1003,
        "PodPreemptedForCriticalPod",
        "PAI_K8S",
        "PAI_K8S",
        "PLATFORM_FAILURE",
        "RUNNING",
        "TRANSIENT",
        "ALWAYS_RETRY",
    ),
    (
        -1004,
        "PodDeadlineExceeded",
        "PAI_K8S",
        "USER_STOP",
        "USER_STOP",
        "RUNNING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        -1005,
        "PodNodeAdmissionForbidden",
        "PAI_K8S",
        "USER_SUBMISSION",
        "USER_FAILURE",
        "LAUNCHING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        -1006,
        "PodNodeAdmissionUnexpectedError",
        "PAI_K8S",
        "PAI_K8S",
        "PLATFORM_FAILURE",
        "LAUNCHING",
        "TRANSIENT",
        "ALWAYS_RETRY",
    ),
    (
        -1100,
        "CreateFrameworkPermanentFailed",
        "PAI_DB_CONTROLLER",
        "USER_SUBMISSION",
        "USER_FAILURE",
        "SUBMITTING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        -1300,
        "InitContainerDockerOOMKilled",
        "PAI_DOCKER",
        "PAI_RUNTIME",
        "PLATFORM_FAILURE",
        "LAUNCHING",
        "TRANSIENT",
        "ALWAYS_RETRY",
    ),
    (
        -1200,
        "UserContainerDockerOOMKilled",
        "PAI_DOCKER",
        "USER_CONTAINER",
        "USER_FAILURE",
        "RUNNING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        -1201,
        "ContainerDockerCreationError",
        "PAI_DOCKER",
        "UNKNOWN",
        "UNKNOWN_FAILURE",
        "LAUNCHING",
        "UNKNOWN",
        "RETRY_TO_MAX",
    ),
    (
        -1202,
        "ContainerDockerStartCmdPermissionDenied",
        "PAI_DOCKER",
        "PAI_RUNTIME",
        "PLATFORM_FAILURE",
        "LAUNCHING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        -1203,
        "ContainerDockerStartCmdNotFound",
        "PAI_DOCKER",
        "PAI_RUNTIME",
        "PLATFORM_FAILURE",
        "LAUNCHING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        -1204,
        "ContainerDockerStartUnknownError",
        "PAI_DOCKER",
        "UNKNOWN",
        "UNKNOWN_FAILURE",
        "LAUNCHING",
        "UNKNOWN",
        "RETRY_TO_MAX",
    ),
    (
        -1205,
        "ContainerGpuDeviceNotFoundError",
        "PAI_DOCKER",
        "PAI_HW",
        "PLATFORM_FAILURE",
        "LAUNCHING",
        "TRANSIENT",
        "ALWAYS_RETRY",
    ),
    (
        128,
        "ContainerMayFailDueToGpuDeviceEccError",
        "USER_CONTAINER",
        "PAI_HW",
        "PLATFORM_FAILURE",
        "RUNNING",
        "UNKNOWN",
        "RETRY_TO_MAX",
    ),
    (
        130,
        "ContainerSigIntReceived",
        "PAI_OS",
        "PAI_OS",
        "PLATFORM_FAILURE",
        "RUNNING",
        "TRANSIENT",
        "ALWAYS_RETRY",
    ),
    (
        131,
        "ContainerSigQuitReceived",
        "PAI_OS",
        "PAI_OS",
        "PLATFORM_FAILURE",
        "RUNNING",
        "TRANSIENT",
        "ALWAYS_RETRY",
    ),
    (
        132,
        "ContainerSigIllReceived",
        "USER_CONTAINER",
        "USER_CONTAINER",
        "USER_FAILURE",
        "RUNNING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        134,
        "ContainerSigAbrtReceived",
        "USER_CONTAINER",
        "UNKNOWN",
        "UNKNOWN_FAILURE",
        "RUNNING",
        "UNKNOWN",
        "RETRY_TO_MAX",
    ),
    (
        135,
        "ContainerSigBusReceived",
        "USER_CONTAINER",
        "USER_CONTAINER",
        "USER_FAILURE",
        "RUNNING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        136,
        "ContainerSigFpeReceived",
        "USER_CONTAINER",
        "USER_CONTAINER",
        "USER_FAILURE",
        "RUNNING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        137,
        "ContainerSigKillReceived",
        "PAI_OS",
        "PAI_OS",
        "PLATFORM_FAILURE",
        "RUNNING",
        "TRANSIENT",
        "ALWAYS_RETRY",
    ),
    (
        139,
        "ContainerSigSegvReceived",
        "USER_CONTAINER",
        "UNKNOWN",
        "UNKNOWN_FAILURE",
        "RUNNING",
        "UNKNOWN",
        "RETRY_TO_MAX",
    ),
    (
        141,
        "ContainerSigPipeReceived",
        "USER_CONTAINER",
        "USER_CONTAINER",
        "USER_FAILURE",
        "RUNNING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        143,
        "ContainerSigTermReceived",
        "PAI_OS",
        "PAI_OS",
        "PLATFORM_FAILURE",
        "RUNNING",
        "TRANSIENT",
        "ALWAYS_RETRY",
    ),
    (
        220,
        "UserCommandExitWithError",
        "USER_CONTAINER",
        "USER_CONTAINER",
        "USER_FAILURE",
        "RUNNING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        221,
        "ContainerTensorflowOOMKilled",
        "PAI_RUNTIME",
        "USER_CONTAINER",
        "USER_FAILURE",
        "RUNNING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        222,
        "ContainerMPISegvFault",
        "PAI_RUNTIME",
        "USER_CONTAINER",
        "USER_FAILURE",
        "RUNNING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        223,
        "ContainerCudaUncorrectableECCError",
        "PAI_RUNTIME",
        "PAI_HW",
        "PLATFORM_FAILURE",
        "RUNNING",
        "TRANSIENT",
        "ALWAYS_RETRY",
    ),
    (
        224,
        "ContainerCudaVersionMismatch",
        "PAI_RUNTIME",
        "USER_CONTAINER",
        "USER_FAILURE",
        "RUNNING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        225,
        "ContainerCudaDnnVersionMismatch",
        "PAI_RUNTIME",
        "USER_CONTAINER",
        "USER_FAILURE",
        "RUNNING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        226,
        "ContainerCudaOOMKilled",
        "PAI_RUNTIME",
        "USER_CONTAINER",
        "USER_FAILURE",
        "RUNNING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        228,
        "ContainerIncorrectParameterError",
        "PAI_RUNTIME",
        "USER_CONTAINER",
        "USER_FAILURE",
        "RUNNING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        229,
        "ContainerIncorrectDataModelError",
        "PAI_RUNTIME",
        "USER_CONTAINER",
        "USER_FAILURE",
        "RUNNING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        230,
        "ContainerInvalidSavePath",
        "PAI_RUNTIME",
        "USER_CONTAINER",
        "USER_FAILURE",
        "RUNNING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        231,
        "ContainerSyntaxError",
        "PAI_RUNTIME",
        "USER_CONTAINER",
        "USER_FAILURE",
        "RUNNING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        232,
        "ContainerImportError",
        "PAI_RUNTIME",
        "USER_CONTAINER",
        "USER_FAILURE",
        "RUNNING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        233,
        "ContainerIndexOutOfRange",
        "PAI_RUNTIME",
        "USER_CONTAINER",
        "USER_FAILURE",
        "RUNNING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        234,
        "ContainerSigvFault",
        "PAI_RUNTIME",
        "USER_CONTAINER",
        "USER_FAILURE",
        "RUNNING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        235,
        "ContainerEngineCoreDump",
        "PAI_RUNTIME",
        "USER_CONTAINER",
        "USER_FAILURE",
        "RUNNING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        249,
        "PAIRuntimeSSHBarrierTimeout",
        "PAI_RUNTIME",
        "PAI_RUNTIME",
        "PLATFORM_FAILURE",
        "RUNNING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        250,
        "FrameworkBarrierTransientFailed",
        "PAI_RUNTIME",
        "PAI_RUNTIME",
        "PLATFORM_FAILURE",
        "LAUNCHING",
        "TRANSIENT",
        "ALWAYS_RETRY",
    ),
    (
        251,
        "JobGangAllocationTimeout",
        "PAI_RUNTIME",
        "RESOURCE_ALLOCATION_TIMEOUT",
        "RESOURCE_ALLOCATION_TIMEOUT",
        "ALLOCATING",
        "TRANSIENT_CONFLICT",
        "ALWAYS_BACKOFF_RETRY",
    ),
    (
        252,
        "FrameworkBarrierPermanentFailed",
        "PAI_RUNTIME",
        "PAI_RUNTIME",
        "PLATFORM_FAILURE",
        "LAUNCHING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        253,
        "ContainerPortConflict",
        "PAI_RUNTIME",
        "PAI_RUNTIME",
        "PLATFORM_FAILURE",
        "LAUNCHING",
        "TRANSIENT",
        "ALWAYS_RETRY",
    ),
    (
        254,
        "ContainerImageNotExists",
        "PAI_RUNTIME",
        "PAI_RUNTIME",
        "USER_FAILURE",
        "LAUNCHING",
        "PERMANENT",
        "NEVER_RETRY",
    ),
    (
        255,
        "PAIRuntimeUnknownFailed",
        "PAI_RUNTIME",
        "UNKNOWN",
        "UNKNOWN_FAILURE",
        "UNKNOWN",
        "UNKNOWN",
        "RETRY_TO_MAX",
    ),
    (
        -8000,
        "ContainerUndefinedNegativeExitCode",
        "UNKNOWN",
        "UNKNOWN",
        "UNKNOWN_FAILURE",
        "UNKNOWN",
        "UNKNOWN",
        "RETRY_TO_MAX",
    ),
    (
        256,
        "PAIRuntimeExitAbnormally",
        "PAI_RUNTIME",
        "PAI_RUNTIME",
        "PLATFORM_FAILURE",
        "UNKNOWN",
        "UNKNOWN",
        "RETRY_TO_MAX",
    ),
]


def _doc() -> dict[str, Any]:
    return copy.deepcopy(builtin_spec().document)


def _refusal(document: Any) -> str:
    with pytest.raises(InvalidParametersError) as info:
        build_spec(document)
    return info.value.message


def test_the_proto_copy_and_the_packaged_copy_are_identical() -> None:
    # The service loads its own copy (package data); proto/ holds the published one. They must not drift.
    assert (PROTO / SPEC_FILE).read_text(encoding="utf-8") == packaged_text(SPEC_FILE)
    assert (PROTO / SCHEMA_FILE).read_text(encoding="utf-8") == packaged_text(SCHEMA_FILE)
    json.loads(packaged_text(SCHEMA_FILE))


@pytest.mark.parametrize("fact", OPENPAI, ids=[str(f[0]) for f in OPENPAI])
def test_every_openpai_code_keeps_its_facts(fact: tuple[Any, ...]) -> None:
    code, phrase, issuer, causer, type_, stage, behavior, reaction = fact
    entry = builtin_spec().by_code(code)
    assert entry is not None
    f = entry.fields
    assert (entry.phrase, f["issuer"], f["causer"], f["type"], f["stage"], f["behavior"], f["reaction"]) == (
        phrase,
        issuer,
        causer,
        type_,
        stage,
        behavior,
        reaction,
    )
    assert f["reason"] and "\n" not in f["reason"]


def test_openpai_relative_order_is_kept_but_for_the_unreachable_gpu_entry() -> None:
    ours = [e.code for e in builtin_spec().entries if e.code in {f[0] for f in OPENPAI}]
    theirs = [f[0] for f in OPENPAI]
    # -1205 had to move before -1204, whose pattern (any ContainerCannotRun with exit 128) shadowed it.
    moved = theirs.copy()
    moved.remove(-1205)
    moved.insert(moved.index(-1204), -1205)
    assert ours == moved


# Codes the orchestrator decides for a job that no task exit ever carries: no pattern, the orchestrator's
# range of the spec ([-999, -1]).
ORCHESTRATOR_ADDITIONS = {-240: "JobDependencyUnsatisfied"}


def test_new_codes_are_in_their_own_range_and_documented() -> None:
    openpai = {f[0] for f in OPENPAI}
    new = [
        e for e in builtin_spec().entries if e.code not in openpai and e.code not in ORCHESTRATOR_ADDITIONS
    ]
    codes = {300, 301, 302, 303, 304, 305, 306, 307, 308, 320, 340, 341, 342, 343, 344, 360, 361}
    assert {e.code for e in new} == codes
    for e in new:
        assert 300 <= e.code <= 399
        assert e.reason and e.solution and e.fields["repro"]
        assert e.runtime_patterns or e.pod_patterns
    for code, phrase in ORCHESTRATOR_ADDITIONS.items():
        entry = builtin_spec().by_code(code)
        assert entry is not None and entry.phrase == phrase and -999 <= code <= -1
        assert entry.reason and entry.solution and not (entry.runtime_patterns or entry.pod_patterns)
    assert len({e.phrase for e in builtin_spec().entries}) == len(builtin_spec().entries) == 80


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (226, "RuntimeError: cuda runtime error (2) : out of memory at /pytorch/aten/THCStorage.cu:58"),
        (228, "TypeError: dynamic_rnn() got multiple values for keyword argument 'dtype'"),
        (229, "FileNotFoundError: [Errno 2] No such file or directory: 'x.csv'"),
    ],
)
def test_the_three_regexes_that_never_matched_now_match_their_text(code: int, text: str) -> None:
    entry = builtin_spec().by_code(code)
    assert entry is not None
    assert any(p.user_log is not None and p.user_log.search(text.encode()) for p in entry.runtime_patterns)
    # What OpenPAI had (parentheses and brackets unescaped) does not match the same text.
    broken = {
        226: r"(?i)cuda runtime error (2) : out of memory",
        228: r"(?i)typeerror: dynamic_rnn() got multiple values for keyword argument",
        229: r"(?i)filenotfounderror: [errno 2] no such file or directory",
    }[code]
    assert compile_safe(broken).search(text.encode()) is None


@pytest.mark.parametrize(
    ("behavior", "reaction", "type_", "expected"),
    [
        ("TRANSIENT", "ALWAYS_RETRY", "PLATFORM_FAILURE", "Transient"),
        ("TRANSIENT_CONFLICT", "ALWAYS_BACKOFF_RETRY", "RESOURCE_ALLOCATION_TIMEOUT", "TransientConflict"),
        ("PERMANENT", "NEVER_RETRY", "USER_FAILURE", "Permanent"),
        ("UNKNOWN", "RETRY_TO_MAX", "UNKNOWN_FAILURE", "Unknown"),
        ("UNKNOWN", "NEVER_RETRY", "USER_SUCCESS", "Succeeded"),
        (None, "ALWAYS_RETRY", "PLATFORM_FAILURE", "Transient"),
        (None, "ALWAYS_BACKOFF_RETRY", None, "TransientConflict"),
        (None, "NEVER_RETRY", None, "Permanent"),
        (None, None, None, "Unknown"),
    ],
)
def test_failure_type_follows_behavior_then_reaction(
    behavior: str | None, reaction: str | None, type_: str | None, expected: str
) -> None:
    doc = _doc()
    entry: dict[str, Any] = {"code": 400, "phrase": "AdminCode"}
    for key, value in (("behavior", behavior), ("reaction", reaction), ("type", type_)):
        if value is not None:
            entry[key] = value
    doc["spec"].append(entry)
    spec = build_spec(doc)
    got = spec.by_code(400)
    assert got is not None
    assert failure_type_of(got) == expected


def test_failure_types_of_the_shipped_spec() -> None:
    spec = builtin_spec()
    by_code = {e.code: failure_type_of(e) for e in spec.entries}
    assert by_code[0] == "Succeeded"
    assert by_code[251] == "TransientConflict"
    assert by_code[137] == by_code[-1000] == by_code[360] == "Transient"
    assert by_code[300] == by_code[-1200] == by_code[220] == "Permanent"
    assert by_code[255] == by_code[-8000] == by_code[128] == "Unknown"


# ---- refusals ----------------------------------------------------------------------------------------------


def test_a_duplicate_code_and_phrase_are_named() -> None:
    doc = _doc()
    doc["spec"].append({**doc["spec"][3], "phrase": "Other"})
    doc["spec"].append({**doc["spec"][4], "code": 401})
    message = _refusal(doc)
    assert f"code {doc['spec'][3]['code']}" in message and "code repeats" in message
    assert f"phrase {doc['spec'][4]['phrase']!r} repeats" in message


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.update(version=2), "version"),
        (lambda d: d["spec"][0].update(behavior="SOMETIMES"), "SOMETIMES"),
        (lambda d: d["spec"][0].update(colour="red"), "colour"),
        (lambda d: d["spec"][0].update(code=5000), "5000"),
        (lambda d: d["spec"][0].update(phrase="has space"), "has space"),
        (
            lambda d: d["spec"][1].update(pattern={"runtimeContainerPatterns": [{}]}),
            "runtimeContainerPatterns",
        ),
        (lambda d: d["spec"][1].update(pattern={"runtimeContainerPatterns": [{"exitCode": "1"}]}), "'1'"),
        (lambda d: d.pop("spec"), "spec"),
    ],
)
def test_schema_violations_are_refused_with_where(mutate: Any, needle: str) -> None:
    doc = _doc()
    mutate(doc)
    message = _refusal(doc)
    assert "schema" in message and needle in message


@pytest.mark.parametrize(
    ("regex", "needle"),
    [
        (r"(a)\1", "invalid escape"),
        (r"foo(?=bar)", "invalid perl operator"),
        (r"(?<!x)y", "invalid perl operator"),
        (r"unclosed(", "missing )"),
        ("a" * (MAX_PATTERN_CHARS + 1), "longer than"),
        (r"(abcd|efgh){900}", "too complex"),
        ("caf\u00e9", "ASCII"),
    ],
)
def test_unsafe_or_invalid_regexes_are_refused(regex: str, needle: str) -> None:
    with pytest.raises(RegexError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        compile_safe(regex)
    doc = _doc()
    doc["spec"].append(
        {
            "code": 402,
            "phrase": "AdminRegex",
            "pattern": {"runtimeContainerPatterns": [{"userLogRegex": regex}]},
        }
    )
    message = _refusal(doc)
    if len(regex) <= MAX_PATTERN_CHARS:  # the schema's maxLength catches the long one first
        assert "spec[80] (code 402)" in message and "userLogRegex" in message


def test_the_fallback_codes_are_required() -> None:
    for code in REQUIRED_CODES:
        doc = _doc()
        doc["spec"] = [e for e in doc["spec"] if e["code"] != code]
        assert f"code {code} is required" in _refusal(doc)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("version: [1\n", "not valid YAML"),
        ("- 1\n- 2\n", "must be a mapping"),
        ("just text", "must be a mapping"),
        ("x: " + "a" * (1 << 20), "exceeds"),
        ("a: &x [1, 2]\nb: [*x, *x]\n", "aliases"),
        ("[" * 5000 + "]" * 5000, "nested too deeply"),
        ("a:\n" + " " * 300 + "b: 1\n", "indented more than"),
    ],
)
def test_text_that_is_not_a_spec_document(text: str, needle: str) -> None:
    with pytest.raises(InvalidParametersError, match=needle):
        parse_document(text)


def test_json_text_is_accepted_like_yaml() -> None:
    spec = parse_spec(json.dumps(builtin_spec().document))
    assert [e.code for e in spec.entries] == [e.code for e in builtin_spec().entries]


# ---- overlays ---------------------------------------------------------------------------------------------


def test_an_overlay_replaces_in_place_and_appends_new_codes() -> None:
    upload = {
        "version": 1,
        "spec": [
            {**_doc()["spec"][0]},  # keep the required codes valid in the upload itself
            {"code": 255, "phrase": "PAIRuntimeUnknownFailed", "reason": "Admin's own words."},
            {"code": 256, "phrase": "PAIRuntimeExitAbnormally"},
            {"code": -8000, "phrase": "ContainerUndefinedNegativeExitCode"},
            {
                "code": 450,
                "phrase": "LicenseServerDown",
                "behavior": "TRANSIENT",
                "reaction": "ALWAYS_RETRY",
                "pattern": {"runtimeContainerPatterns": [{"userLogRegex": "(?i)license server unreachable"}]},
            },
        ],
    }
    merged = overlay(_doc(), upload)
    spec = build_spec(merged)
    codes = [e.code for e in spec.entries]
    assert codes[:-1] == [e.code for e in builtin_spec().entries] and codes[-1] == 450
    replaced = spec.by_code(255)
    assert replaced is not None and replaced.reason == "Admin's own words."


def test_an_overlay_that_is_itself_invalid_is_refused() -> None:
    with pytest.raises(InvalidParametersError):
        overlay(_doc(), {"version": 1, "spec": [{"code": 1, "phrase": "X", "pattern": {"bad": 1}}]})


def test_the_spec_file_is_yaml_with_a_version() -> None:
    raw = yaml.safe_load((PROTO / SPEC_FILE).read_text(encoding="utf-8"))
    assert raw["version"] == 1
    assert raw == builtin_spec().document


def test_the_shipped_spec_is_read_by_libyaml_with_the_same_checks() -> None:
    # PyYAML's pure-Python parser took 0.13 s of the service's start; the document is the same (above).
    assert BUILTIN_LOADER is yaml.CSafeLoader
    with pytest.raises(InvalidParametersError, match="must not use YAML aliases"):
        parse_document("version: 1\nspec: &a []\nother: *a\n", BUILTIN_LOADER)
    with pytest.raises(InvalidParametersError, match="not valid YAML"):
        parse_document("version: [1\n", BUILTIN_LOADER)
