"""A burst of concurrent submissions from several users, every job a multi-role job with a secret of its
own: every submission is answered truthfully, every job succeeds, the list counts them right, and no
message was dead-lettered on the way (read from the platform's NATS as an extension reads it, with the URL
`pai up` leaves in its data dir)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import nats

from tests.acceptance.harness import JobLedger, RunningPlatform, wait_final

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "examples" / "multi-role-secrets.yaml").read_text()
USERS = 3
JOBS_PER_USER = 3
# The stream an extension finds in proto/asyncapi.yaml: every message a handler gave up on, with why.
DEAD_LETTERS = "PAI_DEAD_LETTERS"


def job_text(name: str, secret: str) -> str:
    text = EXAMPLE.replace("name: multi-role-secrets", f"name: {name}", 1)
    return text.replace("token: change-me-7f3a91d2", f"token: {secret}", 1)


def test_concurrent_users_submitting_multi_role_jobs_with_secrets(
    pai: RunningPlatform, ledger: JobLedger
) -> None:
    run = str(int(time.time()))[-6:]
    users = [f"burst{run}u{i}" for i in range(USERS)]
    with pai.client() as admin:
        for user in users:
            created = admin.post("/api/v2/users", json={"username": user, "password": f"{user}-Pa55word"})
            assert created.status_code == 201, created.text
    tokens = {user: pai.login(user, f"{user}-Pa55word") for user in users}

    answers: dict[str, list[httpx.Response]] = {}
    start = threading.Barrier(USERS * JOBS_PER_USER)

    def submit(user: str, name: str) -> None:
        text = job_text(name, f"secret-of-{name}")  # each job its own secret: a mix-up fails the job
        with pai.client(tokens[user]) as client:
            start.wait()
            answers[f"{user}~{name}"] = submit_as_a_client_does(client, text)

    threads = [
        threading.Thread(target=submit, args=(user, f"mrs{run}-{user[-2:]}-{j}"))
        for user in users
        for j in range(JOBS_PER_USER)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # The truth: each submission ends in a 202 (a 429 or a 503 said "not done, try again", and trying
    # again, even after a submission that did go through, is answered 202), and its job exists.
    refused = {
        key: [f"{r.status_code} {r.text}" for r in rs]
        for key, rs in answers.items()
        if rs[-1].status_code != 202
    }
    assert not refused, refused
    for key in answers:
        ledger.expect(key, "SUCCEEDED")

    with pai.client() as admin:
        for key in answers:
            job = wait_final(admin, key)
            assert job["jobStatus"]["state"] == "SUCCEEDED", (key, job["jobStatus"])
            config = admin.get(f"/api/v2/jobs/{key}/config").json()
            assert config["secrets"] == {"token": "******"}
        # Every user's list holds exactly that user's jobs, and the count says so.
        for user in users:
            listed = admin.get("/api/v2/jobs", params={"username": user, "withTotalCount": "true"})
            assert listed.status_code == 200, listed.text
            body = listed.json()
            names = sorted(j["name"] for j in body["data"])
            assert names == sorted(k.split("~", 1)[1] for k in answers if k.startswith(f"{user}~"))
            assert body["totalCount"] == JOBS_PER_USER
            assert {j["state"] for j in body["data"]} == {"SUCCEEDED"}
            # The user sees the same list with their own token.
            with pai.client(tokens[user]) as own:
                mine = own.get("/api/v2/jobs", params={"username": user}).json()
                assert sorted(j["name"] for j in mine) == names
    assert dead_letters(pai) == []


def submit_as_a_client_does(client: httpx.Client, text: str, tries: int = 20) -> list[httpx.Response]:
    """Submit until the answer is final, as OpenPAI's clients do: a 429 is tried again after its
    Retry-After, a 503 at once with the same content; anything else is the answer. Every answer, in order."""
    answers = []
    for _ in range(tries):
        response = client.post("/api/v2/jobs", content=text, headers={"Content-Type": "text/yaml"})
        answers.append(response)
        if response.status_code == 429:
            time.sleep(int(response.headers["Retry-After"]))
        elif response.status_code != 503:
            break
    return answers


def dead_letters(pai: RunningPlatform) -> list[str]:
    """Every dead-lettered message's subject and error, read straight from NATS as the platform's operator
    (the bus has users since it is secured: endpoints.json names the server, bus/operator.url the login)."""
    url = (pai.data_dir / "bus" / "operator.url").read_text().strip()

    async def read() -> list[str]:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(DEAD_LETTERS)
            found = []
            first = info.state.first_seq if info.state.messages else info.state.last_seq + 1
            for seq in range(first, info.state.last_seq + 1):
                msg = await js.get_msg(DEAD_LETTERS, seq)
                found.append(f"{msg.subject}: {(msg.headers or {}).get('pai-error', '?')}")
            return found
        finally:
            await nc.close()

    return asyncio.run(read())
