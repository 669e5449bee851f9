"""Delivers job callbacks from inside each JobRunner replica.

The completion callback is durable: its state lives on the job in the
JobStore, which leases each due delivery to one runner. A runner that dies
mid-delivery leaves it to another runner once the lease ends, so every
callback is delivered at least once (receivers dedupe on `webhook-id`).
Started and progress events (`callback_events=all`) are best effort: one
attempt each, never retried.
"""

import asyncio
import logging
import time
from typing import Any

from longserve.server.config import CallbacksConfig
from longserve.server.errors import InvalidCallbackUrl
from longserve.server.jobs.callbacks import backoff_s, check_url, deliver, headers_for, load_secret, new_client, payload
from longserve.server.jobs.record import Callback, Job, loggable
from longserve.server.monitoring.monitor import Monitor

logger = logging.getLogger("ray.serve")

CLAIM_LIMIT = 32
CLAIM_WAIT_S = 1.0
ERROR_BACKOFF_S = 1.0


def message_id(job: Job, event: str, seq: int = 0) -> str:
    """One id per event (receivers dedupe on it), the same on every retry of that event:
    an attempt's completion or start, or its `seq`-th progress event. A job run again ends anew."""
    return f"msg_{job.id.removeprefix('job_')}_{job.attempts}_{event}" + (f"_{seq}" if seq else "")


class CallbackSender:
    def __init__(self, config: CallbacksConfig, store, runner_id: str, monitor: Monitor):
        self.config = config
        self.secret = load_secret(config)
        self.store = store
        self.runner_id = runner_id
        self.monitor = monitor
        self.client = new_client(config)
        self.tasks: set[asyncio.Task] = set()
        self.loop = asyncio.get_running_loop().create_task(self._deliver_forever())

    def notify(self, job: Job, event: str, seq: int = 0) -> None:
        """Best-effort started/progress event for jobs that asked for all events
        (`seq` numbers an attempt's progress events from 1)."""
        if job.callback is None or job.callback.events != "all":
            return
        task = asyncio.create_task(self._notify(job, event, seq))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _notify(self, job: Job, event: str, seq: int) -> None:
        assert job.callback is not None  # notify is called for jobs with a callback
        try:
            address = await check_url(job.callback.url, self.config)
            body = payload(event, job.view())
            await deliver(
                self.client,
                job.callback.url,
                address,
                body,
                headers_for(self.secret, message_id(job, event, seq), body),
            )
        except Exception as exc:  # best effort: the completed event is the one that is retried
            logger.info("job %s: %s callback not sent: %s", loggable(job.id), event, exc)

    async def _deliver_forever(self) -> None:
        lease_s = self.config.timeout_s + 5
        while True:
            try:
                jobs = await self.store.claim_callbacks.remote(self.runner_id, CLAIM_LIMIT, lease_s, CLAIM_WAIT_S)
            except Exception:
                logger.exception("claiming callbacks from the job store failed; retrying")
                await asyncio.sleep(ERROR_BACKOFF_S)
                continue
            for job in jobs:
                task = asyncio.create_task(self._deliver(job))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def _deliver(self, job: Job) -> None:
        callback = job.callback
        assert callback is not None  # claim_callbacks hands out only jobs with one
        update: dict[str, Any] = dict(attempts=callback.attempts + 1)
        try:
            address = await check_url(callback.url, self.config)  # again: DNS may have changed since submit
        except InvalidCallbackUrl as exc:
            update.update(status="failed", last_error=exc.message, last_status=None)
            await self._record(job, callback.model_copy(update=update), "failed")
            return
        body = payload("completed", job.view())
        outcome = await deliver(
            self.client, callback.url, address, body, headers_for(self.secret, message_id(job, "completed"), body)
        )
        update.update(last_status=outcome.status, last_error=outcome.error)
        if outcome.delivered:
            update.update(status="delivered", delivered_at=time.time(), last_error=None)
            label = "delivered"
        elif outcome.retry and update["attempts"] < self.config.max_attempts:
            update["next_attempt_at"] = time.time() + backoff_s(update["attempts"], self.config, outcome.retry_after)
            label = "retry"
        else:
            update["status"] = "failed"
            label = "failed"
        await self._record(job, callback.model_copy(update=update), label)

    async def _record(self, job: Job, callback: Callback, label: str) -> None:
        self.monitor.inc("longserve_callback_attempts_total", model=job.model, outcome=label)
        log = logger.warning if label != "delivered" else logger.info
        log(
            "job %s: callback attempt %d %s (%s)",
            loggable(job.id),
            callback.attempts,
            label,
            callback.last_error or callback.last_status,
        )
        try:
            await self.store.record_callback.remote(job.id, self.runner_id, callback)
        except Exception:  # the lease ends and another attempt is made: at least once
            logger.exception("job %s: recording the callback attempt failed", loggable(job.id))
