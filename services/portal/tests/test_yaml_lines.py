"""Protocol problems land on the line of the field they name."""

from __future__ import annotations

import json

from pai_portal.yaml_lines import Problem, locate, parse_problems, problems_with_lines

DOC = """protocolVersion: 2
name: demo
prerequisites:
  - type: dockerimage
    uri: python:3.11-slim
    name: image
taskRoles:
  worker:
    instances: 0
    resourcePerInstance: {gpu: -1, cpu: 1}
extras:
  com.microsoft.pai.runtimeplugin:
    - plugin: ssh
"""


def test_dotted_paths_find_their_lines() -> None:
    assert locate(DOC, "taskRoles.worker.instances", "x") == 9
    assert locate(DOC, "taskRoles.worker.resourcePerInstance.gpu", "x") == 10
    assert locate(DOC, "prerequisites.0.uri", "x") == 5
    assert locate(DOC, "name", "x") == 2


def test_keys_with_dots_are_matched_whole() -> None:
    assert locate(DOC, "extras.com.microsoft.pai.runtimeplugin.0.plugin", "x") == 13


def test_a_missing_field_points_at_its_nearest_existing_parent() -> None:
    assert locate(DOC, "taskRoles.worker.commands", "is required") == 8
    assert locate(DOC, "prerequisites.5.uri", "x") == 3


def test_document_problems_have_no_line_and_syntax_errors_use_theirs() -> None:
    assert locate(DOC, "(root)", "x") is None
    assert locate("a: [", "(root)", "invalid YAML: ... (line 3, column 1)") == 3
    assert locate("a: [", "taskRoles", "x") is None  # unreadable YAML: nothing to follow


def test_parse_problems_of_an_invalid_protocol_error() -> None:
    message = json.dumps([{"field": "name", "message": "bad"}, {"field": "", "message": "whole"}])
    assert parse_problems(message) == [("name", "bad"), ("(root)", "whole")]
    assert parse_problems("plain text") == [("(root)", "plain text")]
    assert problems_with_lines(DOC, message) == [Problem("name", "bad", 2), Problem("(root)", "whole", None)]


def test_an_error_past_the_end_is_shown_on_the_last_line() -> None:
    message = json.dumps([{"field": "(root)", "message": "invalid YAML: unexpected end (line 2, column 1)"}])
    assert problems_with_lines("name: [unclosed\n", message)[0].line == 1
