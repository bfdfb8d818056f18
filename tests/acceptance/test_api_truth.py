"""Truthful answers under load, from outside: 400 submissions from 64 concurrent clients of several users.

Every answer is checked against the job list afterwards: 202 only for a job that exists, an error only
for one that does not (429 with a Retry-After is allowed; the client then retries, as OpenPAI's clients
may). Then every accepted job must run to its end (the module's ledger): nothing accepted is lost.
No timing is asserted.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from tests.acceptance.harness import JobLedger, RunningPlatform

SUBMISSIONS = 400
CLIENTS = 64
USERS = 4
# How often one client asks again after a 429 or a 5xx before it gives up on that job.
TRIES = 20
RUN = uuid.uuid4().hex[:6]
PASSWORD = "truth-Pa55word"
YAML = {"Content-Type": "text/yaml"}

JOB = """protocolVersion: 2
name: {name}
type: job
prerequisites:
  - {{type: dockerimage, name: image, uri: "python:3.11-slim"}}
taskRoles:
{roles}
"""
ROLE = """  {role}:
    instances: {instances}
    dockerImage: image
    resourcePerInstance: {{cpu: 1, memoryMB: 64, gpu: 0}}
    commands: ["true"]
"""


def job_text(i: int) -> str:
    # Every fourth job has two task roles.
    roles = ROLE.format(role="worker", instances=1)
    if i % 4 == 3:
        roles += ROLE.format(role="ps", instances=1)
    return JOB.format(name=f"truth_{RUN}_{i}", roles=roles)


@dataclass
class Outcome:
    user: str
    name: str
    answers: list[tuple[int, str, str | None]] = field(default_factory=list)  # status, body, Retry-After

    @property
    def accepted(self) -> bool:
        return any(status == 202 for status, _, _ in self.answers)


def submit(url: str, token: str, user: str, i: int) -> Outcome:
    outcome = Outcome(user, f"truth_{RUN}_{i}")
    text = job_text(i)
    with httpx.Client(base_url=url, timeout=300, headers={"Authorization": f"Bearer {token}"}) as c:
        for _ in range(TRIES):
            try:
                response = c.post("/api/v2/jobs", content=text, headers=YAML)
            except httpx.TransportError as exc:
                outcome.answers.append((0, repr(exc), None))
                time.sleep(1)
                continue
            outcome.answers.append((response.status_code, response.text, response.headers.get("Retry-After")))
            if response.status_code == 429:
                time.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            if response.status_code >= 500:
                time.sleep(1)  # a retry of an identical submission is answered 202 if the job exists
                continue
            break
    return outcome


def test_every_answer_is_true_under_a_burst(pai: RunningPlatform, ledger: JobLedger) -> None:
    tokens: dict[str, str] = {}
    with pai.client() as admin:
        for n in range(USERS):
            name = f"truth_{RUN}_u{n}"
            created = admin.post("/api/v2/users", json={"username": name, "password": PASSWORD})
            assert created.status_code == 201, created.text
            tokens[name] = pai.login(name, PASSWORD)
    users = sorted(tokens)

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        futures = [
            pool.submit(submit, pai.url, tokens[users[i % USERS]], users[i % USERS], i)
            for i in range(SUBMISSIONS)
        ]
        outcomes = [f.result() for f in futures]

    with pai.client() as admin:
        listed = admin.get(
            "/api/v2/jobs", params={"username": ",".join(users), "limit": 5000, "withTotalCount": "true"}
        )
        assert listed.status_code == 200, listed.text
        existing = {(job["username"], job["name"]) for job in listed.json()["data"]}
        assert listed.json()["totalCount"] == len(existing)

    lies = []
    statuses: dict[int, int] = defaultdict(int)
    for outcome in outcomes:
        exists = (outcome.user, outcome.name) in existing
        for status, body, retry_after in outcome.answers:
            statuses[status] += 1
            if status == 202 and not exists:
                lies.append(f"{outcome.name}: 202 but no such job")
            elif status == 429 and (retry_after is None or int(retry_after) < 1):
                lies.append(f"{outcome.name}: 429 without a Retry-After")
            elif status not in (202, 429):
                # The platform must not answer an error to these valid jobs under load (409 would punish a
                # retry of a success; 5xx says nothing true about the job).
                lies.append(
                    f"{outcome.name}: {status} {body[:200]} (the job {'exists' if exists else 'does not'})"
                )
        if exists and not outcome.accepted:
            lies.append(f"{outcome.name}: exists, yet its client was never told 202: {outcome.answers}")
        if not exists and outcome.accepted:
            lies.append(f"{outcome.name}: accepted, then lost")
    print(f"\nanswers by status: {dict(statuses)}; jobs created: {len(existing)} of {SUBMISSIONS}")
    assert not lies, "\n".join(lies[:50])
    assert len(existing) == sum(o.accepted for o in outcomes)
    # Nothing accepted is lost: each one runs to its end (checked by the ledger when the module ends).
    for user, name in sorted(existing):
        ledger.expect(f"{user}~{name}", "SUCCEEDED")


def test_a_retried_success_gets_the_same_answer(pai: RunningPlatform, ledger: JobLedger) -> None:
    name = f"retried_{RUN}"
    text = JOB.format(name=name, roles=ROLE.format(role="worker", instances=1))
    with pai.client() as c:
        first = c.post("/api/v2/jobs", content=text, headers=YAML)
        assert first.status_code == 202, first.text
        ledger.expect(f"{pai.admin_user}~{name}", "SUCCEEDED")
        again = c.post("/api/v2/jobs", content=text, headers=YAML)
        assert (again.status_code, again.json()) == (202, first.json())
        other = c.post("/api/v2/jobs", content=text.replace('["true"]', '["echo other"]'), headers=YAML)
        assert other.status_code == 409 and other.json()["code"] == "ConflictJobError"
        listed = c.get("/api/v2/jobs", params={"keyword": name, "withTotalCount": "true"})
        assert listed.json()["totalCount"] == 1
