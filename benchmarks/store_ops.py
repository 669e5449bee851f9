"""How far one JobStore actor goes: operations per second straight to the actor.

No HTTP, no Serve: a driver starts its own Ray and one JobStore (sqlite in a
temporary directory, or redis if --redis-url), and keeps `--concurrency` calls
in flight per operation for `--seconds`:

- get:       read one finished job (what a poll costs the store)
- submit:    store a new job with a small inline body (one write each)
- lifecycle: submit, claim, finish (three writes: what a job costs it end to end)

    python -m benchmarks.store_ops [--seconds 5] [--concurrency 16]

The figures are the ceiling of one store: what gateways and runners could ask
of it before they wait on it (docs/jobs.md, "How far one JobStore goes")."""

import argparse
import asyncio
import os
import tempfile
import time

import ray

from longserve.server.config import JobsConfig
from longserve.server.jobs.record import JobRequest, new_job_id
from longserve.server.jobs.store import get_job_store

BODY = b'{"value": 1}'
REQUEST = JobRequest(media_type="application/json")


async def rate(call, seconds: float, concurrency: int) -> float:
    """Operations per second with `concurrency` calls of `call()` in flight."""
    done, deadline = 0, time.monotonic() + seconds

    async def worker():
        nonlocal done
        while time.monotonic() < deadline:
            await call()
            done += 1

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.monotonic() - start)


async def measure(store, seconds: float, concurrency: int) -> dict[str, float]:
    async def submit() -> str:
        job_id = new_job_id()
        await store.submit.remote(job_id, "echo", REQUEST, BODY, {}, 3600.0)
        return job_id

    async def lifecycle():
        job_id = await submit()
        runner = f"bench-{job_id}"
        # Claims take any queued job, so each worker may finish another worker's job: all get finished.
        claimed = await store.claim.remote(runner, {"echo": 10_000}, 1.0)
        if claimed is not None:
            job, _ = claimed
            await store.finish.remote(job.id, runner, job.attempts, "succeeded", {"value": 1})

    finished = await submit()
    claimed = await store.claim.remote("bench", {"echo": 1}, 1.0)
    await store.finish.remote(claimed[0].id, "bench", claimed[0].attempts, "succeeded", {"value": 1})

    async def get():
        await store.get.remote(finished)

    return {
        "get": await rate(get, seconds, concurrency),
        "submit": await rate(submit, seconds, concurrency),
        "lifecycle": await rate(lifecycle, seconds, concurrency),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--redis-url", help="measure the redis backend at this URL instead of sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.redis_url:
            config = JobsConfig(backend="redis", redis_url=args.redis_url)
        else:
            config = JobsConfig(backend="sqlite", sqlite_path=os.path.join(tmp, "jobs.sqlite3"))
        # address="local": a cluster of its own, never one already running here.
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            store = get_job_store(config)
            rates = asyncio.run(measure(store, args.seconds, args.concurrency))
        finally:
            ray.shutdown()
    print(f"JobStore ({config.backend}), {args.concurrency} calls in flight, {args.seconds:g} s each:")
    for name, ops in rates.items():
        print(f"  {name:<10} {ops:8.0f} /s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
