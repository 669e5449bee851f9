"""A redeploy reaches the detached actors: a small app of its own on the
session cluster is deployed, then deployed again with other settings, and
the JobStore and Stats actors (which outlive any deploy) use the new ones
at once; an older deploy's settings sent late do not win. Then the app is
deleted, the actors are still there, and `python -m longserve.server.actors
remove` removes them."""

import asyncio
import time

import httpx
import pytest
import ray
from ray import serve

from longserve.server import actors
from longserve.server.app import build_app
from longserve.server.config import AppConfig, JobsConfig
from longserve.server.jobs.record import JobRequest, new_job_id
from longserve.server.jobs.store import NAMESPACE, JobStore, store_name
from tests.conftest import NO_CPU, SLEEPER
from tests.jobs_helpers import submit, wait_for

APP, PREFIX = "redeploy", "/redeploy"


def config(jobs_db: str, lease_s: float, window_s: float) -> AppConfig:
    return AppConfig.model_validate(
        {
            "timeout": 5,
            "jobs": {"backend": "sqlite", "sqlite_path": jobs_db, "lease_s": lease_s},
            "monitoring": {"window_s": window_s},
            "models": {"sleeper": {"class": SLEEPER, "max_ongoing_requests": 2, "ray_actor_options": NO_CPU}},
        }
    )


def test_a_redeploy_reaches_the_detached_actors(serve_app, tmp_path):
    jobs_db = str(tmp_path / "jobs.sqlite3")
    first, second = config(jobs_db, lease_s=60, window_s=300), config(jobs_db, lease_s=2, window_s=120)
    names = sorted([store_name(second.jobs), f"longserve-stats-{APP}"])
    serve.run(build_app(first), name=APP, route_prefix=PREFIX)
    try:
        serve.run(build_app(second), name=APP, route_prefix=PREFIX)
        with httpx.Client(base_url=serve_app.url + PREFIX, timeout=60) as client:
            # Stats: the latency window the model view reports is the new one.
            latency = client.get("/v1/models/sleeper").json()["latency"]
            assert latency["sync"]["window_s"] == 120 and latency["job"]["window_s"] == 120

            # JobStore: a job claimed by the app's runner holds a lease of the new 2 s, renewed as such.
            job = submit(client, "sleeper", 3)
            wait_for(client, job["id"], ["running"])
            store = ray.get_actor(store_name(second.jobs), namespace=NAMESPACE)
            record = ray.get(store.get.remote(job["id"]))
            assert record.status == "running" and record.lease_expires_at - time.time() <= 2

            # A replica of the first deploy (an older stamp) cannot push its settings back.
            assert ray.get(store.configure.remote(first.jobs, first.jobs.deployed_ns)) is False
            request = JobRequest(media_type="application/json")
            ray.get(store.submit.remote(new_job_id(), "unserved", request, b"{}", {}, 60.0))
            claimed, _ = ray.get(store.claim.remote("test-runner", {"unserved": 1}, 5.0))
            assert claimed.lease_expires_at - claimed.started_at == pytest.approx(2)
            assert wait_for(client, job["id"], ["succeeded"])["attempts"] == 1
    finally:
        serve.delete(APP)
    # Detached: they outlive the app, until removed.
    assert set(names) <= set(actors.detached())
    actors.main(["remove", *names])
    assert not set(names) & set(actors.detached())


def test_a_restarted_store_follows_the_newest_deploy_not_its_first(tmp_path):
    """Ray restarts a crashed actor with the arguments it was first created
    with; the store then takes the newer settings its backend keeps."""
    path = str(tmp_path / "jobs.sqlite3")
    created_with = JobsConfig(backend="sqlite", sqlite_path=path, lease_s=60)
    deployed = JobsConfig(backend="sqlite", sqlite_path=path, lease_s=2, max_attempts=5)

    async def main():
        store = JobStore(created_with)
        assert await store.configure(deployed, deployed.deployed_ns)
        store.reaper.cancel()
        store.backend.db.close()
        restarted = JobStore(created_with)
        assert (restarted.state.settings.lease_s, restarted.state.settings.max_attempts) == (2, 5)
        await restarted.submit("j", "m", JobRequest(media_type="application/json"), b"{}", {}, 60.0)
        job, _ = await restarted.claim("runner", {"m": 1}, 0.1)
        assert job.lease_expires_at - job.started_at == pytest.approx(2) and job.max_attempts == 5
        restarted.reaper.cancel()
        restarted.backend.db.close()

    asyncio.run(main())
