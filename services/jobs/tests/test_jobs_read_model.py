"""The read model's newer shapes (exit specs, ports, retry details, attempts, task attempts), the list
query and the job events: pure functions, table-driven."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pai_common.contract.rpc import ListJobsRequest
from pai_common.contract.types import (
    FrameworkSnapshot,
    JobAttemptRecord,
    JobSpec,
    TaskAttemptRecord,
    TaskRoleSpec,
    TaskSnapshot,
)
from pai_common.errors import InvalidParametersError
from pai_jobs import job_events
from pai_jobs.queries import ORDER_FIELDS, list_filter, list_sort
from pai_jobs.shell import new_job_document, read_model_fields
from pai_jobs.views import attempt_snapshot as attempt_snapshot_of
from pai_jobs.views import (
    container_ports,
    job_attempt,
    job_attempts,
    job_detail,
    job_summary,
    retry_delay_ms,
    retry_details,
    task_attempts,
)

KEY = "bob~trainer"
T0 = 1_700_000_000_000
EXIT_SPEC = {"code": 1, "phrase": "UserCommandExitWithError", "type": "USER_FAILURE", "reaction": "RETRY"}


def _spec() -> JobSpec:
    return JobSpec(
        job_key=KEY,
        user="bob",
        name="trainer",
        virtual_cluster="default",
        priority=100,
        job_retry_count=3,
        task_roles=[TaskRoleSpec(name="worker", instances=2, gpu=1, cpu=2, memory_mb=1024, entrypoint="x")],
        submitted_at=T0,
    )


def _task(index: int, **fields: Any) -> TaskSnapshot:
    base: dict[str, Any] = {"task_role": "worker", "index": index, "state": "TaskAttemptRunning"}
    return TaskSnapshot(**{**base, **fields})


def _snapshot() -> FrameworkSnapshot:
    """Attempt 2 runs; attempt 0 failed (user), attempt 1 was lost to the platform; worker 1 retried once."""
    earlier_task = _task(
        0, state="TaskCompleted", node="n1", host_ip="10.0.0.1", exit_code=1, exit_spec=EXIT_SPEC
    )
    return FrameworkSnapshot(
        job_key=KEY,
        version=9,
        state="AttemptRunning",
        attempt_id=2,
        retries=2,
        accountable_retries=1,
        user_retries=1,
        platform_retries=1,
        resource_retries=0,
        created_at=T0 + 1,
        attempt_created_at=T0 + 300,
        attempt_launched_at=T0 + 310,
        tasks=[
            _task(0, node="n1", host_ip="10.0.0.1", ports={"http": [15001], "nccl": [15002, 15003]}),
            _task(
                1,
                attempt_id=1,
                retries=1,
                accountable_retries=1,
                node="n2",
                host_ip="10.0.0.2",
                history=[
                    TaskAttemptRecord(
                        attempt_id=0,
                        state="TaskAttemptCompleted",
                        node="n3",
                        host_ip="10.0.0.3",
                        ports={"http": [16000]},
                        exit_code=137,
                        exit_spec={"code": 137, "phrase": "ContainerSigKilled"},
                        completed_at=T0 + 350,
                    )
                ],
            ),
        ],
        attempts=[
            JobAttemptRecord(
                attempt_id=1,
                state="AttemptCompleted",
                created_at=T0 + 100,
                completed_at=T0 + 200,
                exit_code=-1000,
                exit_type="Transient",
                tasks=[],
            ),
            JobAttemptRecord(
                attempt_id=0,
                state="AttemptCompleted",
                created_at=T0 + 2,
                completed_at=T0 + 90,
                exit_code=1,
                exit_type="Failed",
                exit_spec=EXIT_SPEC,
                exit_diagnostics="worker 0 failed",
                trigger_task_role="worker",
                trigger_task_index=0,
                tasks=[earlier_task],
            ),
        ],
    )


def _doc(snapshot: FrameworkSnapshot | None = None) -> dict[str, Any]:
    doc = new_job_document(_spec().model_dump(mode="json"), {"name": "trainer"})
    if snapshot is not None:
        doc.update(read_model_fields(snapshot.model_dump(mode="json")))
    return doc


# ---- detail ------------------------------------------------------------------------------------------


def test_container_ports_join_each_label() -> None:
    assert container_ports({"http": [15001], "nccl": [15002, 15003]}) == {
        "http": "15001",
        "nccl": "15002,15003",
    }
    assert container_ports({}) == {}


def test_task_statuses_show_ports_and_retries() -> None:
    tasks = job_detail(_doc(_snapshot()))["taskRoles"]["worker"]["taskStatuses"]
    assert tasks[0]["containerPorts"] == {"http": "15001", "nccl": "15002,15003"}
    assert tasks[1]["retries"] == 1 and tasks[1]["accountableRetries"] == 1
    assert tasks[1]["containerLog"].endswith("/attempts/2/taskRoles/worker/taskIndex/1/attempts/1/logs")


def test_retry_details_come_from_the_orchestrator_split() -> None:
    status = job_detail(_doc(_snapshot()))["jobStatus"]
    assert status["retryDetails"] == {"user": 1, "platform": 1, "resource": 0}


@pytest.mark.parametrize(
    ("snapshot", "expected"),
    [
        ({"retries": 0}, {"user": 0, "platform": 0, "resource": 0}),
        ({"retries": 3, "accountable_retries": 1}, {"user": 1, "platform": 2, "resource": 0}),
        (
            {"retries": 3, "user_retries": 1, "platform_retries": 1, "resource_retries": 1},
            {"user": 1, "platform": 1, "resource": 1},
        ),
    ],
)
def test_retry_details(snapshot: dict[str, Any], expected: dict[str, int]) -> None:
    assert retry_details(snapshot) == expected


@pytest.mark.parametrize(
    ("snapshot", "expected"),
    [
        ({}, 0),
        ({"retry_at": T0 + 5000, "attempt_completed_at": T0}, 5000),
        ({"retry_at": T0, "attempt_completed_at": T0 + 9}, 0),
    ],
)
def test_retry_delay(snapshot: dict[str, Any], expected: int) -> None:
    assert retry_delay_ms(snapshot) == expected


def test_exit_spec_and_messages_are_shown() -> None:
    snapshot = _snapshot().model_copy(
        update={
            "state": "Completed",
            "exit_code": 1,
            "exit_spec": EXIT_SPEC,
            "exit_messages": {"runtime": {"reason": "oom"}, "launcher": "worker 0 failed"},
            "tasks": [_task(0, state="TaskCompleted", exit_code=1, exit_spec=EXIT_SPEC)],
        }
    )
    detail = job_detail(_doc(snapshot))
    assert detail["jobStatus"]["appExitSpec"] == EXIT_SPEC
    # OpenPAI types every message of the detail a string or null: the runtime's analysis as JSON text.
    assert detail["jobStatus"]["appExitMessages"] == {
        "container": None,
        "runtime": '{"reason": "oom"}',
        "launcher": "worker 0 failed",
    }
    # The job attempts keep it an object, inside exitDiagnostics as OpenPAI's shape has it.
    (latest,) = job_attempts(_doc(snapshot.model_copy(update={"attempts": []})))
    assert latest["appExitMessages"]["runtime"] == {"reason": "oom"}
    assert latest["exitDiagnostics"] == {
        "diagnosticsSummary": "worker 0 failed",
        "runtime": {"exitCode": 1, "reason": "oom"},
        "launcher": "worker 0 failed",
    }
    assert detail["taskRoles"]["worker"]["taskStatuses"][0]["containerExitSpec"] == EXIT_SPEC


@pytest.mark.parametrize(
    ("stored", "reported", "expected"),
    [("START", "START", "START"), ("STOP", "START", "STOP"), ("START", "STOP", "STOP")],
)
def test_execution_type_is_stop_once_either_side_says_so(stored: str, reported: str, expected: str) -> None:
    doc = _doc(_snapshot().model_copy(update={"execution_type": reported}))
    doc["execution_type"] = stored
    assert job_detail(doc)["jobStatus"]["executionType"] == expected
    assert job_summary(doc)["executionType"] == expected


def test_detail_of_an_earlier_attempt() -> None:
    doc = _doc(_snapshot())
    earlier = attempt_snapshot_of(doc, 0)
    assert earlier is not None
    detail = job_detail(doc, earlier)
    assert detail["jobStatus"]["attemptId"] == 0
    assert detail["jobStatus"]["attemptState"] == "FAILED"
    assert detail["jobStatus"]["appExitSpec"] == EXIT_SPEC
    tasks = detail["taskRoles"]["worker"]["taskStatuses"]
    assert tasks[0]["containerExitCode"] == 1
    assert tasks[1]["taskState"] == "WAITING"  # attempt 0 never reported worker 1
    assert attempt_snapshot_of(doc, 7) is None
    # Before the orchestrator's first report, attempt 0 exists and waits (as in OpenPAI).
    first = attempt_snapshot_of(_doc(), 0)
    assert first is not None and first.attempt_id == 0 and first.state == "AttemptCreationPending"
    assert attempt_snapshot_of(_doc(), 1) is None


# ---- attempts -----------------------------------------------------------------------------------------


def test_job_attempts_latest_first_then_ascending() -> None:
    attempts = job_attempts(_doc(_snapshot()))
    assert [(a["attemptIndex"], a["isLatest"]) for a in attempts] == [(2, True), (0, False), (1, False)]
    latest, first, second = attempts
    assert latest["state"] == "RUNNING"
    assert first["state"] == "FAILED" and first["exitPhrase"] == "UserCommandExitWithError"
    assert first["appExitTriggerTaskRoleName"] == "worker"
    assert second["exitCode"] == -1000 and second["exitType"] == "Transient"
    assert latest["totalGpuNumber"] == 2 and latest["totalTaskNumber"] == 2
    assert latest["jobPriority"] == "prod"
    assert set(latest["taskRoles"]["worker"]["taskStatuses"][0]) == {
        "taskIndex",
        "taskState",
        "containerId",
        "containerIp",
        "containerGpus",
        "containerLog",
        "containerExitCode",
    }


def test_one_job_attempt() -> None:
    doc = _doc(_snapshot())
    one = job_attempt(doc, 1)
    assert one is not None and one["attemptIndex"] == 1 and one["isLatest"] is True
    assert job_attempt(doc, 3) is None
    # A job the orchestrator has not reported yet: its first attempt, waiting, at once.
    (waiting,) = job_attempts(_doc())
    assert (waiting["attemptIndex"], waiting["state"], waiting["isLatest"]) == (0, "WAITING", True)
    assert waiting["exitDiagnostics"] is None
    assert job_attempt(_doc(), 0) == waiting
    assert "containerIp" not in waiting["taskRoles"]["worker"]["taskStatuses"][0]


def test_an_attempt_whose_tasks_were_left_out_shows_no_tasks_and_says_how_many() -> None:
    """The orchestrator leaves out the task lists of a big job's oldest attempts (to keep its events within
    the bus's limit): such an attempt keeps OpenPAI's shape with empty task lists, not tasks that seem to
    wait, and says how many were left out."""
    snapshot = _snapshot()
    cut = snapshot.attempts[0].model_copy(update={"tasks": [], "tasks_omitted": 2})
    doc = _doc(snapshot.model_copy(update={"attempts": [cut, *snapshot.attempts[1:]]}))
    by_index = {a["attemptIndex"]: a for a in job_attempts(doc)}
    assert by_index[1]["tasksOmitted"] == 2
    assert by_index[1]["taskRoles"] == {"worker": {"taskRoleStatus": {"name": "worker"}, "taskStatuses": []}}
    assert by_index[1]["exitCode"] == -1000 and by_index[1]["state"] == "FAILED"
    assert job_attempt(doc, 1) == {**by_index[1], "isLatest": True}
    # The others as before: no mark, every task shown.
    assert "tasksOmitted" not in by_index[0] and "tasksOmitted" not in by_index[2]
    assert len(by_index[2]["taskRoles"]["worker"]["taskStatuses"]) == 2


def test_task_attempts_current_first() -> None:
    status = task_attempts(_doc(_snapshot()), 2, "worker", 1)
    assert status is not None
    assert status["jobAttemptId"] == 2 and status["taskRoleName"] == "worker" and status["taskIndex"] == 1
    assert status["retries"] == 1
    assert [a["attemptId"] for a in status["attempts"]] == [1, 0]
    current, earlier = status["attempts"]
    assert current["attemptState"] == "RUNNING" and current["containerNodeName"] == "n2"
    assert earlier["attemptState"] == "FAILED"
    assert earlier["containerPorts"] == {"http": "16000"}
    assert earlier["containerExitSpec"] == {"code": 137, "phrase": "ContainerSigKilled"}
    assert earlier["containerLog"].endswith("/taskIndex/1/attempts/0/logs")


@pytest.mark.parametrize(
    ("attempt", "role", "index"), [(2, "ps", 0), (2, "worker", 2), (5, "worker", 0), (2, "worker", -1)]
)
def test_task_attempts_of_what_does_not_exist(attempt: int, role: str, index: int) -> None:
    assert task_attempts(_doc(_snapshot()), attempt, role, index) is None


def test_task_attempts_before_the_first_report() -> None:
    status = task_attempts(_doc(), 0, "worker", 0)
    assert status is not None and status["taskState"] == "WAITING" and status["attempts"] == []
    assert task_attempts(_doc(), 1, "worker", 0) is None


# ---- the read model's query fields --------------------------------------------------------------------


def test_query_fields_follow_the_snapshot() -> None:
    running = read_model_fields(_snapshot().model_dump(mode="json"))
    assert (running["state"], running["retries"], running["completed_at"]) == ("RUNNING", 2, None)
    done = _snapshot().model_copy(update={"state": "Completed", "exit_code": 0, "completed_at": T0 + 999})
    fields = read_model_fields(done.model_dump(mode="json"))
    assert (fields["state"], fields["completed_at"], fields["snapshot_version"]) == ("SUCCEEDED", T0 + 999, 9)


@pytest.mark.parametrize(
    ("request_fields", "expected"),
    [
        ({}, {}),
        ({"usernames": ["a"]}, {"user": "a"}),
        ({"usernames": ["a", "b"]}, {"user": {"$in": ["a", "b"]}}),
        ({"virtual_cluster": "vc1"}, {"vc": "vc1"}),
        ({"states": ["RUNNING", "WAITING"]}, {"state": {"$in": ["RUNNING", "WAITING"]}}),
        ({"tags_contain": ["x", "y"]}, {"tags": {"$in": ["x", "y"]}}),
        ({"tags_not_contain": ["z"]}, {"tags": {"$nin": ["z"]}}),
        ({"tags_contain": ["x"], "tags_not_contain": ["z"]}, {"tags": {"$in": ["x"], "$nin": ["z"]}}),
        ({"job_priorities": ["prod", "oppo"]}, {"priority": {"$in": [-1, 100]}}),
        ({"job_priorities": ["default", "test"]}, {"priority": {"$in": [10]}}),
        (
            {"keyword": "a.b"},
            {
                "$or": [
                    {"name": {"$regex": r"a\.b"}},
                    {"user": {"$regex": r"a\.b"}},
                    {"vc": {"$regex": r"a\.b"}},
                ]
            },
        ),
    ],
)
def test_list_filter(request_fields: dict[str, Any], expected: dict[str, Any]) -> None:
    assert list_filter(ListJobsRequest(**request_fields)) == expected


@pytest.mark.parametrize(
    ("request_fields", "words"),
    [({"states": ["DONE"]}, "state DONE"), ({"job_priorities": ["urgent"]}, "jobPriority urgent")],
)
def test_list_filter_refuses_values_no_job_has(request_fields: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidParametersError, match=words):
        list_filter(ListJobsRequest(**request_fields))


@pytest.mark.parametrize("field", sorted(ORDER_FIELDS))
def test_every_order_field_sorts_with_a_tie_breaker(field: str) -> None:
    assert list_sort(ListJobsRequest(order_field=field, order="ASC")) == [
        (ORDER_FIELDS[field], 1),
        ("_id", 1),
    ]
    assert list_sort(ListJobsRequest(order_field=field))[1] == ("_id", -1)


def test_unknown_order_field() -> None:
    with pytest.raises(InvalidParametersError, match="order field 'size'"):
        list_sort(ListJobsRequest(order_field="size"))


# ---- job events ---------------------------------------------------------------------------------------


def test_repeats_of_an_event_fold_into_one_record() -> None:
    first = job_events.pending(KEY, 0, "VC default is full", 3, T0)
    again = job_events.pending(KEY, 0, "VC default is full", 2, T0 + 5)
    other = job_events.pending(KEY, 0, "no node has an A100", None, T0 + 6)
    next_attempt = job_events.pending(KEY, 1, "VC default is full", None, T0 + 7)
    ids = {event.upsert()[0]["_id"] for event in (first, again)}
    assert len(ids) == 1
    assert other.upsert()[0] != first.upsert()[0] != next_attempt.upsert()[0]
    update = again.upsert()[1]
    assert update["$inc"] == {"count": 1}
    assert update["$set"]["last_at"] == T0 + 5 and "position 2" in update["$set"]["message"]
    assert update["$setOnInsert"]["first_at"] == T0 + 5


def test_event_view_has_openpai_fields() -> None:
    _, update = job_events.attempt_completed(KEY, 1, 137, T0).upsert()
    record = {"_id": "u1", **update["$setOnInsert"], **update["$set"], "count": 1}
    view = job_events.event_view(record)
    assert set(view) == {
        "uid",
        "frameworkName",
        "podUid",
        "taskroleName",
        "taskName",
        "taskIndex",
        "type",
        "reason",
        "message",
        "firstTimestamp",
        "lastTimestamp",
        "count",
        "sourceComponent",
        "sourceHost",
    }
    assert (view["type"], view["reason"], view["count"]) == ("Warning", "AttemptCompleted", 1)
    # OpenPAI's types: Kubernetes event times as text; an event of the whole job names no pod or task.
    assert view["firstTimestamp"] == view["lastTimestamp"] == "2023-11-14T22:13:20.000Z"
    assert (view["podUid"], view["taskroleName"], view["taskName"], view["taskIndex"]) == ("", "", "", -1)
    assert job_events.iso_time(T0 + 250) == "2023-11-14T22:13:20.250Z"


def test_event_types() -> None:
    assert job_events.attempt_completed(KEY, 0, 0, T0).type == "Normal"
    assert job_events.preempted(KEY, 0, "carol~big#0", T0).type == "Warning"
    assert job_events.stop_requested(KEY, "bob", T0).reason == "StopRequested"
    assert "carol~big#0" in job_events.preempting(KEY, 0, ["carol~big#0"], T0).message


@given(st.text(max_size=5000))
def test_event_messages_are_bounded(reason: str) -> None:
    _, update = job_events.rejected(KEY, 0, reason, T0).upsert()
    assert len(update["$set"]["message"]) <= job_events.MAX_MESSAGE_CHARS


def test_cloud_event_time_to_epoch_ms() -> None:
    assert job_events.epoch_ms("2023-11-14T22:13:20Z", 0) == T0
    assert job_events.epoch_ms("2023-11-14T22:13:20.250000+00:00", 0) == T0 + 250
    assert job_events.epoch_ms("", 7) == 7
    assert job_events.epoch_ms("2023-11-14T22:13:20", 7) == 7  # no zone: not a CloudEvents time
