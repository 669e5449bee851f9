"""Jobs: submit and status-poll latency over HTTP, and the JobStore actor's
resident memory, with 1k, 100k and 1M finished jobs stored, per backend. Used
by benchmarks.run_all.

Stored jobs are preloaded by a function run inside the JobStore actor
(`__ray_call__`) that writes finished jobs straight to its backend in bulk
(`save_many`: one executemany per chunk on sqlite, one pipeline on redis), as
if they had been submitted, run and evicted from the store's memory; nothing
is paged in. Through HTTP, 1M jobs would take days (~90 jobs/s, each
submitted and run to completion)."""

import asyncio
import os
import random
import time

import httpx

from benchmarks import wrk
from benchmarks.collapse import accounted, cpu_since, cpu_ticks
from benchmarks.load import timed
from longserve.server.monitoring.stats import percentile

BODY = b'{"value": 1}'
CHUNK = 10_000  # jobs built and written at a time: the actor's memory stays flat while preloading
SAMPLE = 200  # ids of preloaded jobs kept, to poll jobs that are in the backend only


def preload_in_actor(store, n: int, model: str) -> tuple[int, list[str]]:
    """Runs inside the JobStore actor: write n finished jobs to its backend. Returns the jobs
    the backend holds (its highest seq) and a sample of the new ids (none of them in memory)."""
    from longserve.server.jobs.record import Job, JobRequest, new_job_id

    now, first = time.time(), store.state.last_seq + 1
    sample: list[str] = []
    for start in range(first, first + n, CHUNK):
        jobs = [
            Job(
                id=new_job_id(),
                seq=seq,
                model=model,
                status="succeeded",
                ttl_s=86400.0,
                request=JobRequest(media_type="application/json"),
                attempts=1,
                created_at=now,
                started_at=now,
                finished_at=now,
                expires_at=now + 86400,
                result={"value": 1},
                version=3,
            )
            for seq in range(start, min(start + CHUNK, first + n))
        ]
        store.backend.save_many([(job, BODY) for job in jobs])
        sample += [job.id for job in random.sample(jobs, min(len(jobs), max(1, SAMPLE * CHUNK // n)))]
    store.state.last_seq = first + n - 1  # new submits number after them
    return store.backend.last_seq(), random.sample(sample, min(SAMPLE, len(sample)))


def actor_rss(store) -> int:
    """Resident memory of the JobStore actor's process, in bytes."""
    import psutil
    import ray

    return psutil.Process(ray.get(store.__ray_call__.remote(lambda self: os.getpid()))).memory_info().rss


async def measure(
    http: httpx.AsyncClient,
    prefix: str,
    samples: int,
    seconds: float,
    concurrency: int,
    stored: list[str],
    app: str = "",
) -> dict:
    """`stored`: ids of preloaded jobs, in the backend only: the cold polls read them from it. Also
    polls/s (wrk: GETs of one finished job) and the CPU ms per submit and per poll of each kind of
    process (benchmarks/collapse.py; `app`: the Serve app, whose replicas alone count)."""
    submit_url = f"{prefix}/v1/models/echo/jobs"
    ids: list[str] = []

    async def submit():
        response = await http.post(submit_url, content=BODY, headers={"content-type": "application/json"})
        response.raise_for_status()
        ids.append(response.json()["id"])

    # Sequential, so the submitted jobs run meanwhile: their runner and model CPU shows apart.
    before = cpu_ticks()
    submit_ms = await timed(submit, samples)
    submit_cpu = cpu_since(before, samples, app)
    job_url = f"{prefix}/v1/jobs/{ids[-1]}"
    while (await http.get(job_url)).json()["status"] != "succeeded":  # polls of a finished job
        await asyncio.sleep(0.05)

    async def poll():
        (await http.get(job_url)).raise_for_status()

    poll_ms = await timed(poll, samples)
    cold = iter(stored * (samples // max(len(stored), 1) + 1))

    async def poll_stored():  # each a job not polled before (but for the cache, read from the backend)
        (await http.get(f"{prefix}/v1/jobs/{next(cold)}")).raise_for_status()

    cold_ms = await timed(poll_stored, samples) if stored else [float("nan")]
    polls, poll_cpu = await asyncio.to_thread(
        accounted, lambda: wrk.run(job_url, None, concurrency, seconds, method="GET"), lambda s: s["2xx"], app
    )

    async def submit_until_done():
        await submit()
        while True:
            response = await http.get(f"{prefix}/v1/jobs/{ids[-1]}", params={"wait": 10})
            if response.json()["status"] not in ("queued", "running"):
                assert response.json()["status"] == "succeeded", response.text
                return

    done_ms = await timed(submit_until_done, max(3, samples // 5))
    return {
        "submit p50 ms": percentile(submit_ms, 50),
        "submit p99 ms": percentile(submit_ms, 99),
        "poll p50 ms": percentile(poll_ms, 50),
        "poll p99 ms": percentile(poll_ms, 99),
        "cold poll p50 ms": percentile(cold_ms, 50),
        "cold poll p99 ms": percentile(cold_ms, 99),
        "polls/s": polls["req/s"],
        "submit cpu": submit_cpu,
        "poll cpu": poll_cpu,
        "submit->done p50 ms": percentile(done_ms, 50),
        "submit->done p99 ms": percentile(done_ms, 99),
    }
