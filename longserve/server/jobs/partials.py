"""A job attempt's partial outputs (ctx.emit) on their way from the runner to
the JobStore's event log.

Each partial is sent as soon as it comes, so a watcher sees it well under a
second later; those that come while a send is in flight go together in the
next call (one store call per round trip, however fast the model emits). The
model's stream is never held up: `add` only queues.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Optional

logger = logging.getLogger("ray.serve")

RETRY_S = 0.5  # between attempts while the store fails (restarting)
DRAIN_S = 10.0  # the most `drain` waits for what is queued


class Partials:
    def __init__(self, send: Callable[[list], Awaitable[bool]], what: str):
        self.send = send  # False: the store refused (not this attempt's job any more)
        self.what = what  # for logs
        self.pending: list[Any] = []
        self.ready = asyncio.Event()  # something is pending
        self.idle = asyncio.Event()  # nothing pending, nothing in flight
        self.idle.set()
        self.refused = False
        self.task: Optional[asyncio.Task] = None

    def add(self, value: Any) -> None:
        if self.refused:
            return
        self.pending.append(value)
        self.idle.clear()
        self.ready.set()
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._send_forever())

    async def drain(self) -> None:
        """Wait until what was added is stored (or refused), then stop: the events come before the outcome."""
        try:
            await asyncio.wait_for(self.idle.wait(), DRAIN_S)
        except TimeoutError:
            logger.warning("%s: partial outputs not stored within %g s; dropped", self.what, DRAIN_S)
        finally:
            if self.task is not None:
                self.task.cancel()

    async def _send_forever(self) -> None:
        while True:
            await self.ready.wait()
            self.ready.clear()
            batch, self.pending = self.pending, []
            try:
                self.refused = not await self.send(batch)
            except Exception as exc:  # the store restarting: send them again, first
                logger.warning("%s: storing partial outputs failed (%r); retrying", self.what, exc)
                self.pending = batch + self.pending
                self.ready.set()
                await asyncio.sleep(RETRY_S)
                continue
            if self.refused:
                self.pending = []
            if not self.pending:
                self.idle.set()
