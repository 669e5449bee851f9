"""JobStore: one named, detached Ray actor that owns every job's state.

Every change is written to the backend before it is acknowledged, and the
actor reloads every job when it (re)starts, so an acknowledged job survives a
crash of this actor, of a runner, or of Ray itself (sqlite, redis).

Reads and long-polls are served from memory; changes are serialized by one
lock (so a job's writes reach the backend in order) and written in a worker
thread, so reads never wait on the disk. Apart from listing, no operation
looks at more than one model queue's head or the set of running jobs.

A finished job expires after its ttl_s (result and input dropped, status
`expired`), stays that tombstone for `forget_after_s`, then is forgotten:
deleted from the backend and from memory, so the store does not grow with
every job ever run.
"""

import asyncio
import bisect
import hashlib
import heapq
import logging
import time
from collections import Counter, defaultdict, deque
from typing import Any, Optional

import ray

from longserve.server.config import JobsConfig
from longserve.server.jobs.backends import make_backend
from longserve.api.jobs import PENDING
from longserve.server.jobs.record import Callback, Job, JobRequest, Progress, loggable
from longserve.server.monitoring.metrics import Metrics

logger = logging.getLogger(__name__)

NAMESPACE = "longserve"
REAP_INTERVAL_S = 0.5


def store_name(config: JobsConfig) -> str:
    """One store per backend location: a changed backend gets a new actor."""
    where = {"sqlite": config.sqlite_path, "redis": config.redis_url, "memory": ""}[config.backend]
    return f"jobstore-{config.backend}-{hashlib.sha256(where.encode()).hexdigest()[:10]}"


def get_job_store(config: JobsConfig) -> "ray.actor.ActorHandle":
    options: dict[str, Any] = dict(
        name=store_name(config),
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=-1,  # calls in flight during a restart are retried
        max_concurrency=1000,
        num_cpus=0,
    )
    if config.backend == "sqlite":  # the file lives on the head node's disk
        options["resources"] = {"node:__internal_head__": 0.001}
    return ray.remote(JobStore).options(**options).remote(config)


class JobStore:
    def __init__(self, config: JobsConfig):
        self.config = config
        self.backend = make_backend(config.backend, config.sqlite_path, config.redis_url)
        self.jobs: dict[str, Job] = {}
        self.order: list[str] = []  # ids by seq, for listing
        self.seqs: list[int] = []
        self.queues: dict[str, deque[str]] = defaultdict(deque)  # may hold stale ids; skipped on claim
        self.running: set[str] = set()  # the leases the reaper watches
        self.counts: dict[str, Counter] = defaultdict(Counter)  # model -> status -> jobs
        self.idempotency: dict[tuple[str, str], str] = {}
        # (when, id): a finished job's next step, expiring and then being forgotten.
        # Entries may be stale (a retried job); the reaper checks the job itself.
        self.expiry: list[tuple[float, str]] = []
        self.stale = 0  # ids of forgotten jobs still in self.order (see _forget)
        self.callbacks_due: set[str] = set()  # jobs whose completion callback is not yet delivered
        self.callback_work = asyncio.Event()
        self.changed: dict[str, asyncio.Event] = {}
        self.work = asyncio.Event()
        self.lock = asyncio.Lock()
        self.reaper: Optional[asyncio.Task] = None
        self.metrics = Metrics()
        self._load()

    def _load(self) -> None:
        now, forgotten = time.time(), 0
        for job in sorted(self.backend.load(), key=lambda j: j.seq):
            forget_at = self._forget_at(job)
            if forget_at is not None and forget_at <= now:
                self.backend.delete(job.id)  # its time to be forgotten passed while the store was down
                forgotten += 1
                continue
            self._index(job)
            self._count(None, job)
            if job.status == "queued":
                self.queues[job.model].append(job.id)
            self._schedule(job)
            if job.callback is not None and job.callback.status == "pending" and job.status not in PENDING:
                self.callbacks_due.add(job.id)
        logger.info("job store %s loaded %d jobs, deleted %d past their forget time",
                    self.config.backend, len(self.jobs), forgotten)

    # -- client side ------------------------------------------------------------

    async def submit(
        self, job_id: str, model: str, request: JobRequest, body: bytes, metadata: dict, ttl_s: float,
        idempotency_key: Optional[str] = None, callback: Optional[Callback] = None,
    ) -> tuple[str, Job]:
        """("created" | "existing" | "conflict", job). Retried calls with the same id are no-ops."""
        self._start()
        digest = hashlib.sha256(request.model_dump_json().encode() + b"\0" + body).hexdigest()
        async with self.lock:
            if job_id in self.jobs:
                return "existing", self.jobs[job_id]
            if idempotency_key is not None:
                existing = self.idempotency.get((model, idempotency_key))
                if existing is not None:
                    job = self.jobs[existing]
                    return ("existing" if job.body_sha256 == digest else "conflict"), job
            job = Job(
                id=job_id,
                seq=(self.seqs[-1] + 1) if self.seqs else 1,
                model=model,
                request=request,
                metadata=metadata,
                ttl_s=ttl_s,
                max_attempts=self.config.max_attempts,
                idempotency_key=idempotency_key,
                body_sha256=digest,
                callback=callback,
            )
            await self._commit(job, body)
            self._index(job)
            self.queues[model].append(job.id)
            self._wake_runners()
            return "created", job

    async def get(self, job_id: str) -> Optional[Job]:
        self._start()
        return self.jobs.get(job_id)

    async def wait(self, job_id: str, timeout_s: float, until_finished: bool = False) -> Optional[Job]:
        """The job once it changes (or finishes), or as it is after timeout_s."""
        self._start()
        job = self.jobs.get(job_id)
        deadline = time.monotonic() + timeout_s
        while job is not None and job.status in PENDING:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            seen = job.version
            event = self.changed.setdefault(job_id, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except asyncio.TimeoutError:
                break
            job = self.jobs.get(job_id)
            if job is not None and not until_finished and job.version != seen:
                break
        return job

    async def cancel(self, job_id: str) -> tuple[str, Optional[Job]]:
        """("cancelled" | "finished" | "missing", job). A running job's runner
        learns it at its next heartbeat and cancels the replica's work."""
        self._start()
        async with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return "missing", None
            if job.status not in PENDING:
                return "finished", job
            return "cancelled", await self._finish(job, "cancelled", error={
                "type": "cancelled", "message": "cancelled by the client"})

    async def retry(self, job_id: str) -> tuple[str, Optional[Job]]:
        """("queued" | "not_retryable" | "missing", job): a failed or cancelled job runs again."""
        self._start()
        async with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return "missing", None
            if job.status not in ("failed", "cancelled"):
                return "not_retryable", job
            self.callbacks_due.discard(job_id)  # the job's next ending is the news now
            job = job.model_copy(update=dict(
                status="queued", error=None, result=None, finished_at=None, expires_at=None,
                started_at=None, progress=Progress(), max_attempts=job.attempts + self.config.max_attempts,
            ))
            await self._commit(job)
            self.queues[job.model].append(job.id)
            self._wake_runners()
            return "queued", job

    async def list(
        self, model: Optional[str] = None, status: Optional[str] = None, limit: int = 50, cursor: Optional[int] = None
    ) -> tuple[list[Job], Optional[int]]:
        """Newest first; `cursor` is the seq to continue below."""
        self._start()
        end = len(self.seqs) if cursor is None else bisect.bisect_left(self.seqs, cursor)
        page: list[Job] = []
        for index in range(end - 1, -1, -1):
            job = self.jobs.get(self.order[index])
            if job is None:
                continue  # forgotten
            if (model is None or job.model == model) and (status is None or job.status == status):
                page.append(job)
                if len(page) == limit:
                    return page, (job.seq if index > 0 else None)
        return page, None

    async def backlog(self) -> dict[str, dict[str, int]]:
        self._start()
        return {model: {"queued": c["queued"], "running": c["running"]} for model, c in self.counts.items()}

    # -- runner side ------------------------------------------------------------

    async def claim(
        self, runner: str, limits: dict[str, int], wait_s: float
    ) -> Optional[tuple[Job, bytes]]:
        """The oldest queued job of a model under its limit of running jobs,
        now running under `runner`'s lease; None if there is none within wait_s."""
        self._start()
        deadline = time.monotonic() + wait_s
        while True:
            work = self.work
            async with self.lock:
                job = self._next_claimable(limits)
                if job is not None:
                    now = time.time()
                    job = job.model_copy(update=dict(
                        status="running", attempts=job.attempts + 1, started_at=job.started_at or now,
                        lease_owner=runner, lease_expires_at=now + self.config.lease_s,
                    ))
                    await self._commit(job)
                    self.queues[job.model].popleft()
                    return job, await asyncio.to_thread(self.backend.body, job.id)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(work.wait(), remaining)
            except asyncio.TimeoutError:
                return None

    async def heartbeat(self, job_id: str, runner: str, attempt: int, progress: Optional[dict] = None) -> bool:
        """Renew the lease (and record progress). False: stop, the job is no longer yours."""
        self._start()
        async with self.lock:
            job = self._owned(job_id, runner, attempt)
            if job is None:
                return False
            update: dict[str, Any] = {"lease_expires_at": time.time() + self.config.lease_s}
            if progress is not None:
                update["progress"] = Progress(**progress)
            # A bare lease renewal is no news: long-polls keep waiting.
            await self._commit(job.model_copy(update=update), visible=progress is not None)
            return True

    async def finish(self, job_id: str, runner: str, attempt: int, status: str, result: Any = None,
                     error: Optional[dict] = None) -> bool:
        """Store the outcome once; a runner whose lease was lost is ignored."""
        self._start()
        async with self.lock:
            job = self._owned(job_id, runner, attempt)
            if job is None:
                return False
            if status == "succeeded" and job.progress.total:
                job = job.model_copy(update={"progress": job.progress.model_copy(update={"done": job.progress.total})})
            await self._finish(job, status, result=result, error=error)
            return True

    async def release(self, job_id: str, runner: str, attempt: int, reason: str) -> bool:
        """Give the job back (its replica died): queued again, or failed after max_attempts."""
        self._start()
        async with self.lock:
            job = self._owned(job_id, runner, attempt)
            if job is None:
                return False
            await self._requeue_or_fail(job, reason)
            return True

    # -- callback delivery (runner side) ------------------------------------------

    async def claim_callbacks(self, runner: str, limit: int, lease_s: float, wait_s: float) -> "list[Job]":
        """Finished jobs whose callback is due, each now leased to `runner` for
        lease_s: a runner that dies mid-delivery leaves it to another after that."""
        self._start()
        deadline = time.monotonic() + wait_s
        while True:
            work = self.callback_work
            now = time.time()
            due = [self.jobs[i] for i in self.callbacks_due if self.jobs[i].callback.next_attempt_at <= now]
            claimed = []
            async with self.lock:
                for job in sorted(due, key=lambda j: j.callback.next_attempt_at)[:limit]:
                    if job.id not in self.callbacks_due:
                        continue  # delivered, or the job forgotten, while we waited for the lock
                    job = self.jobs[job.id]
                    if job.callback.next_attempt_at > now:
                        continue  # claimed by another runner while we waited for the lock
                    callback = job.callback.model_copy(update=dict(owner=runner, next_attempt_at=now + lease_s))
                    await self._commit(job.model_copy(update={"callback": callback}), visible=False)
                    claimed.append(self.jobs[job.id])
            remaining = deadline - time.monotonic()
            if claimed or remaining <= 0:
                return claimed
            upcoming = min((self.jobs[i].callback.next_attempt_at for i in self.callbacks_due), default=now + remaining)
            try:
                await asyncio.wait_for(work.wait(), max(min(remaining, upcoming - now), 0.01))
            except asyncio.TimeoutError:
                pass

    async def record_callback(self, job_id: str, runner: str, callback: Callback) -> bool:
        """Store an attempt's outcome (`callback` as the runner updated it), if the runner still holds it."""
        self._start()
        async with self.lock:
            job = self.jobs.get(job_id)
            if job is None or job.callback is None or job.callback.owner != runner or job_id not in self.callbacks_due:
                return False
            await self._commit(job.model_copy(update={"callback": callback.model_copy(update={"owner": None})}))
            if callback.status != "pending":
                self.callbacks_due.discard(job_id)
            return True

    # -- internals --------------------------------------------------------------

    def _start(self) -> None:
        # Called first by every public method: the reaper needs the actor's
        # running loop, which __init__ does not have.
        if self.reaper is None:
            self.reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    def _index(self, job: Job) -> None:
        self.jobs[job.id] = job
        self.order.append(job.id)
        self.seqs.append(job.seq)
        if job.idempotency_key is not None:
            self.idempotency[(job.model, job.idempotency_key)] = job.id

    def _count(self, old: Optional[Job], new: Job) -> None:
        """Keep per-model status counts and the running set in step with a change."""
        if old is not None:
            self.counts[old.model][old.status] -= 1
        self.counts[new.model][new.status] += 1
        if old is None or old.status != new.status:
            self.metrics.inc("longserve_job_transitions_total", model=new.model, status=new.status)
            for state in ("queued", "running"):
                self.metrics.set("longserve_jobs_backlog", self.counts[new.model][state], model=new.model, state=state)
        if new.status == "running":
            self.running.add(new.id)
        elif new.id in self.running:
            self.running.discard(new.id)
            self._wake_runners()  # a job slot is free

    def _next_claimable(self, limits: dict[str, int]) -> Optional[Job]:
        best = None
        for model, limit in limits.items():
            if self.counts[model]["running"] >= limit:
                continue
            queue = self.queues.get(model)
            while queue and (queue[0] not in self.jobs or self.jobs[queue[0]].status != "queued"):
                queue.popleft()  # cancelled (and maybe forgotten since), or retried elsewhere
            if queue and (best is None or self.jobs[queue[0]].seq < best.seq):
                best = self.jobs[queue[0]]
        return best

    def _owned(self, job_id: str, runner: str, attempt: int) -> Optional[Job]:
        job = self.jobs.get(job_id)
        if job is None or job.status != "running" or job.lease_owner != runner or job.attempts != attempt:
            return None
        return job

    async def _commit(self, job: Job, body: Optional[bytes] = None, visible: bool = True) -> None:
        """Persist, then publish: nobody sees a change the backend does not hold."""
        if visible:
            job.version += 1
        await asyncio.to_thread(self.backend.save, job, body)
        self._count(self.jobs.get(job.id), job)
        self.jobs[job.id] = job
        event = self.changed.pop(job.id, None) if visible else None
        if event is not None:
            event.set()

    async def _finish(self, job: Job, status: str, result: Any = None, error: Optional[dict] = None) -> Job:
        now = time.time()
        update = dict(status=status, result=result, error=error, finished_at=now, expires_at=now + job.ttl_s,
                      lease_owner=None, lease_expires_at=None)
        if job.callback is not None:  # due now, from its first attempt (a retried job's ending is news again)
            update["callback"] = job.callback.model_copy(update=dict(
                status="pending", attempts=0, last_status=None, last_error=None, delivered_at=None,
                next_attempt_at=now, owner=None))
        job = job.model_copy(update=update)
        await self._commit(job)
        self._schedule(job)
        if job.callback is not None:
            self.callbacks_due.add(job.id)
            self.callback_work.set()
            self.callback_work = asyncio.Event()
        return job

    async def _requeue_or_fail(self, job: Job, reason: str) -> None:
        if job.attempts >= job.max_attempts:
            await self._finish(job, "failed", error={
                "type": "attempts_exhausted",
                "message": f"gave up after {job.attempts} attempts; the last ended because {reason}",
            })
            return
        logger.warning("job %s attempt %d lost (%s); queued again", loggable(job.id), job.attempts, reason)
        job = job.model_copy(update=dict(status="queued", lease_owner=None, lease_expires_at=None))
        await self._commit(job)
        self.queues[job.model].appendleft(job.id)  # it was first in line
        self._wake_runners()

    def _wake_runners(self) -> None:
        self.work.set()
        self.work = asyncio.Event()

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL_S)
            try:
                await self._reap()
            except Exception:  # keep reaping; the next round retries
                logger.exception("job store reaper failed")

    async def _reap(self) -> None:
        now = time.time()
        async with self.lock:
            for job_id in list(self.running):
                job = self.jobs[job_id]
                if job.lease_expires_at is not None and job.lease_expires_at < now:
                    await self._requeue_or_fail(job, f"its runner stopped renewing the lease ({self.config.lease_s:g} s)")
            while self.expiry and self.expiry[0][0] <= now:
                due, job_id = heapq.heappop(self.expiry)
                try:
                    await self._expire_or_forget(job_id, now)
                except BaseException:
                    heapq.heappush(self.expiry, (due, job_id))  # the backend failed: the next round retries
                    raise

    def _forget_at(self, job: Job) -> Optional[float]:
        """When a finished job is forgotten: forget_after_s after it expires; None while it is pending."""
        if job.status in PENDING or job.expires_at is None:
            return None
        return job.expires_at + self.config.forget_after_s

    def _next_step_at(self, job: Job) -> Optional[float]:
        """When a finished job expires, or an expired one is forgotten; None while it is pending."""
        forget_at = self._forget_at(job)
        if forget_at is None or job.status == "expired":
            return forget_at
        return job.expires_at

    def _schedule(self, job: Job) -> None:
        due = self._next_step_at(job)
        if due is not None:
            heapq.heappush(self.expiry, (due, job.id))

    async def _expire_or_forget(self, job_id: str, now: float) -> None:
        job = self.jobs.get(job_id)
        due = None if job is None else self._next_step_at(job)
        if due is None or due > now:
            return  # a stale entry: the job was retried (its new entry is queued) or is gone
        if job.status == "expired":
            await self._forget(job)
            return
        job = job.model_copy(update=dict(status="expired", result=None))
        await self._commit(job)
        self._schedule(job)  # to be forgotten (which deletes the body too, should dropping it fail now)
        await asyncio.to_thread(self.backend.drop_body, job_id)

    async def _forget(self, job: Job) -> None:
        """Delete an expired job from the backend and from memory: its id answers 404 from now on."""
        await asyncio.to_thread(self.backend.delete, job.id)
        del self.jobs[job.id]
        self.counts[job.model][job.status] -= 1
        key = (job.model, job.idempotency_key)
        if self.idempotency.get(key) == job.id:
            del self.idempotency[key]  # the key is free for a new job
        self.callbacks_due.discard(job.id)  # a callback still being retried has nothing left to send
        self.changed.pop(job.id, None)
        # Removing the id from self.order/self.seqs would be O(n) per job; it stays
        # there (list() skips it) until such ids are half of them, then both are
        # rebuilt: O(1) per forgotten job on average, and listing scans at most 2x.
        self.stale += 1
        if self.stale * 2 > len(self.order):
            kept = [(i, seq) for i, seq in zip(self.order, self.seqs) if i in self.jobs]
            self.order, self.seqs = [i for i, _ in kept], [seq for _, seq in kept]
            self.stale = 0
