"""Async jobs over real HTTP: submit, poll, progress, result, cancel, retry,
idempotency, expiry and forgetting, listing, and Prefer on sync predict."""

import json
import sqlite3
import time

import pytest

from tests.conftest import DATA, error_of
from tests.jobs_helpers import submit, wait_for
from tests.transcripts import assert_transcript

SLOW = "sleeper_false"  # no sync timeout, one request at a time


def test_transcription_job_reports_progress_and_returns_the_transcript(client):
    response = client.post(
        "/v1/models/transcriber/jobs",
        content=(DATA / "speech_long.ogg").read_bytes(),
        headers={"Content-Type": "audio/ogg"},
        params={"metadata": '{"episode": 42}'},
    )
    assert response.status_code == 202
    job = response.json()
    assert job["id"].startswith("job_") and len(job["id"]) >= 4 + 22  # >= 128 random bits
    assert job["status"] in ("queued", "running") and job["metadata"] == {"episode": 42}
    assert response.headers["Retry-After"] == "1"

    fractions = []
    while job["status"] in ("queued", "running"):
        job = client.get(f"/v1/jobs/{job['id']}", params={"wait": 5}).json()
        if job["progress"]["fraction"] is not None:
            fractions.append(job["progress"]["fraction"])
    assert job["status"] == "succeeded", job
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(0 < f < 1 for f in fractions), fractions  # seen mid-way, not only at the end
    assert job["progress"]["total"] == pytest.approx(67.0, abs=0.5)
    assert job["attempts"] == 1 and job["run_s"] > 0 and job["queue_wait_s"] >= 0
    assert_transcript(job["result"]["text"], "speech_long.ogg")

    result = client.get(f"/v1/jobs/{job['id']}/result")
    assert result.status_code == 200 and result.json() == job["result"]


def test_prefer_wait_answers_200_when_done_in_time(client):
    response = client.post(f"/v1/models/{SLOW}/predict", json={"seconds": 0.2}, headers={"Prefer": "wait=10"})
    assert response.status_code == 200
    assert response.json()["slept"] == 0.2
    assert response.headers["Preference-Applied"] == "wait=10"


def test_prefer_wait_answers_202_with_a_job_that_goes_on(client):
    response = client.post(f"/v1/models/{SLOW}/predict", json={"seconds": 2}, headers={"Prefer": "wait=0.5"})
    assert response.status_code == 202
    job = response.json()
    assert job["status"] in ("queued", "running")
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert wait_for(client, job["id"], ["succeeded"])["result"]["slept"] == 2


def test_prefer_respond_async_answers_at_once(client):
    response = client.post(f"/v1/models/{SLOW}/predict", json={"seconds": 60}, headers={"Prefer": "respond-async"})
    # Answered while the 60 s of work is still to do: it did not wait for it.
    assert response.status_code == 202 and response.json()["status"] in ("queued", "running")
    assert response.headers["Preference-Applied"] == "respond-async"
    client.delete(f"/v1/jobs/{response.json()['id']}")
    wait_for(client, response.json()["id"], ["cancelled"])


def test_prefer_makes_a_job_with_the_job_options(client, receiver):
    """Prefer turns predict into a job, so the job's query options apply: a
    callback, metadata. Without Prefer they would be ignored, so they are refused."""
    url = receiver.script("/prefer", [])
    response = client.post(
        f"/v1/models/{SLOW}/predict",
        json={"seconds": 0.5},
        headers={"Prefer": "wait=0.1"},
        params={"callback_url": url, "metadata": '{"from": "prefer"}'},
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["metadata"] == {"from": "prefer"} and job["callback"]["url"] == url
    ((_, body),) = receiver.wait("/prefer")
    assert json.loads(body)["data"]["id"] == job["id"]

    before = client.get("/v1/jobs", params={"model": SLOW, "limit": 1}).json()["jobs"]
    response = client.post(f"/v1/models/{SLOW}/predict", json={"seconds": 0}, params={"callback_url": url})
    assert response.status_code == 400
    assert "callback_url configure a job" in error_of(response)["message"]
    assert client.get("/v1/jobs", params={"model": SLOW, "limit": 1}).json()["jobs"] == before


@pytest.mark.parametrize("prefer", ["wait=nan", "wait=inf", "wait=soon"])
def test_prefer_wait_must_be_a_number_of_seconds(client, prefer):
    response = client.post(f"/v1/models/{SLOW}/predict", json={"seconds": 0}, headers={"Prefer": prefer})
    assert response.status_code == 400 and error_of(response)["type"] == "invalid_header"


def test_cancelled_queued_job_never_runs(client):
    submit(client, SLOW, 2)
    queued = submit(client, SLOW, 0.1)  # one job slot: waits behind the first
    assert client.get(f"/v1/jobs/{queued['id']}").json()["status"] == "queued"

    response = client.delete(f"/v1/jobs/{queued['id']}")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    # Jobs of a model start in submission order: once a job submitted after it has
    # run, the cancelled one had its turn and did not take it.
    later = submit(client, SLOW, 0)
    wait_for(client, later["id"], ["succeeded"])
    job = client.get(f"/v1/jobs/{queued['id']}").json()
    assert job["status"] == "cancelled" and job["attempts"] == 0 and job["started_at"] is None

    again = client.delete(f"/v1/jobs/{queued['id']}")
    assert again.status_code == 409 and error_of(again)["type"] == "job_finished"
    result = client.get(f"/v1/jobs/{queued['id']}/result")
    assert result.status_code == 409 and error_of(result)["type"] == "job_cancelled"


def test_cancelled_running_job_stops_and_frees_the_replica(client):
    job = submit(client, SLOW, 60)
    wait_for(client, job["id"], ["running"])
    time.sleep(0.5)  # most often the replica has begun the work by now; the claim below holds either way
    assert client.delete(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
    # The replica takes one request at a time: this fits in 5 s only if the
    # 60 s job's work was stopped on the replica (else it is 504 still queued).
    after = client.post(f"/v1/models/{SLOW}/predict", json={"seconds": 0}, headers={"Request-Timeout": "5"})
    assert after.status_code == 200, after.text


def test_job_timeout_fails_the_job(client):
    job = submit(client, "sleeper", 10)  # job_timeout: 2 in the test config
    job = wait_for(client, job["id"], ["failed"], timeout_s=30)
    assert job["error"]["type"] == "job_timeout" and "job_timeout=2" in job["error"]["message"]


def test_failed_job_can_be_retried_under_the_same_id(client):
    response = client.post(f"/v1/models/{SLOW}/jobs", json={"seconds": 0, "fail": True})
    job = wait_for(client, response.json()["id"], ["failed"])
    assert job["error"]["type"] == "model_error" and "asked to fail" in job["error"]["message"]
    assert job["attempts"] == 1
    result = client.get(f"/v1/jobs/{job['id']}/result")
    assert result.status_code == 409 and error_of(result)["type"] == "job_failed"

    retried = client.post(f"/v1/jobs/{job['id']}/retry")
    assert retried.status_code == 202 and retried.json()["id"] == job["id"]
    job = wait_for(client, job["id"], ["failed"])
    assert job["attempts"] == 2


def test_only_failed_or_cancelled_jobs_retry(client):
    job = wait_for(client, submit(client, SLOW, 0)["id"], ["succeeded"])
    response = client.post(f"/v1/jobs/{job['id']}/retry")
    assert response.status_code == 409 and error_of(response)["type"] == "not_retryable"


def test_idempotency_key_returns_the_same_job_and_refuses_another_body(client):
    key = {"Idempotency-Key": f"key-{time.time()}"}
    first = client.post(f"/v1/models/{SLOW}/jobs", json={"seconds": 0}, headers=key)
    again = client.post(f"/v1/models/{SLOW}/jobs", json={"seconds": 0}, headers=key)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = client.post(f"/v1/models/{SLOW}/jobs", json={"seconds": 1}, headers=key)
    assert other.status_code == 422 and error_of(other)["type"] == "idempotency_conflict"
    assert first.json()["id"] not in other.text  # a conflict never reveals the job


def test_finished_job_expires_after_its_ttl(client):
    job = wait_for(client, submit(client, SLOW, 0, ttl_s=1)["id"], ["succeeded"])
    assert job["expires_at"] is not None
    wait_for(client, job["id"], ["expired"], timeout_s=30)
    response = client.get(f"/v1/jobs/{job['id']}/result")
    assert response.status_code == 410 and error_of(response)["type"] == "expired"


def test_expired_job_is_forgotten_after_forget_after_s(client, serve_app):
    key = {"Idempotency-Key": f"forget-{time.time()}"}
    response = client.post(f"/v1/models/{SLOW}/jobs", json={"seconds": 0}, params={"ttl_s": 1}, headers=key)
    job_id = wait_for(client, response.json()["id"], ["succeeded"])["id"]
    db = sqlite3.connect(serve_app.config.jobs.sqlite_path)  # the store's own file

    def stored() -> tuple[int, int]:
        return tuple(
            db.execute(f"SELECT count(*) FROM {table} WHERE id = ?", (job_id,)).fetchone()[0]
            for table in ("jobs", "bodies")
        )

    def listed() -> bool:
        page = client.get("/v1/jobs", params={"model": SLOW, "limit": 500}).json()["jobs"]
        return job_id in [job["id"] for job in page]

    try:
        # Expired after ttl_s: a tombstone, still listed and stored without its input.
        deadline = time.monotonic() + 10
        while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] != "expired":
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        response = client.get(f"/v1/jobs/{job_id}/result")
        assert response.status_code == 410 and error_of(response)["type"] == "expired"
        assert listed() and stored() == (1, 0)

        # forget_after_s (5 s in the test config) later: gone everywhere.
        deadline = time.monotonic() + 15
        while (response := client.get(f"/v1/jobs/{job_id}")).status_code != 404:
            assert response.status_code == 200 and time.monotonic() < deadline, response.text
            time.sleep(0.2)
        assert error_of(response)["type"] == "not_found"
        assert client.get(f"/v1/jobs/{job_id}/result").status_code == 404
        assert not listed() and stored() == (0, 0)
    finally:
        db.close()

    # Its idempotency key was released: the same key makes a new job.
    again = client.post(f"/v1/models/{SLOW}/jobs", json={"seconds": 0}, headers=key)
    assert again.status_code == 202 and again.json()["id"] != job_id
    assert "Idempotent-Replayed" not in again.headers
    wait_for(client, again.json()["id"], ["succeeded"])


def test_pending_result_is_202(client):
    job = submit(client, SLOW, 1)
    response = client.get(f"/v1/jobs/{job['id']}/result")
    assert response.status_code == 202 and response.headers["Retry-After"] == "1"
    wait_for(client, job["id"], ["succeeded"])


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v1/jobs/job_nope"),
        ("GET", "/v1/jobs/job_nope/result"),
        ("DELETE", "/v1/jobs/job_nope"),
        ("POST", "/v1/jobs/job_nope/retry"),
    ],
)
def test_unknown_job_is_404(client, method, path):
    response = client.request(method, path)
    assert response.status_code == 404 and error_of(response)["type"] == "not_found"


def test_bad_input_is_refused_at_submit_and_nothing_is_stored(client):
    before = client.get("/v1/jobs", params={"model": SLOW, "limit": 500}).json()["jobs"]
    for response in (
        client.post(f"/v1/models/{SLOW}/jobs", json={"seconds": "soon"}),
        client.post(f"/v1/models/{SLOW}/jobs", json={"seconds": 1}, params={"metadata": "[1, 2]"}),
        client.post(f"/v1/models/{SLOW}/jobs", json={"seconds": 1}, params={"ttl_s": "-1"}),
        client.post(f"/v1/models/{SLOW}/jobs", json={"seconds": 1}, params={"metadata": "[" * 3000}),  # too deep
        client.post(f"/v1/models/{SLOW}/jobs", json={"seconds": 1}, params={"metadata": "[" * 20000}),  # too long
        client.post("/v1/models/nope/jobs", json={"seconds": 1}),
    ):
        assert response.status_code in (404, 422), response.text
        error_of(response)
    after = client.get("/v1/jobs", params={"model": SLOW, "limit": 500}).json()["jobs"]
    assert [j["id"] for j in after] == [j["id"] for j in before]


def test_listing_pages_newest_first(client):
    ids = [submit(client, "sleeper_minus_one", 0)["id"] for _ in range(5)]
    seen, cursor = [], None
    while True:
        params = {"model": "sleeper_minus_one", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/jobs", params=params).json()
        assert len(page["jobs"]) <= 2
        assert all("result" not in job for job in page["jobs"])
        seen += [job["id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    assert seen[:5] == ids[::-1]
    bad = client.get("/v1/jobs", params={"status": "sleeping"})
    assert bad.status_code == 422
    # A cursor past 64 bits is no cursor the server gave (the fuzzer found it a 500 in sqlite): a 422, and the
    # largest one lists from the newest.
    assert client.get("/v1/jobs", params={"cursor": 2**64}).status_code == 422
    newest = client.get("/v1/jobs", params={"model": "sleeper_minus_one", "cursor": 2**63 - 1, "limit": 1}).json()
    assert [job["id"] for job in newest["jobs"]] == ids[-1:]


def test_model_info_shows_the_job_backlog(client):
    jobs = [submit(client, SLOW, 30) for _ in range(3)]
    wait_for(client, jobs[0]["id"], ["running"])
    info = client.get(f"/v1/models/{SLOW}").json()
    assert info["jobs"] == {"queued": 2, "running": 1}
    assert info["max_concurrent_jobs"] == 1
    for job in jobs:
        client.delete(f"/v1/jobs/{job['id']}")
    assert client.get(f"/v1/models/{SLOW}").json()["jobs"] == {"queued": 0, "running": 0}
