"""Where a sync request waits when its model is full: here, in the gateway.

Ray Serve's router holds a request a full replica cannot take in its own
queue, and finds a slot by polling: each of its (at most 2 per replica)
routing tasks asks the replica for its queue length and, while it is full,
sleeps 25, 50, 100, 200, 400, then 500 ms between asks. A slot that frees
is seen only at the next ask, so past saturation the replica sits idle
between batches: on 2 CPUs the embedder fell from ~60 req/s at 16 clients to
~15 at 64, its replica computing 19% of the time (docs/benchmarks.md). With
short backoffs the polling itself burns the CPU instead.

An `Admission` gives a model's requests at most its capacity of slots
(max_ongoing_requests x replicas, shared between the gateway's replicas), so
the router never meets a full replica and never backs off. The rest wait in a
FIFO here, bounded by max_queued_requests (then 503 + Retry-After at once,
as Ray's own full queue answers), each only until its deadline: the caller's
timeout around `slot()` makes that a 504 with stage "queued". A released
slot goes straight to the next waiter: no polling, no wake-up delay.

Requests a job runner sends to the same model do not pass here; while jobs
run, sync requests may still exceed a replica's free slots and wait in Ray's
router for those (bounded by max_concurrent_jobs).
"""

import asyncio
import math
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from longserve.server.config import ModelConfig
from longserve.server.errors import Overloaded

RETRY_AFTER_S = 1


def capacity_of(config: ModelConfig, gateways: int = 1) -> int:
    """One gateway replica's share of the model's slots: max_ongoing_requests x replicas
    (an autoscaled model: its max_replicas) / gateway replicas, rounded up."""
    replicas = config.num_replicas or (config.autoscaling_config or {}).get("max_replicas", 1) or 1
    return max(1, math.ceil(replicas * config.max_ongoing_requests / gateways))


def queue_bound_of(config: ModelConfig, gateways: int = 1) -> int:
    """One gateway replica's share of max_queued_requests; -1: unbounded."""
    if config.max_queued_requests < 0:
        return -1
    return math.ceil(config.max_queued_requests / gateways)


class Admission:
    """A model's slots, seen from one gateway replica: `async with admission.slot(): ...`."""

    def __init__(self, name: str, config: ModelConfig, gateways: int = 1):
        self.name = name
        self.config = config
        self.capacity = capacity_of(config, gateways)
        self.max_queued = queue_bound_of(config, gateways)
        self.running = 0
        self.waiters: deque[asyncio.Future] = deque()

    @property
    def queued(self) -> int:
        return len(self.waiters)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    async def acquire(self) -> None:
        if self.running < self.capacity and not self.waiters:
            self.running += 1
            return
        if self.max_queued >= 0 and len(self.waiters) >= self.max_queued:
            raise self.overloaded()
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter  # release() hands its slot over: `running` already counts us
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot as we gave up: pass it on
            else:
                waiter.cancel()
                self.waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.running -= 1

    def overloaded(self) -> Overloaded:
        return Overloaded(
            f"model '{self.name}' is at capacity: {self.config.max_ongoing_requests} running per replica and "
            f"{self.config.max_queued_requests} queued (max_queued_requests in serve_config.yaml). "
            f"Retry after {RETRY_AFTER_S} s, or submit the work as an async job.",
            retry_after=RETRY_AFTER_S,
            model=self.name,
            retry_after_s=RETRY_AFTER_S,
        )
