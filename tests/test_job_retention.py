"""Expired jobs are forgotten: the JobStore class run in-process (no Ray) on
the memory and sqlite backends, the reaper driven by hand on a clock the test
moves (so a slow machine cannot make a job expire and be forgotten in one step).
The same over HTTP is in tests/test_jobs.py, across an actor restart in
tests/test_job_faults.py."""

import asyncio
import sqlite3
import time

import pytest

from longserve.server.config import JobsConfig
from longserve.server.jobs.store import JobStore
from tests.test_job_faults import redis_url  # noqa: F401  (a fixture)
from longserve.server.jobs.record import JobRequest

REQUEST = JobRequest(media_type="application/json")
TTL_S = 0.01


async def run_jobs(store: JobStore, n: int, ttl_s: float = TTL_S, prefix: str = "j") -> list[str]:
    """n jobs of model "m", each submitted (with an idempotency key), run and succeeded."""
    ids = []
    for i in range(n):
        job_id = f"{prefix}{i}"
        outcome, _ = await store.submit(job_id, "m", REQUEST, b"{}", {}, ttl_s, idempotency_key=f"key-{job_id}")
        assert outcome == "created"
        job, _ = await store.claim("runner", {"m": 1}, 0.1)
        assert await store.finish(job.id, "runner", 1, "succeeded", {"n": i})
        ids.append(job_id)
    return ids


class Clock:
    """time.time for the store: stands still until a test moves it."""

    now = 0.0

    def __call__(self) -> float:
        return self.now


CLOCK = Clock()


@pytest.fixture(autouse=True)
def still_clock(monkeypatch):
    CLOCK.now = time.time()
    monkeypatch.setattr(time, "time", CLOCK)


async def reap_after(store: JobStore, seconds: float) -> None:
    CLOCK.now += seconds
    await store._reap()


def stop(store: JobStore) -> None:
    """As the store's process ending would: no more reaping, the file closed."""
    store.reaper.cancel()
    store.backend.db.close()


async def listed(store: JobStore, limit: int) -> list[str]:
    """Every id `list` pages through, newest first."""
    ids, cursor = [], None
    while True:
        page, cursor = await store.list(model="m", limit=limit, cursor=cursor)
        ids += [job.id for job in page]
        if cursor is None:
            return ids


def test_expired_job_becomes_a_tombstone_then_is_forgotten():
    async def main():
        store = JobStore(JobsConfig(backend="memory", forget_after_s=0.2))
        (job_id,) = await run_jobs(store, 1)
        await reap_after(store, 0.05)
        job = await store.get(job_id)
        assert job.status == "expired" and job.result is None
        assert job_id in store.backend.records and job_id not in store.backend.bodies
        assert not +store.state.counts["m"]  # finished jobs count nowhere in memory

        await reap_after(store, 0.25)
        assert await store.get(job_id) is None
        assert job_id not in store.backend.records and job_id not in store.state.records
        assert await listed(store, 10) == []
        assert await store.cancel(job_id) == ("missing", None)
        # Its idempotency key is free: the same key makes a new job.
        outcome, job = await store.submit("again", "m", REQUEST, b"{}", {}, 60, idempotency_key=f"key-{job_id}")
        assert outcome == "created" and job.id == "again"

    asyncio.run(main())


def test_listing_skips_forgotten_jobs():
    async def main():
        store = JobStore(JobsConfig(backend="memory", forget_after_s=0.05))
        old = await run_jobs(store, 6, prefix="old")  # these are forgotten
        kept = await run_jobs(store, 4, ttl_s=3600, prefix="kept")
        await reap_after(store, 0.05)  # old ones expire
        assert await listed(store, 3) == kept[::-1] + old[::-1]
        await reap_after(store, 0.1)  # ...and are forgotten
        assert await listed(store, 3) == kept[::-1]
        assert await listed(store, 1) == kept[::-1]
        # New jobs still get increasing seqs and list first.
        newest = await run_jobs(store, 2, ttl_s=3600, prefix="new")
        assert await listed(store, 2) == newest[::-1] + kept[::-1]

    asyncio.run(main())


def test_a_retried_job_is_not_forgotten_by_its_earlier_ending():
    async def main():
        store = JobStore(JobsConfig(backend="memory", forget_after_s=0.05))
        await store.submit("j", "m", REQUEST, b"{}", {}, 0.1)
        job, _ = await store.claim("runner", {"m": 1}, 0.1)
        await store.finish("j", "runner", 1, "failed", error={"type": "model_error", "message": "no"})
        assert (await store.retry("j"))[0] == "queued"
        await reap_after(store, 0.2)  # the first ending's expiry time has passed
        assert (await store.get("j")).status == "queued"

    asyncio.run(main())


def test_a_restarted_store_deletes_jobs_whose_forget_time_passed(tmp_path):
    async def main():
        path = tmp_path / "jobs.sqlite3"
        config = JobsConfig(backend="sqlite", sqlite_path=str(path), forget_after_s=0.3)
        store = JobStore(config)
        gone = await run_jobs(store, 2, prefix="gone")  # due while no store runs
        await reap_after(store, 0.05)  # expired: tombstones
        kept = await run_jobs(store, 1, ttl_s=3600, prefix="kept")
        stop(store)

        CLOCK.now += 0.4
        store = JobStore(config)  # loads the file afresh
        assert [await store.get(i) for i in gone] == [None, None]
        assert await listed(store, 10) == kept
        assert store.backend.find_key("anonymous", "m", "key-gone0") is None
        stop(store)
        with sqlite3.connect(path) as db:
            assert [i for (i,) in db.execute("SELECT id FROM jobs")] == kept
            assert [i for (i,) in db.execute("SELECT id FROM bodies")] == kept

    asyncio.run(main())


def test_erase_on_redis_leaves_no_content_in_redis(redis_url):
    """DELETE ?erase=true on the Redis backend: the record keeps no input, result or
    metadata, the body's key is gone, and a new store process reloads the tombstone."""
    import redis

    from longserve.server.jobs.backends import RedisBackend

    marker = "secret-" + "7" * 12

    async def scenario() -> None:
        store = JobStore(JobsConfig(backend="redis", redis_url=redis_url))
        body = f'{{"text": "{marker}"}}'.encode()
        await store.submit("e1", "m", REQUEST, body, {"note": marker}, 3600, idempotency_key=marker)
        job, _ = await store.claim("runner", {"m": 1}, 0.1)
        assert await store.finish(job.id, "runner", 1, "succeeded", {"echo": marker})
        raw = redis.Redis.from_url(redis_url)
        assert marker.encode() in raw.get("longserve:job:e1") and raw.exists("longserve:body:e1")
        outcome, erased = await store.erase("e1")
        assert outcome == "erased" and erased.erased and erased.status == "expired"
        assert marker.encode() not in raw.get("longserve:job:e1")  # the tombstone only
        assert not raw.exists("longserve:body:e1")
        store.reaper.cancel()
        reloaded = {job.id: job for job in RedisBackend(redis_url).load()}
        assert reloaded["e1"].erased and marker not in reloaded["e1"].model_dump_json()

    asyncio.run(scenario())
