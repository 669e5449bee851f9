"""Nothing acknowledged is lost: a killed runner, a killed JobStore actor, a
store started afresh on the same sqlite file, and the redis backend. And
what is forgotten stays forgotten: backends delete a job whole, and a store
started again does not bring a forgotten job back."""

import os
import shutil
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import ray

from longserve.server.config import JobsConfig
from longserve.server.jobs.store import get_job_store, store_name
from longserve.server.jobs.backends import make_backend
from longserve.server.jobs.record import Job, JobRequest, new_job_id
from tests.jobs_helpers import submit, wait_for

SLOW = "sleeper_false"


def kill_actor_named(part: str, restart: bool) -> None:
    (actor,) = [a for a in ray.util.list_named_actors(all_namespaces=True) if part in a["name"]]
    ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=not restart)


def test_killed_runner_job_is_queued_again_and_finishes(client):
    job = submit(client, SLOW, 3)
    wait_for(client, job["id"], ["running"])
    kill_actor_named("longserve#JobRunner", restart=False)  # Serve starts a new replica
    # lease_s is short in the test config (LEASE_S): the job is queued again, then runs anew.
    job = wait_for(client, job["id"], ["succeeded"], timeout_s=90)
    assert job["attempts"] == 2
    assert job["result"]["slept"] == 3


def test_killed_job_store_loses_no_acknowledged_job(client, serve_app):
    jobs = [submit(client, SLOW, 0.3) for _ in range(4)]
    wait_for(client, jobs[0]["id"], ["running", "succeeded"])
    kill_actor_named(store_name(serve_app.config.jobs), restart=True)  # Ray restarts it; it reloads sqlite
    jobs.append(submit(client, SLOW, 0.3))  # accepted while the store restarts
    for job in jobs:
        done = wait_for(client, job["id"], ["succeeded"], timeout_s=90)
        assert done["result"]["slept"] == 0.3


def run_store_lifecycle(config: JobsConfig) -> None:
    """Jobs in every state survive the store's process: killed, then started
    again on the same backend, a new actor finds each one as it was."""
    store = get_job_store(config)
    ids = [new_job_id() for _ in range(3)]
    request = JobRequest(media_type="application/json")
    for job_id in ids:
        outcome, _ = ray.get(store.submit.remote(job_id, "m", request, b'{"seconds": 1}', {"n": 1}, 60.0))
        assert outcome == "created"
    claimed, body = ray.get(store.claim.remote("runner-a", {"m": 2}, 1.0))
    assert claimed.id == ids[0] and body == b'{"seconds": 1}'
    assert ray.get(store.finish.remote(ids[0], "runner-a", 1, "succeeded", {"ok": True}))
    running, _ = ray.get(store.claim.remote("runner-a", {"m": 2}, 1.0))

    ray.kill(store, no_restart=True)
    store = get_job_store(config)
    jobs = {job_id: ray.get(store.get.remote(job_id)) for job_id in ids}
    assert jobs[ids[0]].status == "succeeded" and jobs[ids[0]].result == {"ok": True}
    assert jobs[running.id].status == "running" and jobs[running.id].lease_owner == "runner-a"
    assert jobs[ids[2]].status == "queued" and jobs[ids[2]].metadata == {"n": 1}
    # runner-a is gone: once its lease ends the job is queued again, attempt 2 next.
    deadline = time.monotonic() + 10
    while ray.get(store.get.remote(running.id)).status != "queued":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    reclaimed, _ = ray.get(store.claim.remote("runner-b", {"m": 2}, 1.0))
    assert reclaimed.id == running.id and reclaimed.attempts == 2
    ray.kill(store, no_restart=True)


def test_sqlite_store_reloads_every_job_in_a_new_process(serve_app, tmp_path):
    run_store_lifecycle(JobsConfig(backend="sqlite", sqlite_path=str(tmp_path / "jobs.sqlite3"), lease_s=1))


class RedisServer:
    """A redis-server of our own on a free loopback port, restartable on its
    append-only file (a SIGTERM makes it write the file before it exits)."""

    def __init__(self, data_dir: Path):
        if shutil.which("redis-server") is None:
            if os.environ.get("CI"):
                pytest.fail("redis-server is missing; .ci/run installs it")
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.data_dir, self.url = data_dir, f"redis://127.0.0.1:{self.port}/0"
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data_dir),
                "--appendonly",
                "yes",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            assert self.process.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def redis_url(tmp_path):
    server = RedisServer(tmp_path)
    try:
        yield server.url
    finally:
        server.stop()


def test_redis_store_reloads_every_job_in_a_new_process(serve_app, redis_url):
    run_store_lifecycle(JobsConfig(backend="redis", redis_url=redis_url, lease_s=1))


def test_killed_redis_job_store_loses_no_acknowledged_job(serve_app, redis_url):
    # A second app in the session's Serve, its jobs on redis.
    from ray import serve

    from longserve.server.app import build_app
    from longserve.server.config import AppConfig

    config = AppConfig.model_validate(
        {
            "jobs": {"backend": "redis", "redis_url": redis_url, "lease_s": 2},
            "models": {
                "sleeper": {
                    "class": "tests.slow_models:Sleeper",
                    "timeout": False,
                    "max_ongoing_requests": 1,
                    "ray_actor_options": {"num_cpus": 0},
                }
            },
        }
    )
    serve.run(build_app(config), name="redis", route_prefix="/redis")
    try:
        with httpx.Client(base_url=serve_app.url + "/redis", timeout=60) as client:
            jobs = [submit(client, "sleeper", 0.3) for _ in range(4)]
            wait_for(client, jobs[0]["id"], ["running", "succeeded"])
            kill_actor_named(store_name(config.jobs), restart=True)
            jobs.append(submit(client, "sleeper", 0.3))
            for job in jobs:
                assert wait_for(client, job["id"], ["succeeded"], timeout_s=90)["result"]["slept"] == 0.3
    finally:
        serve.delete("redis")
        kill_actor_named(store_name(config.jobs), restart=False)


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_backend_delete_removes_record_and_body(kind, tmp_path, request):
    redis_url = request.getfixturevalue("redis_url") if kind == "redis" else ""
    backend = make_backend(kind, str(tmp_path / "jobs.sqlite3"), redis_url)
    jobs = [
        Job(id=new_job_id(), seq=seq, model="m", request=JobRequest(media_type="application/json"), ttl_s=60)
        for seq in (1, 2)
    ]
    for job in jobs:
        backend.save(job, b"body of " + job.id.encode())
    backend.delete(jobs[0].id)
    backend.delete(new_job_id())  # an unknown id is no error
    assert [job.id for job in backend.load()] == [jobs[1].id]
    assert backend.body(jobs[1].id) == b"body of " + jobs[1].id.encode()
    with pytest.raises((KeyError, TypeError)):  # memory, redis: KeyError; sqlite: no row to unpack
        backend.body(jobs[0].id)
    if kind == "redis":  # nothing left under the job's keys, nor in the index set
        assert backend.redis.smembers(backend.index) == {jobs[1].id.encode()}
        assert not backend.redis.exists(backend.jobs + jobs[0].id, backend.bodies + jobs[0].id)
    if kind == "sqlite":
        backend.db.close()


def run_store_forgets(config: JobsConfig) -> None:
    """A forgotten job stays forgotten when the store starts again on the same
    backend, and one whose forget time passed while no store ran is deleted on load."""
    store = get_job_store(config)
    request = JobRequest(media_type="application/json")
    soon, later = new_job_id(), new_job_id()
    for job_id, ttl_s in ((soon, 0.5), (later, 5.0)):
        ray.get(store.submit.remote(job_id, "m", request, b"{}", {}, ttl_s, f"key-{job_id}"))
        claimed, _ = ray.get(store.claim.remote("runner-a", {"m": 1}, 1.0))
        assert claimed.id == job_id
        assert ray.get(store.finish.remote(job_id, "runner-a", 1, "succeeded", {"ok": True}))
    finished = time.time()
    deadline = time.monotonic() + 10  # forget_after_s is 1: expired at 0.5 s, forgotten at 1.5 s
    while ray.get(store.get.remote(soon)) is not None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # Forgotten: not in memory, and nothing counted (only queued and running jobs are).
    held = ray.get(store.__ray_call__.remote(lambda self: (soon in self.state.records, +self.state.counts["m"])))
    assert held == (False, Counter()), held
    assert ray.get(store.get.remote(later)).status == "succeeded"
    ray.kill(store, no_restart=True)

    time.sleep(max(0.0, finished + 5.0 + 1.0 + 0.5 - time.time()))  # `later` is due to be forgotten by now
    store = get_job_store(config)
    assert ray.get(store.get.remote(soon)) is None and ray.get(store.get.remote(later)) is None
    assert ray.get(store.list.remote(model="m")) == ([], None)
    backend = make_backend(config.backend, config.sqlite_path, config.redis_url)
    assert list(backend.load()) == []
    # The keys were released: the same key makes a new job.
    outcome, job = ray.get(store.submit.remote(new_job_id(), "m", request, b"{}", {}, 60.0, f"key-{soon}"))
    assert outcome == "created" and job.id != soon
    ray.kill(store, no_restart=True)


def test_sqlite_store_does_not_bring_forgotten_jobs_back(serve_app, tmp_path):
    run_store_forgets(JobsConfig(backend="sqlite", sqlite_path=str(tmp_path / "jobs.sqlite3"), forget_after_s=1))


def test_redis_store_does_not_bring_forgotten_jobs_back(serve_app, redis_url):
    run_store_forgets(JobsConfig(backend="redis", redis_url=redis_url, forget_after_s=1))


# The full Ray stop and start: tests/test_reliability.py::test_full_ray_stop_and_start_with_sqlite
