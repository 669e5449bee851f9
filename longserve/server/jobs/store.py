"""JobStore: one named, detached Ray actor that owns every job's state.

The lifecycle itself is the pure state machine in jobs/state.py; this actor
is its shell: it loads the state from the backend, persists each Change, then
applies and publishes it (wakes long-polls, runners and callback senders,
exports metrics), runs the reaper and answers RPCs.

Every change is written to the backend before it is acknowledged, and the
actor reloads the live jobs when it (re)starts, so an acknowledged job survives
a crash of this actor, of a runner, or of Ray itself (sqlite, redis). Memory
holds the live jobs (queued, running, or a callback due) and a bounded cache
of finished ones (jobs.cache_finished); the backend holds every job. Reads
and long-polls of a job in memory are served from it; any other job is read
from the backend and paged in (`_page_in`) before it is read or changed.
Listing and the reaper's search for due jobs are backend queries. Changes
are serialized by one lock (so a job's writes reach the backend in order, and
no page-in reads a record a change is writing) and written in a worker
thread, so reads of jobs in memory never wait on the disk.

Each job's event log (jobs/events.py) is written with its record; `events`
long-polls it for the SSE route, woken like `wait` by what the job's changes append.

A finished job expires after its ttl_s (result and input dropped, from the
backend and the blob store, status `expired`), stays that tombstone for `forget_after_s`, then is forgotten:
deleted from the backend and from memory. The reaper asks the backend for the
jobs whose step is due (REAP_BATCH a round), pages them in, and runs the state's `reap`.

Lifetime: the actor is detached. It outlives `serve delete` and `serve
shutdown` (jobs keep their state for the next deploy), and it follows the
settings of the newest deploy (`configure`, called by get_job_store on every
replica start; the newest settings are also kept in the backend, so a
restarted actor follows them too). `python -m longserve.server.actors` lists
and removes the detached actors.
"""

import asyncio
import builtins
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import time
from collections import Counter, defaultdict
from typing import Any, Optional

import ray

from longserve.api.jobs import PENDING
from longserve.server.actors import NAMESPACE
from longserve.server.config import BlobsConfig, JobsConfig
from longserve.server.jobs.backends import Filters, make_backend
from longserve.server.jobs.blob_keys import BlobDeleter
from longserve.server.jobs.events import JobEvent
from longserve.server.jobs.record import BlobRef, Callback, Job, JobRequest, loggable
from longserve.server.jobs.state import Change, JobState, Settings
from longserve.server.jobs.usage import RETAIN_S, Usage
from longserve.server.monitoring.metrics import Metrics
from longserve.server.quotas import TokenBucket

logger = logging.getLogger(__name__)

REAP_INTERVAL_S = 0.5
REAP_BATCH = 1000  # due jobs the reaper reads from the backend a round
EVENTS_PAGE = 200  # events per `events` answer
CHECKPOINT_RECHECK_S = 1.0  # a checkpoint waiting for its partials looks at the lease this often


def store_name(config: JobsConfig) -> str:
    """One store per backend location: a changed backend gets a new actor."""
    where = {"sqlite": config.sqlite_path, "redis": config.redis_url, "memory": ""}[config.backend]
    return f"jobstore-{config.backend}-{hashlib.sha256(where.encode()).hexdigest()[:10]}"


def get_job_store(config: JobsConfig, blobs: Optional[BlobsConfig] = None) -> "ray.actor.ActorHandle":
    """The store, created on first use, and sent `config` (kept if it is the newest deploy's).
    `blobs`: where the jobs' inputs and results are, so the store deletes them with the job."""
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
    store: Any = ray.remote(JobStore).options(**options).remote(config, blobs)
    store.configure.remote(config, config.deployed_ns, blobs)  # ordered before this caller's later calls
    return store


def fingerprint(request: JobRequest, body: bytes, metadata: dict, ttl_s: float, callback: Optional[Callback]) -> str:
    """What makes two submits "the same request" for an Idempotency-Key: everything the client sent."""
    head = json.dumps(
        [request.model_dump(mode="json"), metadata, ttl_s, callback and [callback.url, callback.events]],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(head.encode() + b"\0" + body).hexdigest()


def settings_of(config: JobsConfig) -> Settings:
    return Settings(
        lease_s=config.lease_s,
        max_attempts=config.max_attempts,
        forget_after_s=config.forget_after_s,
        cache_finished=config.cache_finished,
    )


class JobStore:
    def __init__(self, config: JobsConfig, blobs: Optional[BlobsConfig] = None):
        self.blobs = BlobDeleter(blobs)
        self.backend = make_backend(config.backend, config.sqlite_path, config.redis_url)
        # Ray restarts a crashed actor with the config it was first created with: a newer deploy's wins.
        self.config, self.deployed_ns = config, config.deployed_ns
        stored = self.backend.load_settings()
        if stored is not None and json.loads(stored)["deployed_ns"] > self.deployed_ns:
            stored_settings = json.loads(stored)
            self.deployed_ns = stored_settings.pop("deployed_ns")
            self.config = config.model_copy(update=stored_settings)
        self.state = JobState(settings_of(self.config))
        self.changed: dict[str, asyncio.Event] = {}  # job id -> its long-polls
        self.work = asyncio.Event()  # runners waiting to claim
        self.callback_work = asyncio.Event()  # callback senders waiting for a due callback
        self.lock = asyncio.Lock()
        self.reaper: Optional[asyncio.Task] = None
        self.buckets: dict[str, TokenBucket] = {}  # tenant -> its requests_per_s bucket (memory only)
        self.usage = Usage()  # GET /v1/usage (memory only)
        self.metrics = Metrics()
        loaded = self.state.load(self.backend.load_live(), time.time(), self.backend.last_seq())
        for job in loaded.deletes:
            self.backend.delete(job.id)  # its time to be forgotten passed while the store was down
        self.blobs.delete_jobs(job.id for job in loaded.deletes)
        self._publish(loaded)
        live = len(self.state.records)
        # Expiry and forgetting that fell due while no store ran, before any call: a forgotten job
        # answers 404 from the start. Leases wait for the reaper, as ever (a runner may still renew).
        reaped = 0
        while True:
            due = self.backend.due(time.time(), self.state.settings.forget_after_s, REAP_BATCH)
            self.state.page_in(due)
            change = self.state.reap(time.time(), leases=False)
            self._persist(change)
            self._apply(change)
            reaped += len(due)
            if len(due) < REAP_BATCH or change.empty:
                break
        logger.info(
            "job store %s loaded %d live jobs, deleted %d past their forget time, reaped %d",
            config.backend,
            live,
            len(loaded.deletes),
            reaped,
        )

    async def configure(self, config: JobsConfig, deployed_ns: int, blobs: Optional[BlobsConfig] = None) -> bool:
        """Follow a deploy's settings (lease_s, max_attempts, forget_after_s, the blob
        store) from now on, unless they are older than those in force (a replica of
        the previous deploy)."""
        self._start()
        async with self.lock:
            if blobs is not None and deployed_ns >= self.deployed_ns:
                self.blobs.configure(blobs)
            if deployed_ns <= self.deployed_ns:
                return False
            settings = settings_of(config)
            text = json.dumps({"deployed_ns": deployed_ns, **settings.__dict__})
            await asyncio.to_thread(self.backend.save_settings, text)
            self.config, self.deployed_ns = config, deployed_ns
            self.state.configure(settings)
            logger.info(
                "job store now uses lease_s=%g max_attempts=%d forget_after_s=%g",
                settings.lease_s,
                settings.max_attempts,
                settings.forget_after_s,
            )
            return True

    # -- client side ------------------------------------------------------------

    async def submit(
        self,
        job_id: str,
        model: str,
        request: JobRequest,
        body: Optional[bytes],
        metadata: dict,
        ttl_s: float,
        idempotency_key: Optional[str] = None,
        callback: Optional[Callback] = None,
        input: Optional[BlobRef] = None,
        tenant: str = "anonymous",
        max_active: Optional[int] = None,
    ) -> tuple[str, Optional[Job]]:
        """("created" | "existing" | "conflict" | "over_quota", job). Retried calls with the same id are no-ops.
        The input is either `body` (kept in the backend) or `input`, a blob the gateway streamed it
        into (body None; the fingerprint covers it by its sha256). Submits are serialized by the lock:
        a second submit under the same Idempotency-Key waits for the first to be stored, then replays
        it (or conflicts)."""
        self._start()
        content = body if input is None else input.sha256.encode()
        digest = fingerprint(request, content or b"", metadata, ttl_s, callback)
        async with self.lock:
            await self._page_in(job_id, None if idempotency_key is None else (tenant, model, idempotency_key))
            change = await self._commit(
                self.state.submit(
                    job_id,
                    model,
                    request,
                    body,
                    metadata,
                    ttl_s,
                    idempotency_key,
                    callback,
                    digest,
                    time.time(),
                    input=input,
                    tenant=tenant,
                    max_active=max_active,
                )
            )
            return change.outcome, change.job

    async def take(self, tenant: str, rate: float, burst: int) -> tuple[bool, float, int]:
        """Spend one of `tenant`'s request tokens: (allowed, seconds until the next, tokens left).
        Here so the limit holds across gateway replicas; kept in memory only."""
        now = time.monotonic()
        bucket = self.buckets.setdefault(tenant, TokenBucket.full(rate, burst, now))
        return bucket.take(rate, burst, now)

    async def record_usage(self, rows: "list[tuple[str, str, int, float]]") -> None:
        """A gateway's sync requests since its last call: (tenant, model, requests, model-seconds)."""
        now = time.time()
        for tenant, model, requests, seconds in rows:
            self.usage.add(tenant, model, now, requests=requests, seconds=seconds)

    async def usage_of(self, tenant: Optional[str], window_s: float) -> dict:
        """tenant -> model -> {jobs, requests, model_seconds} over the last window_s (whole minutes)."""
        return self.usage.report(tenant, time.time() - min(window_s, RETAIN_S))

    async def get(self, job_id: str) -> Optional[Job]:
        self._start()
        return await self._job(job_id)

    async def wait(self, job_id: str, timeout_s: float, until_finished: bool = False) -> Optional[Job]:
        """The job once it changes (or finishes), or as it is after timeout_s."""
        self._start()
        job = await self._job(job_id)
        deadline = time.monotonic() + timeout_s
        while job is not None and job.status in PENDING:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            seen = job.version
            event = self.changed.setdefault(job_id, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                break
            job = await self._job(job_id)  # a finished job may be evicted by now
            if job is not None and not until_finished and job.version != seen:
                break
        return job

    async def events(
        self, job_id: str, after: int, wait_s: float, limit: int = EVENTS_PAGE
    ) -> Optional[tuple[builtins.list[JobEvent], bool]]:
        """(the job's events with ids over `after`, oldest first, waiting up to wait_s for one;
        whether more may come). None: no such job, or it was erased. A `result` event carries
        the job's view as it is now, result included."""
        self._start()
        deadline = time.monotonic() + wait_s
        while True:
            job = await self._job(job_id)
            if job is None or job.erased:
                return None
            if job.events > after:
                break
            remaining = deadline - time.monotonic()
            if job.status not in PENDING or remaining <= 0:
                return [], job.status in PENDING
            event = self.changed.setdefault(job_id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)
        events = await asyncio.to_thread(self.backend.events, job_id, after, limit)
        job = await self._job(job_id)
        if job is None or job.erased:
            return None
        # Only what memory holds too: a change is written before it is applied, and a result
        # event is sent with the job's view, which must be the finished job's.
        events = [e for e in events if e.id <= job.events]
        last = events[-1].id if events else after
        view = job.view() if any(e.type == "result" for e in events) else None
        events = [dataclasses.replace(e, data=view) if e.type == "result" else e for e in events]
        return events, job.status in PENDING or last < job.events

    async def cancel(self, job_id: str) -> tuple[str, Optional[Job]]:
        """("cancelled" | "finished" | "missing", job). A running job's runner
        learns it at its next heartbeat and cancels the replica's work."""
        self._start()
        async with self.lock:
            await self._page_in(job_id)
            change = await self._commit(self.state.cancel(job_id, time.time()))
            return change.outcome, change.job

    async def erase(self, job_id: str) -> tuple[str, Optional[Job]]:
        """("erased" | "missing", the tombstone): the job's input, result and metadata deleted now
        (cancelled first if it was queued or running)."""
        self._start()
        async with self.lock:
            await self._page_in(job_id)
            before = self.state.get(job_id)
            change = await self._commit(self.state.erase(job_id, time.time()))
            if change.erased and before is not None:  # what happened, never what it held
                logger.info("job %s erased on request (it was %s)", loggable(job_id), before.status)
            return change.outcome, change.job

    async def retry(self, job_id: str, max_active: Optional[int] = None) -> tuple[str, Optional[Job]]:
        """("queued" | "not_retryable" | "over_quota" | "missing", job): a failed or cancelled job runs again."""
        self._start()
        async with self.lock:
            await self._page_in(job_id)
            change = await self._commit(self.state.retry(job_id, time.time(), max_active))
            return change.outcome, change.job

    async def list(
        self,
        model: Optional[str] = None,
        status: Optional[str] = None,
        limit: int = 50,
        cursor: Optional[int] = None,
        tenant: Optional[str] = None,
        created_after: Optional[float] = None,
        created_before: Optional[float] = None,
    ) -> tuple[list[Job], Optional[int]]:
        """Newest first; `cursor` is the seq to continue below. Asked of the backend: it holds every
        job, and every change is written there before it is applied."""
        self._start()
        filters = Filters(model, status, tenant, created_after, created_before)
        return await asyncio.to_thread(self.backend.list_jobs, filters, limit, cursor)

    async def backlog(self) -> dict[str, dict[str, int]]:
        self._start()
        return self.state.backlog()

    # -- runner side ------------------------------------------------------------

    async def claim(
        self,
        runner: str,
        limits: dict[str, int],
        wait_s: float,
        weights: Optional[dict[str, float]] = None,
        default_weight: float = 1.0,
    ) -> Optional[tuple[Job, Optional[bytes]]]:
        """A queued job of a model under its limit of running jobs (tenants take turns, by
        `weights`), now running under `runner`'s lease, with its body when the backend holds it
        (None when the input is a blob: the replica reads it); None if there is none within wait_s."""
        self._start()
        deadline = time.monotonic() + wait_s
        while True:
            work = self.work
            async with self.lock:
                change = self.state.claim(runner, limits, time.time(), weights, default_weight)
                if change.job is not None:
                    await self._commit(change)
                    if change.job.input is not None or change.job.request.input_url is not None:
                        return change.job, None
                    return change.job, await asyncio.to_thread(self.backend.body, change.job.id)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(work.wait(), remaining)
            except TimeoutError:
                return None

    async def heartbeat(self, job_id: str, runner: str, attempt: int, progress: Optional[dict] = None) -> bool:
        """Renew the lease (and record progress). False: stop, the job is no longer yours."""
        return await self._runner_call(self.state.heartbeat, job_id, runner, attempt, progress)

    async def finish(
        self,
        job_id: str,
        runner: str,
        attempt: int,
        status: str,
        result: Any = None,
        error: Optional[dict] = None,
        result_blob: Optional[BlobRef] = None,
    ) -> bool:
        """Store the outcome once; a runner whose lease was lost is ignored."""
        finish = functools.partial(self.state.finish, result_blob=result_blob)
        return await self._runner_call(finish, job_id, runner, attempt, status, result, error)

    async def release(self, job_id: str, runner: str, attempt: int, reason: str) -> bool:
        """Give the job back (its replica died): queued again, or failed after max_attempts."""
        return await self._runner_call(self.state.release, job_id, runner, attempt, reason)

    async def partials(self, job_id: str, runner: str, attempt: int, values: builtins.list) -> bool:
        """Append the model's partial outputs (ctx.emit) to the job's events. False: not your attempt."""
        return await self._runner_call(self.state.partials, job_id, runner, attempt, values)

    # -- the replica running a job (model_server.JobFence) ------------------------

    async def checkpoint(
        self, job_id: str, attempt: int, state: Any, done: Optional[float], emitted: Optional[int] = None
    ) -> bool:
        """Keep the model's state (and `done`, its last progress) with the job, durably, if `attempt`
        is the job's running attempt under a live lease; False: it is not (a stale attempt stops).
        With `emitted` (the partials the model emitted before it), first wait until they are all in
        the job's events: if its runner died, they never come, and the lease ends the wait (False)."""
        self._start()
        while True:
            changed = self.changed.setdefault(job_id, asyncio.Event())  # set by appended partials
            async with self.lock:
                plan = self.state.checkpoint(job_id, attempt, state, done, time.time(), emitted)
                if plan.outcome != "behind":
                    change = await self._commit(plan)
                    return change.outcome == "saved"
            with contextlib.suppress(TimeoutError):  # woken by news, or look at the lease again
                await asyncio.wait_for(changed.wait(), CHECKPOINT_RECHECK_S)

    async def is_current(self, job_id: str, attempt: int) -> bool:
        """Whether `attempt` still runs the job under a live lease; False: its replica stops."""
        self._start()
        return self.state.is_current(job_id, attempt, time.time())

    # -- callback delivery (runner side) ------------------------------------------

    async def claim_callbacks(self, runner: str, limit: int, lease_s: float, wait_s: float) -> builtins.list[Job]:
        """Finished jobs whose callback is due, each now leased to `runner` for
        lease_s: a runner that dies mid-delivery leaves it to another after that."""
        self._start()
        deadline = time.monotonic() + wait_s
        while True:
            work = self.callback_work
            async with self.lock:
                change = await self._commit(self.state.claim_callbacks(runner, limit, lease_s, time.time()))
            now, remaining = time.time(), deadline - time.monotonic()
            if change.saves or remaining <= 0:
                return [job for job, _ in change.saves]
            upcoming = self.state.next_callback_at()
            upcoming = now + remaining if upcoming is None else upcoming
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(work.wait(), max(min(remaining, upcoming - now), 0.01))

    async def record_callback(self, job_id: str, runner: str, callback: Callback) -> bool:
        """Store an attempt's outcome (`callback` as the runner updated it), if the runner still holds it."""
        self._start()
        async with self.lock:
            change = await self._commit(self.state.record_callback(job_id, runner, callback, time.time()))
            return change.outcome != "refused"

    # -- internals --------------------------------------------------------------

    def _start(self) -> None:
        # Called first by every public method: the reaper needs the actor's
        # running loop, which __init__ does not have.
        if self.reaper is None:
            self.reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def _runner_call(self, operation: Any, *args: Any) -> bool:
        self._start()
        async with self.lock:
            change = await self._commit(operation(*args, time.time()))
            return change.outcome != "refused"

    async def _job(self, job_id: str) -> Optional[Job]:
        """The job, from memory, else read from the backend (paged in)."""
        job = self.state.get(job_id)
        if job is None:
            async with self.lock:
                await self._page_in(job_id)
                job = self.state.get(job_id)
        return job

    async def _page_in(self, job_id: Optional[str], key: Optional[tuple[str, str, str]] = None) -> None:
        """Read into memory what an operation on `job_id` (or a submit under `key`: tenant, model,
        idempotency key) needs and only the backend holds: a finished job. Called under the lock,
        so no change is being written: the backend's record is the latest."""
        job_id = job_id if job_id is not None and job_id not in self.state.records else None
        key = key if key is not None and key not in self.state.idempotency else None
        if job_id is not None or key is not None:
            self.state.page_in(await asyncio.to_thread(self._fetch, job_id, key))

    def _fetch(self, job_id: Optional[str], key: Optional[tuple[str, str, str]]) -> builtins.list[Job]:
        found = [self.backend.get(job_id) if job_id is not None else None]
        found.append(self.backend.find_key(*key) if key is not None else None)
        return list({job.id: job for job in found if job is not None}.values())

    async def _commit(self, change: Change) -> Change:
        """Persist, then apply and publish: nobody sees a change the backend does not hold."""
        if not change.empty:
            await asyncio.to_thread(self._persist, change)
        return self._apply(change)

    def _apply(self, change: Change) -> Change:
        before = {job.id: self.state.get(job.id) for job, _ in change.saves}
        self.state.apply(change)
        self._count_usage(before, change)
        self._publish(change)
        # After the backend: a blob is deleted only once no record points at it.
        # An erased job's input and result go the same way, now.
        self.blobs.delete_jobs([*change.drop_bodies, *change.erased, *(job.id for job in change.deletes)])
        return change

    def _persist(self, change: Change) -> None:
        events: dict[str, builtins.list[JobEvent]] = {}
        for job_id, event in change.events:
            events.setdefault(job_id, []).append(event)
        for job, body in change.saves:
            self.backend.save(job, body, events.pop(job.id, []))
        for job_id in change.drop_bodies:
            self.backend.drop_body(job_id)
        for job_id in change.erased:
            self.backend.drop_events(job_id)
        for job in change.deletes:
            self.backend.delete(job.id)

    def _count_usage(self, before: dict, change: Change) -> None:
        now = time.time()
        for job, _ in change.saves:
            old = before[job.id]
            if old is None:
                self.usage.add(job.tenant, job.model, now, jobs=1)
            elif old.status == "running" and job.status not in PENDING and job.started_at is not None:
                # It ended: first start to end (a lost attempt's time counts; it held a replica too).
                self.usage.add(job.tenant, job.model, now, seconds=max(now - job.started_at, 0.0))

    def _publish(self, change: Change) -> None:
        for job_id in {*change.wake, *(job_id for job_id, _ in change.events)}:
            event = self.changed.pop(job_id, None)
            if event is not None:
                event.set()
        for job in change.deletes:
            self.changed.pop(job.id, None)
        for job_id, what in change.warnings:
            logger.warning("job %s %s", loggable(job_id), what)
        labels = self.config._tenant_labels
        for model, status, tenant in change.transitions:
            label = tenant if tenant in labels else "other"
            self.metrics.inc("longserve_job_transitions_total", model=model, status=status, tenant=label)
        for model in {model for model, *_ in change.transitions} | {job.model for job in change.deletes}:
            backlog: dict[str, Counter] = defaultdict(Counter)  # label -> status -> jobs
            for tenant, counts in self.state.tenant_counts[model].items():
                backlog[tenant if tenant in labels else "other"].update(counts)
            for label, counts in backlog.items():
                for state in ("queued", "running"):
                    self.metrics.set("longserve_jobs_backlog", counts[state], model=model, state=state, tenant=label)
        if change.wake_runners:
            self.work.set()
            self.work = asyncio.Event()
        if change.wake_callbacks:
            self.callback_work.set()
            self.callback_work = asyncio.Event()

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL_S)
            try:
                await self._reap()
            except Exception:  # keep reaping; the next round retries
                logger.exception("job store reaper failed")

    async def _reap(self) -> None:
        async with self.lock:
            now, forget_after_s = time.time(), self.state.settings.forget_after_s
            self.state.page_in(await asyncio.to_thread(self.backend.due, now, forget_after_s, REAP_BATCH))
            await self._commit(self.state.reap(now))
        self.blobs.retry_failed()
