"""Polls of a finished job answered from the gateway's copy (server/http/job_cache.py):
at most jobs.gateway_cache_s old, and what the same gateway does shows at once."""

import time

from longserve.server.http.job_cache import FinishedJobs
from longserve.server.jobs.record import Callback, Job, JobRequest, new_job_id
from tests.conftest import error_of
from tests.jobs_helpers import submit, wait_for

SLOW = "sleeper_false"


def job(status: str = "succeeded", **fields) -> Job:
    now = time.time()
    fields.setdefault("expires_at", now + 60)
    return Job(
        id=new_job_id(),
        seq=1,
        model="m",
        status=status,
        ttl_s=60,
        request=JobRequest(media_type="application/json"),
        created_at=now,
        finished_at=now if status != "running" else None,
        **fields,
    )


def test_only_settled_finished_jobs_are_kept():
    cache = FinishedJobs(10)
    kept, running = job(), job("running")
    pending_callback = job(callback=Callback(url="http://x"))
    for j in (kept, running, pending_callback, job(erased=True), job("expired")):
        cache.put(j, cache.clock())
    assert list(cache.entries) == [kept.id]
    assert cache.get(kept.id).body.startswith(b'{"id":"' + kept.id.encode())


def test_a_copy_lasts_max_age_and_never_past_expiry():
    cache = FinishedJobs(0.05)
    quick, expiring = job(), job(expires_at=time.time() + 0.01)
    cache.put(quick, cache.clock())
    cache.put(expiring, cache.clock())
    time.sleep(0.02)
    assert cache.get(expiring.id) is None and cache.get(quick.id) is not None
    time.sleep(0.04)
    assert cache.get(quick.id) is None
    off = FinishedJobs(0)
    off.put(quick, off.clock())
    assert off.get(quick.id) is None


def test_a_read_sent_before_this_replicas_change_is_not_kept():
    cache = FinishedJobs(10)
    old = job("failed")
    asked = cache.clock()  # a poll in flight ...
    cache.drop(old.id)  # ... while this replica retries the job
    cache.put(old, asked)
    assert cache.get(old.id) is None
    cache.put(old, cache.clock())  # a read sent after the change is the new state
    assert cache.get(old.id) is not None


def test_the_cache_is_bounded():
    cache = FinishedJobs(10, max_entries=3)
    jobs = [job() for _ in range(5)]
    for j in jobs:
        cache.put(j, cache.clock())
    assert list(cache.entries) == [j.id for j in jobs[2:]]


def test_another_replicas_change_shows_within_max_age(client, serve_app):
    import ray

    from longserve.server.jobs.store import get_job_store

    max_age = serve_app.config.jobs.gateway_cache_s
    assert max_age > 0
    job_id = wait_for(client, submit(client, SLOW, 0)["id"], ["succeeded"])["id"]
    first = client.get(f"/v1/jobs/{job_id}")
    copied_at = time.monotonic()
    # Erased behind this gateway's back, as through another gateway replica.
    ray.get(get_job_store(serve_app.config.jobs).erase.remote(job_id))
    again = client.get(f"/v1/jobs/{job_id}")
    if time.monotonic() - copied_at < max_age * 0.8:  # (a very slow machine may take longer)
        assert again.status_code == 200 and again.json() == first.json()  # the gateway's copy
    time.sleep(max(0.0, copied_at + max_age - time.monotonic()) + 0.1)
    response = client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 410 and error_of(response)["type"] == "erased"


def test_this_gateways_retry_and_erase_show_at_once(client):
    failed = client.post(f"/v1/models/{SLOW}/jobs", json={"seconds": 0, "fail": True}).json()
    failed = wait_for(client, failed["id"], ["failed"])
    assert client.get(f"/v1/jobs/{failed['id']}").json() == failed  # now a copy in the gateway
    assert client.post(f"/v1/jobs/{failed['id']}/retry").status_code == 202
    now = client.get(f"/v1/jobs/{failed['id']}").json()
    assert now["attempts"] == 2, now

    done = wait_for(client, submit(client, SLOW, 0)["id"], ["succeeded"])
    for _ in range(2):
        assert client.get(f"/v1/jobs/{done['id']}").status_code == 200
        assert client.get(f"/v1/jobs/{done['id']}/result").status_code == 200
    assert client.delete(f"/v1/jobs/{done['id']}", params={"erase": "true"}).status_code == 200
    for path in (f"/v1/jobs/{done['id']}", f"/v1/jobs/{done['id']}/result"):
        response = client.get(path)
        assert response.status_code == 410 and error_of(response)["type"] == "erased", path
