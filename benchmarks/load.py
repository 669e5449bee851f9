"""The load generator every benchmark here shares: closed-loop asyncio
clients on one httpx connection pool, each sending its next request as soon
as the previous one is answered, for a fixed time."""

import asyncio
import statistics
import time
from typing import Awaitable, Callable

import httpx

from longserve.server.monitoring.stats import percentile

Send = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


def client(base_url: str = "", concurrency: int = 64, timeout: float = 120) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout)


async def closed_loop(http: httpx.AsyncClient, send: Send, concurrency: int, seconds: float) -> dict:
    """`concurrency` clients for `seconds`: requests/s and latency percentiles (ms)."""
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker():
        nonlocal errors
        while time.perf_counter() < stop:
            started = time.perf_counter()
            response = await send(http)
            if response.status_code >= 400:
                errors += 1
            else:
                latencies.append((time.perf_counter() - started) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    elapsed = time.perf_counter() - began  # includes the last requests' tails
    if not latencies:
        raise RuntimeError(f"every request failed ({errors})")
    return {
        "req/s": len(latencies) / elapsed,
        "p50 ms": statistics.median(latencies),
        "p99 ms": percentile(latencies, 99),
        "errors": errors,
    }


async def timed(send: Callable[[], Awaitable], samples: int) -> list[float]:
    """Latencies (ms) of `samples` sequential calls."""
    out = []
    for _ in range(samples):
        started = time.perf_counter()
        await send()
        out.append((time.perf_counter() - started) * 1000)
    return out
