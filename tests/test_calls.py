"""Sync predict and jobs call a model through one path (server/calls.py):
whatever ends a call before its result also stops the replica's work. The
sync side (a 504 cancels the model) is in test_timeouts; this is the job side."""

import time

from tests.jobs_helpers import submit, wait_for

MODEL = "sleeper"  # job_timeout: 2 in the test config


def cancelled_so_far(client) -> int:
    """How many runs the model's replica has stopped on cancellation."""
    response = client.post(f"/v1/models/{MODEL}/predict", json={"seconds": 0}, headers={"Request-Timeout": "5"})
    assert response.status_code == 200, response.text
    return response.json()["cancelled"]


def test_a_job_past_its_job_timeout_stops_on_the_replica(client):
    before = cancelled_so_far(client)
    job = submit(client, MODEL, 60)
    job = wait_for(client, job["id"], ["failed"], timeout_s=30)
    assert job["error"]["type"] == "job_timeout"
    # The cancel reaches the replica on its own path; the model sees it at its
    # next 20 ms step. Without it the 60 s run would go on, never counted.
    deadline = time.monotonic() + 20
    while cancelled_so_far(client) == before:
        assert time.monotonic() < deadline, "the timed-out job's run was not stopped on the replica"
