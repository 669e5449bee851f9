"""Jobs: submit, status-poll and submit->done latency over HTTP with 1k, 10k
and 100k jobs already stored, per backend, and the JobStore actor's memory
per stored job. Used by benchmarks.run_all.

Stored jobs are preloaded by a function run inside the JobStore actor
(`__ray_call__`): finished jobs written through its backend and indexed the
way submit and finish index them. Through HTTP, 100k jobs would take ~20 min
(~90 jobs/s, each submitted and run to completion)."""

import asyncio
import os
import time

import httpx

from benchmarks import wrk
from benchmarks.collapse import accounted, cpu_since, cpu_ticks
from benchmarks.load import timed
from longserve.server.monitoring.stats import percentile

BODY = b'{"value": 1}'


def preload_in_actor(store, n: int, model: str) -> int:
    """Runs inside the JobStore actor: add n finished jobs; returns how many it holds."""
    from longserve.server.jobs.record import Job, JobRequest, new_job_id
    from longserve.server.jobs.state import Change

    now, state = time.time(), store.state
    for seq in range(state.last_seq + 1, state.last_seq + 1 + n):
        job = Job(
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
        store.backend.save(job, BODY)
        change = Change(state.version)
        change.save(None, job, visible=False)
        state.apply(change)
    return len(state.records)


def actor_rss(store) -> int:
    """Resident memory of the JobStore actor's process, in bytes."""
    import psutil
    import ray

    return psutil.Process(ray.get(store.__ray_call__.remote(lambda self: os.getpid()))).memory_info().rss


async def measure(
    http: httpx.AsyncClient, prefix: str, samples: int, seconds: float, concurrency: int, app: str = ""
) -> dict:
    """Latencies, polls/s (wrk: GETs of one finished job), and the CPU ms per submit and per poll of each
    kind of process (benchmarks/collapse.py; `app`: the Serve app, whose replicas alone count)."""
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
        "polls/s": polls["req/s"],
        "submit cpu": submit_cpu,
        "poll cpu": poll_cpu,
        "submit->done p50 ms": percentile(done_ms, 50),
        "submit->done p99 ms": percentile(done_ms, 99),
    }
