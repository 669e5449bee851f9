"""Helpers for driving jobs over HTTP in tests."""

import time

import httpx


def submit(client: httpx.Client, model: str, seconds: float, **params) -> dict:
    response = client.post(f"/v1/models/{model}/jobs", json={"seconds": seconds}, params=params)
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/v1/jobs/{response.json()['id']}"
    return response.json()


def wait_for(client: httpx.Client, job_id: str, statuses, timeout_s: float = 60) -> dict:
    """Long-poll until the job's status is one of `statuses`."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/v1/jobs/{job_id}", params={"wait": 2}).json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job still {job['status']} after {timeout_s} s: {job}"
