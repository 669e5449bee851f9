"""Job submit and status-poll latency, with an empty store and with N jobs
already stored, measured in one run on one app (sqlite backend, echo model).

    .venv/bin/python -m benchmarks.jobs_latency            # N = 10000
    .venv/bin/python -m benchmarks.jobs_latency --stored 200 --samples 50   # a quick look
"""

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.serving import serving


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def measure(client: httpx.AsyncClient, samples: int, concurrency: int) -> dict:
    submit_ms, poll_ms = [], []
    job_id = None
    for _ in range(samples):
        started = time.perf_counter()
        response = await client.post("/v1/models/echo/jobs", json={"value": 1})
        submit_ms.append((time.perf_counter() - started) * 1000)
        job_id = response.json()["id"]
    for _ in range(samples):
        started = time.perf_counter()
        (await client.get(f"/v1/jobs/{job_id}")).raise_for_status()
        poll_ms.append((time.perf_counter() - started) * 1000)

    # Poll throughput: `concurrency` clients polling for 3 s.
    count, stop = 0, time.perf_counter() + 3

    async def poller():
        nonlocal count
        while time.perf_counter() < stop:
            (await client.get(f"/v1/jobs/{job_id}")).raise_for_status()
            count += 1

    await asyncio.gather(*[poller() for _ in range(concurrency)])
    return {
        "submit p50 ms": statistics.median(submit_ms),
        "submit p99 ms": percentile(submit_ms, 99),
        "poll p50 ms": statistics.median(poll_ms),
        "poll p99 ms": percentile(poll_ms, 99),
        "polls/s": count / 3,
    }


async def preload(client: httpx.AsyncClient, n: int, concurrency: int = 32) -> float:
    started = time.perf_counter()
    queue = iter(range(n))

    async def submitter():
        for _ in queue:
            (await client.post("/v1/models/echo/jobs", json={"value": 1})).raise_for_status()

    await asyncio.gather(*[submitter() for _ in range(concurrency)])
    # Let the runner finish them: the store then holds n finished jobs.
    while True:
        backlog = (await client.get("/v1/models/echo")).json()["jobs"]
        if backlog["queued"] == 0 and backlog["running"] == 0:
            break
        await asyncio.sleep(0.5)
    return n / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stored", type=int, default=10000)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    from longserve.config import AppConfig

    db = Path(tempfile.mkdtemp()) / "jobs.sqlite3"
    config = AppConfig.model_validate({
        "jobs": {"backend": "sqlite", "sqlite_path": str(db)},
        "models": {"echo": {"class": "benchmarks.echo_model:Echo", "max_ongoing_requests": 16,
                            "ray_actor_options": {"num_cpus": 0}}},
    })
    with serving({"/": config}) as url:

        async def run():
            limits = httpx.Limits(max_connections=args.concurrency * 2)
            async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
                await measure(client, 20, 2)  # warm up
                empty = await measure(client, args.samples, args.concurrency)
                rate = await preload(client, args.stored)
                full = await measure(client, args.samples, args.concurrency)
                return empty, rate, full

        empty, rate, full = asyncio.run(run())

    print(f"# jobs latency: sqlite backend, echo model, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}")
    print(f"preloaded {args.stored} jobs via HTTP at {rate:.0f} jobs/s (submitted and run to completion)")
    print(f"| metric | empty store | {args.stored} stored | ratio |")
    print("|---|---|---|---|")
    for key in empty:
        print(f"| {key} | {empty[key]:.2f} | {full[key]:.2f} | {full[key] / empty[key]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
