"""The JobStore keeps only live jobs in memory (and a cache of finished ones):
with a cache of 5 and 50 finished jobs, on real sqlite and redis, every job
is still readable, listable (paged, filtered), replayed by its idempotency
key, retried, erased, and expires and is forgotten on time with its input and
blobs, though memory never holds more than the cache. The JobStore class runs
in-process (no Ray), its time moved by the test (tests/test_job_retention.py)."""

import asyncio
import contextlib

import pytest

from longserve.server.config import BlobsConfig, JobsConfig
from longserve.server.jobs.blob_keys import result_key
from longserve.server.jobs.store import JobStore
from tests.test_job_faults import redis_url  # noqa: F401  (a fixture)
from tests.test_job_retention import CLOCK, REQUEST, reap_after, still_clock  # noqa: F401  (a fixture)

CACHE, N, TTL_S, FORGET_S = 5, 50, 1000.0, 100.0


def failing(i: int) -> bool:
    return i % 5 == 0


async def pages(store: JobStore, limit: int, **filters) -> list[str]:
    """Every id a listing pages through, newest first."""
    ids, cursor = [], None
    while True:
        page, cursor = await store.list(limit=limit, cursor=cursor, **filters)
        assert len(page) <= limit
        ids += [job.id for job in page]
        if cursor is None:
            return ids


async def blobs_deleted(store: JobStore) -> None:
    """Once the store's background deletes are done (keys queued while one ran go in the next)."""
    while store.blobs.pending:
        store.blobs.retry_failed()
        await store.blobs.task


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_finished_jobs_beyond_the_cache_work_as_if_in_memory(kind, tmp_path, request):
    url = request.getfixturevalue("redis_url") if kind == "redis" else "redis://unused"
    config = JobsConfig(
        backend=kind,
        sqlite_path=str(tmp_path / "jobs.sqlite3"),
        redis_url=url,
        cache_finished=CACHE,
        forget_after_s=FORGET_S,
    )
    blob_dir = tmp_path / "blobs"

    async def main():
        store = JobStore(config, BlobsConfig(backend="file", path=str(blob_dir)))
        start, ids = CLOCK.now, [f"j{i:02d}" for i in range(N)]
        for i, job_id in enumerate(ids):  # one a second: job i is created and finished at start + i
            CLOCK.now = start + i
            tenant = "odd" if i % 2 else "even"
            outcome, _ = await store.submit(
                job_id, "m", REQUEST, b'{"i": %d}' % i, {}, TTL_S, idempotency_key=f"k{i}", tenant=tenant
            )
            assert outcome == "created"
            job, body = await store.claim("runner", {"m": 1}, 0.1)
            assert job.id == job_id and body == b'{"i": %d}' % i
            await store.blobs.blobs.put(result_key(job_id), b"a large result")
            if failing(i):
                error = {"type": "model_error", "message": "no"}
                assert await store.finish(job_id, "runner", 1, "failed", error=error)
            else:
                assert await store.finish(job_id, "runner", 1, "succeeded", {"i": i})
        assert len(store.state.records) <= CACHE

        # Read by id, events included, as they were stored.
        for i, job_id in enumerate(ids):
            job = await store.get(job_id)
            assert job.status == ("failed" if failing(i) else "succeeded")
            assert job.result == (None if failing(i) else {"i": i}) and job.created_at == start + i
            events, more = await store.events(job_id, 0, 0)
            assert [e.id for e in events] == list(range(1, job.events + 1)) and not more
            assert (await store.wait(job_id, 5.0)).status == job.status  # finished: answered at once
            assert len(store.state.records) <= CACHE

        # Listed, newest first, paged and filtered.
        assert await pages(store, 7) == ids[::-1]
        assert await pages(store, 3, status="failed") == [j for i, j in enumerate(ids) if failing(i)][::-1]
        assert await pages(store, 4, tenant="odd", model="m") == ids[1::2][::-1]
        assert await pages(store, 5, created_after=start + 10, created_before=start + 20) == ids[10:20][::-1]
        assert await pages(store, 5, model="other") == []

        # An evicted job's idempotency key replays it (or conflicts); a resent submit of its id finds it.
        assert "j03" not in store.state.records and "j07" not in store.state.records
        outcome, job = await store.submit("new", "m", REQUEST, b'{"i": 3}', {}, TTL_S, "k3", tenant="odd")
        assert (outcome, job.id, job.result) == ("existing", "j03", {"i": 3})
        outcome, job = await store.submit("new", "m", REQUEST, b'{"i": 4}', {}, TTL_S, "k3", tenant="odd")
        assert (outcome, job.id) == ("conflict", "j03")
        outcome, job = await store.submit("j07", "m", REQUEST, b"{}", {}, TTL_S, tenant="odd")
        assert (outcome, job.result) == ("existing", {"i": 7})
        assert (await store.get("new")) is None

        # An evicted failed job is retried and runs again; an evicted one is erased, its blobs with it.
        assert "j00" not in store.state.records
        assert (await store.retry("j00"))[0] == "queued"
        job, _ = await store.claim("runner", {"m": 1}, 0.1)
        assert job.id == "j00" and job.attempts == 2
        CLOCK.now = start + N
        assert await store.finish("j00", "runner", 2, "succeeded", {"i": 0})
        assert "j01" not in store.state.records
        outcome, tomb = await store.erase("j01")
        assert outcome == "erased" and tomb.erased and tomb.status == "expired"
        assert await store.events("j01", 0, 0) is None
        await blobs_deleted(store)
        assert not (blob_dir / result_key("j01")).exists() and (blob_dir / result_key("j02")).exists()

        # Expiry on time: at start + TTL_S + 25, jobs 0..25 (but the retried one) expire, the rest not yet.
        await reap_after(store, TTL_S - N - 1)
        assert "expired" not in [(await store.get(j)).status for j in ids[2:]]
        CLOCK.now = start + TTL_S + 25
        await store._reap()
        await blobs_deleted(store)
        for i, job_id in enumerate(ids[2:], start=2):
            job, expired = await store.get(job_id), i <= 25
            assert (job.status == "expired") == expired and (job.result is None) == (expired or failing(i)), job_id
            assert (blob_dir / result_key(job_id)).exists() == (not expired), job_id
            with pytest.raises((KeyError, TypeError)) if expired else contextlib.nullcontext():
                store.backend.body(job_id)
        assert (await store.get("j00")).status == "succeeded"
        assert len(store.state.records) <= CACHE

        # Forgotten forget_after_s later: gone from memory, the backend and listings; their keys free.
        await reap_after(store, FORGET_S + TTL_S)
        await store._reap()  # the second step of those whose expiry the first round did
        assert [await store.get(j) for j in ids] == [None] * N
        await blobs_deleted(store)
        assert list(store.backend.load()) == [] and await pages(store, 10) == []
        assert not [path for path in blob_dir.rglob("*") if path.is_file()]
        assert (await store.submit("again", "m", REQUEST, b"{}", {}, TTL_S, "k3", tenant="odd"))[0] == "created"
        assert +store.state.counts["m"] == {"queued": 1} and len(store.state.records) == 1
        store.reaper.cancel()

    asyncio.run(main())


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_backend_written_before_the_query_indexes_is_indexed_on_start(kind, tmp_path, request):
    """A store upgraded in place: the records written by the previous version (no columns, no
    index keys) are found by every query once the backend opens them."""
    from longserve.server.jobs.backends import Filters, make_backend
    from longserve.server.jobs.record import Job

    old = [
        Job(id="q", seq=1, model="m", request=REQUEST, ttl_s=60, idempotency_key="kq"),
        Job(id="s", seq=2, model="m", status="succeeded", request=REQUEST, ttl_s=60, expires_at=5.0),
    ]
    url = request.getfixturevalue("redis_url") if kind == "redis" else ""
    path = tmp_path / "jobs.sqlite3"
    if kind == "sqlite":
        import sqlite3

        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, record TEXT NOT NULL)")
            db.executemany("INSERT INTO jobs VALUES (?, ?)", [(j.id, j.model_dump_json()) for j in old])
    else:
        import redis

        raw = redis.Redis.from_url(url)
        for job in old:
            raw.set(f"longserve:job:{job.id}", job.model_dump_json())
            raw.sadd("longserve:jobs", job.id)
    backend = make_backend(kind, str(path), url)
    assert [job.id for job in backend.load_live()] == ["q"] and backend.last_seq() == 2
    assert backend.find_key("anonymous", "m", "kq").id == "q"
    assert [job.id for job in backend.due(10.0, 100.0, 10)] == ["s"]
    assert [job.id for job in backend.list_jobs(Filters(tenant="anonymous"), 10, None)[0]] == ["s", "q"]
