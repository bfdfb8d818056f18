"""The job list query: OpenPAI's filters and orders as a MongoDB filter and sort over `job_list`
documents (see list_plan for why the submission order is read differently).

Pure: builds documents, runs nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from pymongo import ASCENDING, DESCENDING

from pai_common.contract.rpc import ListJobsRequest
from pai_common.errors import InvalidParametersError
from pai_jobs.protocol import DEFAULT_PRIORITY_CLASS, PRIORITY_BY_CLASS

# OpenPAI's order fields, mapped to where the read model keeps them.
ORDER_FIELDS: Final[Mapping[str, str]] = {
    "jobName": "name",
    "submissionTime": "submitted_at",
    "username": "user",
    "vc": "vc",
    "retries": "retries",
    "totalTaskNumber": "total_tasks",
    "totalGpuNumber": "total_gpus",
    "state": "state",
    "completionTime": "completed_at",
    "jobPriority": "priority",
}

PUBLIC_STATES: Final = frozenset(
    {"WAITING", "RUNNING", "STOPPING", "SUCCEEDED", "FAILED", "STOPPED", "UNKNOWN"}
)
# "default" is a job that named no priority class; it runs with the default class.
PRIORITY_FILTERS: Final[Mapping[str, int]] = {
    **PRIORITY_BY_CLASS,
    "default": PRIORITY_BY_CLASS[DEFAULT_PRIORITY_CLASS],
}


def list_filter(req: ListJobsRequest) -> dict[str, Any]:
    """The MongoDB filter for a list request; InvalidParametersError for a value no job can have."""
    query: dict[str, Any] = {}
    if req.usernames:
        query["user"] = req.usernames[0] if len(req.usernames) == 1 else {"$in": req.usernames}
    if req.virtual_cluster:
        query["vc"] = req.virtual_cluster
    if req.states:
        unknown = sorted(set(req.states) - PUBLIC_STATES)
        if unknown:
            raise InvalidParametersError(
                f"state {', '.join(unknown)} is not one of {', '.join(sorted(PUBLIC_STATES))}"
            )
        query["state"] = req.states[0] if len(req.states) == 1 else {"$in": req.states}
    if req.keyword:
        pattern = re.escape(req.keyword)
        query["$or"] = [{field: {"$regex": pattern}} for field in ("name", "user", "vc")]
    tags: dict[str, Any] = {}
    if req.tags_contain:
        tags["$in"] = req.tags_contain
    if req.tags_not_contain:
        tags["$nin"] = req.tags_not_contain
    if tags:
        query["tags"] = tags
    if req.job_priorities:
        unknown = sorted(set(req.job_priorities) - set(PRIORITY_FILTERS))
        if unknown:
            raise InvalidParametersError(
                f"jobPriority {', '.join(unknown)} is not one of {', '.join(PRIORITY_FILTERS)}"
            )
        query["priority"] = {"$in": sorted({PRIORITY_FILTERS[p] for p in req.job_priorities})}
    return query


def list_sort(req: ListJobsRequest) -> list[tuple[str, int]]:
    field = ORDER_FIELDS.get(req.order_field)
    if field is None:
        raise InvalidParametersError(
            f"order field {req.order_field!r} is not one of {', '.join(ORDER_FIELDS)}"
        )
    direction = ASCENDING if req.order == "ASC" else DESCENDING
    # _id breaks ties, so that pages never overlap or skip jobs with equal keys.
    return [(field, direction), ("_id", direction)]
