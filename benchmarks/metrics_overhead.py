"""What monitoring costs the sync path: the same echo model served by two
apps in one Serve instance, one with `monitoring.enabled: false`, measured in
alternating rounds in one run.

    .venv/bin/python -m benchmarks.metrics_overhead              # 3 rounds
    .venv/bin/python -m benchmarks.metrics_overhead --rounds 1 --seconds 1
"""

import argparse
import asyncio
import os
import statistics
import sys
import time

import httpx

from benchmarks.jobs_latency import percentile
from benchmarks.serving import serving


def app_config(enabled: bool):
    from longserve.config import AppConfig

    return AppConfig.model_validate({
        "monitoring": {"enabled": enabled},
        "jobs": {"backend": "memory"},
        "models": {"echo": {"class": "benchmarks.echo_model:Echo", "max_ongoing_requests": 32,
                            "max_queued_requests": -1, "ray_actor_options": {"num_cpus": 0}}},
    })


async def round_(client: httpx.AsyncClient, prefix: str, seconds: float, concurrency: int) -> dict:
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def worker():
        while time.perf_counter() < stop:
            started = time.perf_counter()
            response = await client.post(f"{prefix}/v1/models/echo/predict", json={"value": 1})
            response.raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*[worker() for _ in range(concurrency)])
    return {"req/s": len(latencies) / seconds, "p50 ms": statistics.median(latencies),
            "p99 ms": percentile(latencies, 99)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    results: dict[str, list[dict]] = {"on": [], "off": []}
    with serving({"/on": app_config(True), "/off": app_config(False)}) as url:

        async def run():
            limits = httpx.Limits(max_connections=args.concurrency * 2)
            async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
                for name in ("on", "off"):  # warm up both
                    await round_(client, f"/{name}", 1, 2)
                for _ in range(args.rounds):
                    for name in ("on", "off"):
                        results[name].append(await round_(client, f"/{name}", args.seconds, args.concurrency))

        asyncio.run(run())

    print(f"# monitoring overhead on sync predict: echo model, {os.cpu_count()} CPUs, "
          f"{args.concurrency} concurrent clients, {args.rounds} alternating rounds of {args.seconds:g} s, "
          f"{time.strftime('%Y-%m-%d')}")
    print("| metric | monitoring off | monitoring on | on / off |")
    print("|---|---|---|---|")
    for key in results["on"][0]:
        off = statistics.median(r[key] for r in results["off"])
        on = statistics.median(r[key] for r in results["on"])
        print(f"| {key} | {off:.2f} | {on:.2f} | {on / off:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
