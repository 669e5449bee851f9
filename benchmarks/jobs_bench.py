"""Jobs: submit, status-poll and submit->done latency over HTTP with 1k, 10k
and 100k jobs already stored, per backend, and the JobStore actor's memory
per stored job. Used by benchmarks.run_all.

Stored jobs are preloaded by a function run inside the JobStore actor
(`__ray_call__`): finished jobs written through its backend and indexed the
way submit and finish index them. Through HTTP, 100k jobs would take ~20 min
(~90 jobs/s, each submitted and run to completion)."""

import os
import time

import httpx

from benchmarks.load import closed_loop, timed
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


async def measure(http: httpx.AsyncClient, prefix: str, samples: int, seconds: float, concurrency: int) -> dict:
    submit_url = f"{prefix}/v1/models/echo/jobs"
    ids: list[str] = []

    async def submit():
        response = await http.post(submit_url, content=BODY, headers={"content-type": "application/json"})
        response.raise_for_status()
        ids.append(response.json()["id"])

    submit_ms = await timed(submit, samples)
    job_url = f"{prefix}/v1/jobs/{ids[-1]}"

    async def poll():
        (await http.get(job_url)).raise_for_status()

    poll_ms = await timed(poll, samples)
    polls = await closed_loop(http, lambda h: h.get(job_url), concurrency, seconds)

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
        "submit->done p50 ms": percentile(done_ms, 50),
        "submit->done p99 ms": percentile(done_ms, 99),
    }
