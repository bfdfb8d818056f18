"""The job protocol's two YAML loaders: libyaml's parser (fast) and PyYAML's pure one (the judge).

Every document is read by libyaml first; one it refuses is read again by the pure loader, whose answer and
messages stand. So the libyaml loader must build the very same documents and enforce the same bounds by
itself: a bound it missed would not show in `parse_job`'s answers, only in its cost.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from yaml.composer import ComposerError

from pai_common.errors import InvalidProtocolError
from pai_jobs import protocol
from pai_jobs.protocol import MAX_DEPTH, MAX_NODES, ROOT_FIELD, parse_job

ROOT = Path(__file__).resolve().parents[3]
CORPUS = sorted(
    [
        *(ROOT / "examples").rglob("*.yaml"),
        *(ROOT / "services" / "jobs" / "tests" / "data").rglob("*.yaml"),
        *(ROOT / "services" / "marketplace" / "pai_marketplace" / "seeds").glob("*.yaml"),
    ]
)
TRICKY = """
protocolVersion: 2
name: tricky
type: job
yes_is_a_string: yes
on_too: on
real_bool: True
when: 2001-12-14t21:59:43.10-05:00
octal: 0o17
old_octal: 017
hex: 0x1F
float: 6.8523015e+5
inf: -.inf
nan: .NaN
nothing: ~
empty:
multi: |
  line one
  line two
folded: >
  one
  two
quoted: "tab\\there \\u00e9"
anchors:
  base: &base {a: 1, b: [x, y]}
  merged:
    <<: *base
    c: 3
"""


def _fast() -> type[protocol._Bounds]:
    assert protocol._FastLoader is not None, "this PyYAML was built without libyaml"
    return protocol._FastLoader


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_libyaml_builds_the_same_document_as_the_pure_loader(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    try:
        pure = protocol._load_with(protocol._GuardedLoader, text)
    except yaml.YAMLError:
        with pytest.raises(yaml.YAMLError):
            protocol._load_with(_fast(), text)
        return
    assert protocol._load_with(_fast(), text) == pure


def test_scalars_resolve_as_js_yaml_in_both_loaders() -> None:
    fast = protocol._load_with(_fast(), TRICKY)
    assert fast == protocol._load_with(protocol._GuardedLoader, TRICKY)
    assert isinstance(fast, dict)
    assert (fast["yes_is_a_string"], fast["on_too"], fast["real_bool"]) == ("yes", "on", True)
    assert fast["when"] == "2001-12-14t21:59:43.10-05:00"
    assert fast["anchors"]["merged"] == {"a": 1, "b": ["x", "y"], "c": 3}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n"
            + "".join(
                f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcd", "bcde", strict=True)
            ),
            f"more than {MAX_NODES} nodes",
        ),
        ("x: &loop [1, *loop]\n", "recursive aliases"),
        ("x: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n", "nested deeper"),
        ("x: 1\ny: 2\nx: 3\n", "duplicate key 'x'"),
    ],
    ids=["billion-laughs", "recursive-alias", "deep", "duplicate-key"],
)
def test_libyaml_enforces_every_bound_itself(text: str, words: str) -> None:
    with pytest.raises(ComposerError) as caught:
        protocol._load_with(_fast(), text)
    assert words in str(caught.value)


def test_a_document_libyaml_refuses_gets_the_pure_loaders_message() -> None:
    text = "protocolVersion: 2\nname: [unclosed\ntype: job\n"
    with pytest.raises(yaml.YAMLError) as pure:
        protocol._load_with(protocol._GuardedLoader, text)
    with pytest.raises(InvalidProtocolError) as caught:
        parse_job(text, "alice", 0)
    (problem,) = json.loads(caught.value.message)
    assert problem == {"field": ROOT_FIELD, "message": protocol._yaml_error_message(pure.value)}
    assert "line 3, column 5" in problem["message"]


def test_text_libyaml_cannot_even_encode_is_judged_by_the_pure_loader() -> None:
    # A lone surrogate: libyaml's loader fails with UnicodeEncodeError, not a YAML error.
    with pytest.raises(InvalidProtocolError) as caught:
        parse_job("protocolVersion: 2\nname: a\ud800b\ntype: job\n", "alice", 0)
    (problem,) = json.loads(caught.value.message)
    assert problem["field"] == ROOT_FIELD and "unacceptable character #xd800" in problem["message"]


def test_a_tab_after_a_key_is_accepted_as_js_yaml_does() -> None:
    parsed = parse_job(
        "protocolVersion:\t2\nname:\ttabbed\ntype: job\ntaskRoles:\n  main:\n"
        "    instances: 1\n    dockerImage: img\n    resourcePerInstance: {cpu: 1, memoryMB: 512, gpu: 0}\n"
        '    commands: ["true"]\nprerequisites:\n  - {type: dockerimage, name: img, uri: busybox}\n',
        "alice",
        0,
    )
    assert parsed.spec.name == "tabbed"
