"""The job lifecycle: a pure, synchronous state machine (no Ray, no asyncio,
no I/O, no clock: every operation is given `now`).

    submit ─▶ queued ─claim─▶ running ─finish─▶ succeeded | failed
                ▲ ▲              │
                │ └──────────────┘ lease lost or released: first in line again
                │                  (failed once max_attempts are spent)
                └─ retry ─ failed | cancelled ◀─ cancel ─ queued | running
    succeeded | failed | cancelled ─ttl_s─▶ expired ─forget_after_s─▶ forgotten
    any ─erase─▶ expired + erased (a tombstone: no input, result or metadata) ─forget_after_s─▶ forgotten

An operation does not change the state: it plans a `Change` (the records to
save or delete, who to wake, the transitions for metrics) and answers with it.
The caller persists the Change, then `apply`s it, so nothing is visible that
the backend does not hold, and a write that fails changes nothing. Every index
is kept by diffing a record's old version against its new one, in one place
(`_install`). A runner's calls count only while it holds the job's lease for
that attempt (`_owned`): a stale runner or attempt never wins.

Live jobs only: queued and running jobs, and finished ones whose callback is
still due, are always in memory with their indexes. A finished job is kept
only in a bounded LRU cache (`Settings.cache_finished`) and evicted beyond it;
the backend holds it, and the shell pages it in (`page_in`) before any
operation on it. The indexes hold live jobs only (counts are of queued and
running jobs), so paging a finished job in or evicting it changes no count.

Fair turns: each model keeps one FIFO queue per tenant. A claim takes the head
of the tenant with the lowest pass (claims / weight: stride scheduling); a tenant
that starts queueing again starts at the lowest pass of those already waiting,
so idle time banks no credit and a newcomer waits at most one turn per tenant.
"""

import heapq
import itertools
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Optional

from longserve.api.jobs import PENDING
from longserve.server.jobs.events import JobEvent, lifecycle
from longserve.server.jobs.record import BlobRef, Callback, Checkpoint, Job, JobRequest, Progress


@dataclass(frozen=True)
class Settings:
    lease_s: float = 30.0
    max_attempts: int = 3
    forget_after_s: float = 86400.0
    cache_finished: int = 10_000  # finished jobs kept in memory (LRU); the rest are read from the backend


@dataclass
class Change:
    """What an operation answers and what it changes; `apply` it once persisted."""

    base: int  # the state's version it was planned on
    outcome: str = ""  # the operation's answer: "created", "queued", "refused", ...
    job: Optional[Job] = None  # the job as the caller sees it afterwards
    saves: list[tuple[Job, Optional[bytes]]] = field(default_factory=list)  # (new record, a new job's input)
    deletes: list[Job] = field(default_factory=list)  # forgotten: record and input
    drop_bodies: list[str] = field(default_factory=list)  # expired: inputs no longer needed
    erased: list[str] = field(default_factory=list)  # erased on request: everything of theirs goes now
    wake: list[str] = field(default_factory=list)  # jobs whose long-polls see news
    events: list[tuple[str, JobEvent]] = field(default_factory=list)  # (job id, event) appended to its log
    wake_runners: bool = False  # a job became claimable, or a running slot freed
    wake_callbacks: bool = False  # a callback became due
    transitions: list[tuple[str, str, str]] = field(default_factory=list)  # (model, status entered, tenant)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (job id, what happened), for the log
    reaped_until: Optional[float] = None  # expiry entries due by then are consumed

    def save(
        self,
        old: Optional[Job],
        new: Job,
        visible: bool = True,
        body: Optional[bytes] = None,
        events: Iterable[tuple[str, Any]] = (),
    ) -> Job:
        # A bare lease renewal or callback lease is no news: long-polls keep waiting.
        if visible:
            new.version += 1  # new is a copy of old (or a new job at 0)
            self.wake.append(new.id)
        # The job's event log: what the change means, then what the caller adds (partials).
        for kind, data in [*lifecycle(old, new), *events]:
            new.events += 1
            self.events.append((new.id, JobEvent(new.events, kind, data)))
        self.saves.append((new, body))
        if old is None or old.status != new.status:
            self.transitions.append((new.model, new.status, new.tenant))
        entered_queue = new.status == "queued" and (old is None or old.status != "queued")
        self.wake_runners |= entered_queue or (old is not None and old.status == "running" != new.status)
        self.wake_callbacks |= callback_due(new) and (old is None or not callback_due(old))
        self.job = new
        return new

    @property
    def empty(self) -> bool:
        return not (self.saves or self.deletes or self.drop_bodies)


def callback_of(job: Job) -> Callback:
    """The callback of a job that has one (every job in callbacks_due does)."""
    assert job.callback is not None, job.id
    return job.callback


def callback_due(job: Job) -> bool:
    """The job ended and its completion callback is not yet delivered (or given up)."""
    return job.callback is not None and job.callback.status == "pending" and job.status not in PENDING


def live(job: Job) -> bool:
    """Always in memory: queued or running, or finished with its callback still to send."""
    return job.status in PENDING or callback_due(job)


def due_entries(heap: list[tuple[float, str]], now: float) -> list[tuple[float, str]]:
    """A heap's entries due by `now`, read without popping them: they form a subtree at its root."""
    out, stack = [], [0] if heap else []
    while stack:
        index = stack.pop()
        if index < len(heap) and heap[index][0] <= now:
            out.append(heap[index])
            stack += [2 * index + 1, 2 * index + 2]
    return out


class JobState:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.version = 0  # bumped by every apply: a Change applies only to the state it was planned on
        self.records: dict[str, Job] = {}  # every live job, and the cached finished ones
        self.cache: OrderedDict[str, None] = OrderedDict()  # the finished ones in records, least recent first
        self.last_seq = 0
        # model -> tenant -> FIFO of its queued jobs; a non-empty queue's head is always a queued job.
        self.queues: dict[str, dict[str, deque[str]]] = defaultdict(lambda: defaultdict(deque))
        self.passes: dict[str, dict[str, float]] = defaultdict(dict)  # model -> tenant -> claims / weight
        self.running: set[str] = set()  # the leases to watch
        # model -> status (queued, running) -> jobs; finished jobs are not counted (most are not in memory)
        self.counts: dict[str, Counter] = defaultdict(Counter)
        self.tenant_counts: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))  # per tenant
        self.active: Counter = Counter()  # tenant -> its queued and running jobs (max_active_jobs)
        # (tenant, model, key) -> job id, of the jobs in memory with a key (the backend has the others')
        self.idempotency: dict[tuple[str, str, Optional[str]], str] = {}
        self.callbacks_due: set[str] = set()
        # (when, id): a finished job in memory's next step, expiring and then being forgotten.
        # Entries may be stale (the job was retried or evicted); `reap` checks the job itself.
        self.expiry: list[tuple[float, str]] = []

    # -- loading and settings ---------------------------------------------------------

    def load(self, records: Iterable[Job], now: float, last_seq: int = 0) -> Change:
        """Take in the backend's live records (a fresh state); `last_seq` is the highest seq it holds.
        The Change's deletes are jobs whose forget time passed while no store ran: delete them; there
        is nothing to apply."""
        change = Change(self.version)
        self.last_seq = last_seq
        for job in sorted(records, key=lambda j: j.seq):
            forget_at = self.forget_at(job)
            if forget_at is not None and forget_at <= now:
                change.deletes.append(job)
                continue
            self._install(None, job)
            change.transitions.append((job.model, job.status, job.tenant))
        self.version += 1
        return change

    def configure(self, settings: Settings) -> None:
        """New settings take effect at once: new leases, attempts and forget times use them."""
        forget_changed = settings.forget_after_s != self.settings.forget_after_s
        self.settings = settings
        if forget_changed:  # every finished job's next step moves (the backend's are asked with the new one)
            self._rebuild_expiry()
        self.shrink()

    # -- the finished jobs in memory ------------------------------------------------------

    def page_in(self, jobs: Iterable[Job]) -> None:
        """Cache finished jobs read from the backend (those already in memory are newer, kept).
        They count nowhere, as when evicted; the cache is then trimmed, keeping all of them
        (the caller is about to use them: the reaper, a batch)."""
        wanted = set()
        for job in jobs:
            wanted.add(job.id)
            if job.id not in self.records:
                assert not live(job), job.id  # a live job is never evicted
                self._install(None, job)
        self.shrink(keep=wanted)

    def shrink(self, keep: Iterable[str] = ()) -> None:
        """Evict the least recently used finished jobs beyond cache_finished (but those in `keep`)."""
        keep = set(keep)
        excess = len(self.cache) - self.settings.cache_finished
        for job_id in list(itertools.islice(self.cache, max(excess, 0) + len(keep))):
            if excess <= 0:
                break
            if job_id not in keep:
                self.evict(job_id)
                excess -= 1

    def evict(self, job_id: str) -> None:
        """Drop a finished job from memory (the backend keeps it)."""
        job = self.records.pop(job_id)
        del self.cache[job_id]
        key = (job.tenant, job.model, job.idempotency_key)
        if self.idempotency.get(key) == job_id:
            del self.idempotency[key]
        if len(self.expiry) > 2 * len(self.records) + 64:  # mostly evicted jobs' entries: O(1) a job on average
            self._rebuild_expiry()

    def _rebuild_expiry(self) -> None:
        self.expiry = [(due, i) for i, job in self.records.items() if (due := self.next_step_at(job)) is not None]
        heapq.heapify(self.expiry)

    # -- reads --------------------------------------------------------------------------

    def get(self, job_id: str) -> Optional[Job]:
        """The job if it is in memory (a finished one may be in the backend only)."""
        if job_id in self.cache:
            self.cache.move_to_end(job_id)
        return self.records.get(job_id)

    def backlog(self) -> dict[str, dict[str, int]]:
        return {model: {"queued": c["queued"], "running": c["running"]} for model, c in self.counts.items()}

    def next_callback_at(self) -> Optional[float]:
        return min((callback_of(self.records[i]).next_attempt_at or 0.0 for i in self.callbacks_due), default=None)

    # -- client side ----------------------------------------------------------------------

    def submit(
        self,
        job_id: str,
        model: str,
        request: JobRequest,
        body: Optional[bytes],
        metadata: dict,
        ttl_s: float,
        idempotency_key: Optional[str],
        callback: Optional[Callback],
        body_sha256: str,
        now: float,
        tenant: str = "anonymous",
        max_active: Optional[int] = None,
        input: Optional[BlobRef] = None,
    ) -> Change:
        """outcome "created" | "existing" (the same id, or key and request) | "conflict" (the key, another
        request) | "over_quota" (the tenant has max_active queued and running jobs; nothing stored).
        `body_sha256` fingerprints the whole request; keys are scoped to (tenant, model). The input is
        `body` (kept in the backend) or `input`, a blob the gateway streamed it into."""
        change = Change(self.version)
        if job_id in self.records:
            change.outcome, change.job = "existing", self.records[job_id]
            return change
        existing = self.idempotency.get((tenant, model, idempotency_key)) if idempotency_key is not None else None
        if existing is not None:
            change.job = self.records[existing]
            change.outcome = "existing" if change.job.body_sha256 == body_sha256 else "conflict"
            return change
        if max_active is not None and self.active[tenant] >= max_active:
            change.outcome = "over_quota"
            return change
        job = Job(
            id=job_id,
            seq=self.last_seq + 1,
            model=model,
            tenant=tenant,
            request=request,
            metadata=metadata,
            ttl_s=ttl_s,
            created_at=now,
            max_attempts=self.settings.max_attempts,
            idempotency_key=idempotency_key,
            body_sha256=body_sha256,
            callback=callback,
            input=input,
        )
        change.outcome = "created"
        change.save(None, job, body=body)
        return change

    def cancel(self, job_id: str, now: float) -> Change:
        """outcome "cancelled" | "finished" | "missing". A running job's runner learns it at its next heartbeat."""
        change, job = Change(self.version), self.records.get(job_id)
        if job is None:
            change.outcome = "missing"
        elif job.status not in PENDING:
            change.outcome, change.job = "finished", job
        else:
            change.outcome = "cancelled"
            self._finish(
                change, job, "cancelled", None, {"type": "cancelled", "message": "cancelled by the client"}, now
            )
        return change

    def erase(self, job_id: str, now: float) -> Change:
        """outcome "erased" | "missing": delete the job's input, result and metadata now, leaving a
        tombstone (status expired, erased) until forget_after_s. A queued or running job is cancelled
        by it (a running job's runner learns it at its next heartbeat). Erasing twice changes nothing."""
        change, job = Change(self.version), self.records.get(job_id)
        if job is None:
            change.outcome = "missing"
            return change
        change.outcome, change.job = "erased", job
        if job.erased:
            return change
        change.save(
            job,
            Job(
                id=job.id,
                seq=job.seq,
                model=job.model,
                tenant=job.tenant,
                status="expired",
                erased=True,
                request=JobRequest(media_type=""),
                ttl_s=job.ttl_s,
                attempts=job.attempts,
                max_attempts=job.max_attempts,
                created_at=job.created_at,
                started_at=job.started_at,
                finished_at=job.finished_at or now,
                expires_at=now,
                version=job.version,
            ),
        )
        change.drop_bodies.append(job_id)  # the input; the store's hook also deletes the job's blobs
        change.erased.append(job_id)
        return change

    def retry(self, job_id: str, now: float, max_active: Optional[int] = None) -> Change:
        """outcome "queued" | "not_retryable" | "over_quota" | "missing": a failed or cancelled job
        runs again, unless its tenant already has max_active queued and running jobs."""
        change, job = Change(self.version), self.records.get(job_id)
        if job is None:
            change.outcome = "missing"
        elif job.status not in ("failed", "cancelled"):
            change.outcome, change.job = "not_retryable", job
        elif max_active is not None and self.active[job.tenant] >= max_active:
            change.outcome, change.job = "over_quota", job
        else:
            change.outcome = "queued"
            change.save(
                job,
                job.model_copy(
                    update=dict(
                        status="queued",
                        error=None,
                        result=None,
                        result_blob=None,
                        finished_at=None,
                        expires_at=None,
                        started_at=None,
                        progress=Progress(),
                        max_attempts=job.attempts + self.settings.max_attempts,
                    )
                ),
            )
        return change

    # -- runner side ------------------------------------------------------------------------

    def claim(
        self,
        runner: str,
        limits: dict[str, int],
        now: float,
        weights: Optional[dict[str, float]] = None,
        default_weight: float = 1.0,
    ) -> Change:
        """A queued job of a model under its limit of running jobs, now running under
        `runner`'s lease (change.job); None when there is none. Per model, the head of
        the waiting tenant whose turn it is (`next_turn`); across models, the oldest of those."""
        change, best = Change(self.version), None
        for model, limit in limits.items():
            if self.counts[model]["running"] < limit and (tenant := self.next_turn(model)) is not None:
                head = self.records[self.queues[model][tenant][0]]
                if best is None or head.seq < best.seq:
                    best = head
        if best is not None:
            weight = (weights or {}).get(best.tenant, default_weight)
            passes = self.passes[best.model]
            passes[best.tenant] = passes.get(best.tenant, 0.0) + 1 / weight  # in memory: a restart starts even
            change.outcome = "claimed"
            change.save(
                best,
                best.model_copy(
                    update=dict(
                        status="running",
                        attempts=best.attempts + 1,
                        started_at=best.started_at or now,
                        lease_owner=runner,
                        lease_expires_at=now + self.settings.lease_s,
                        # A later attempt resumes from the last checkpoint, and says where from.
                        resumed_from=best.checkpoint.done if best.checkpoint is not None else None,
                        partials=0,
                    )
                ),
            )
        return change

    def heartbeat(self, job_id: str, runner: str, attempt: int, progress: Optional[dict], now: float) -> Change:
        """Renew the lease (and record progress). outcome "refused": stop, the job is no longer yours."""
        change, job = Change(self.version), self._owned(job_id, runner, attempt)
        if job is None:
            change.outcome = "refused"
            return change
        update: dict[str, Any] = {"lease_expires_at": now + self.settings.lease_s}
        if progress is not None:
            update["progress"] = Progress(**progress)
        change.outcome = "renewed"
        change.save(job, job.model_copy(update=update), visible=progress is not None)
        return change

    def partials(self, job_id: str, runner: str, attempt: int, values: Iterable[Any], now: float) -> Change:
        """Append the model's partial outputs to the job's events. outcome "refused": not your attempt."""
        change, job = Change(self.version), self._owned(job_id, runner, attempt)
        if job is None:
            change.outcome = "refused"
            return change
        values = list(values)
        change.outcome = "appended"
        update = {"partials": job.partials + len(values)}
        change.save(job, job.model_copy(update=update), visible=False, events=[("partial", v) for v in values])
        return change

    def checkpoint(
        self, job_id: str, attempt: int, state: Any, done: Optional[float], now: float, emitted: Optional[int] = None
    ) -> Change:
        """Keep the model's state with the job. outcome "refused" unless `attempt` is current (is_current);
        "behind" (nothing saved: ask again) while fewer than `emitted` of its partials, those the model
        emitted before this checkpoint, are in the job's events: a later attempt resumes from a checkpoint
        only once every partial before it was stored, so a watcher misses none."""
        change = Change(self.version)
        if not self.is_current(job_id, attempt, now):
            change.outcome = "refused"
            return change
        job = self.records[job_id]
        if emitted is not None and job.partials < emitted:
            change.outcome = "behind"
            return change
        change.outcome = "saved"
        update = {"checkpoint": Checkpoint(state=state, done=done, attempt=attempt)}
        change.save(job, job.model_copy(update=update), visible=False)
        return change

    def is_current(self, job_id: str, attempt: int, now: float) -> bool:
        """The job runs `attempt` under a live lease: the replica running it goes on (model_server.JobFence)."""
        job = self.records.get(job_id)
        return (
            job is not None
            and job.status == "running"
            and job.attempts == attempt
            and job.lease_expires_at is not None
            and job.lease_expires_at >= now
        )

    def finish(
        self,
        job_id: str,
        runner: str,
        attempt: int,
        status: str,
        result: Any,
        error: Optional[dict],
        now: float,
        result_blob: Optional[BlobRef] = None,
    ) -> Change:
        """Store the outcome once; a runner whose lease was lost is refused."""
        change, job = Change(self.version), self._owned(job_id, runner, attempt)
        if job is None:
            change.outcome = "refused"
            return change
        if status == "succeeded" and job.progress.total:
            job = job.model_copy(update={"progress": job.progress.model_copy(update={"done": job.progress.total})})
        change.outcome = "finished"
        self._finish(change, job, status, result, error, now, old=self.records[job_id], result_blob=result_blob)
        return change

    def release(self, job_id: str, runner: str, attempt: int, reason: str, now: float) -> Change:
        """Give the job back (its replica died): queued again, or failed after max_attempts."""
        change, job = Change(self.version), self._owned(job_id, runner, attempt)
        if job is None:
            change.outcome = "refused"
            return change
        change.outcome = "released"
        self._requeue_or_fail(change, job, reason, now)
        return change

    def reap(self, now: float, leases: bool = True) -> Change:
        """Time passing: leases that ended give their jobs back (unless `leases` is False);
        finished jobs whose time came expire, and expired ones are forgotten."""
        change = Change(self.version, reaped_until=now)
        for job_id in sorted(self.running) if leases else ():
            job = self.records[job_id]
            if job.lease_expires_at is not None and job.lease_expires_at < now:
                reason = f"its runner stopped renewing the lease ({self.settings.lease_s:g} s)"
                self._requeue_or_fail(change, job, reason, now)
        seen = set()
        for _, job_id in sorted(due_entries(self.expiry, now)):
            record = self.records.get(job_id)
            due = None if record is None else self.next_step_at(record)
            if record is None or job_id in seen or due is None or due > now:
                continue  # stale: the job was retried (its new entry is queued) or is gone
            seen.add(job_id)
            if record.status == "expired":
                change.deletes.append(record)
            else:  # the input goes too (and again with the record, should dropping it fail now)
                update = dict(status="expired", result=None, result_blob=None, checkpoint=None)
                expired = change.save(record, record.model_copy(update=update))
                change.drop_bodies.append(job_id)
                forget_at = self.forget_at(expired)
                if forget_at is not None and forget_at <= now:  # the reaper came late: both steps were due
                    change.deletes.append(expired)
        return change

    # -- callback delivery ---------------------------------------------------------------------

    def claim_callbacks(self, runner: str, limit: int, lease_s: float, now: float) -> Change:
        """Due callbacks (change.saves), each now leased to `runner` until now + lease_s."""
        change = Change(self.version)
        due = sorted(
            (
                self.records[i]
                for i in self.callbacks_due
                if (callback_of(self.records[i]).next_attempt_at or 0.0) <= now
            ),
            key=lambda j: (callback_of(j).next_attempt_at or 0.0, j.seq),
        )
        for job in due[:limit]:
            callback = callback_of(job).model_copy(update=dict(owner=runner, next_attempt_at=now + lease_s))
            change.save(job, job.model_copy(update={"callback": callback}), visible=False)
        return change

    def record_callback(self, job_id: str, runner: str, callback: Callback, now: float) -> Change:
        """Store an attempt's outcome (`callback` as the runner updated it), if the runner still holds it."""
        change, job = Change(self.version), self.records.get(job_id)
        if job is None or job.callback is None or job.callback.owner != runner or job_id not in self.callbacks_due:
            change.outcome = "refused"
            return change
        change.outcome = "recorded"
        change.save(job, job.model_copy(update={"callback": callback.model_copy(update={"owner": None})}))
        return change

    # -- applying a persisted change -----------------------------------------------------------

    def apply(self, change: Change) -> None:
        if change.base != self.version:
            raise RuntimeError("a Change applies only to the state it was planned on")
        self.version += 1
        if change.reaped_until is not None:
            while self.expiry and self.expiry[0][0] <= change.reaped_until:
                heapq.heappop(self.expiry)
        for job, _ in change.saves:
            self._install(self.records.get(job.id), job)
        for job in change.deletes:
            self._remove(job)
        self.shrink()

    def _install(self, old: Optional[Job], new: Job) -> None:
        """Put a record's new version in, and every index in step with it."""
        self.records[new.id] = new
        if live(new):
            self.cache.pop(new.id, None)
        else:
            self.cache[new.id] = None
            self.cache.move_to_end(new.id)
        if old is None:
            self.last_seq = max(self.last_seq, new.seq)
            if new.idempotency_key is not None:
                self.idempotency[(new.tenant, new.model, new.idempotency_key)] = new.id
        else:
            if old.status in PENDING:
                self.counts[old.model][old.status] -= 1
                self.tenant_counts[old.model][old.tenant][old.status] -= 1
                self.active[old.tenant] -= 1
            key = (old.tenant, old.model, old.idempotency_key)
            if new.idempotency_key is None and self.idempotency.get(key) == old.id:
                del self.idempotency[key]  # erased: the key is free
        if new.status in PENDING:
            self.counts[new.model][new.status] += 1
            self.tenant_counts[new.model][new.tenant][new.status] += 1
            self.active[new.tenant] += 1
        if new.status == "running":
            self.running.add(new.id)
        else:
            self.running.discard(new.id)
        was_queued = old is not None and old.status == "queued"
        if new.status == "queued" and not was_queued:
            queue = self._trim(new.model, new.tenant)
            if not queue:  # the tenant starts waiting: at the lowest pass of those waiting, no banked credit
                passes, waiting = self.passes[new.model], self.waiting(new.model)
                floor = min((passes.get(t, 0.0) for t in waiting), default=passes.get(new.tenant, 0.0))
                passes[new.tenant] = max(passes.get(new.tenant, 0.0), floor)
            queue.appendleft(new.id) if old is not None and old.status == "running" else queue.append(new.id)
        elif was_queued and new.status != "queued":
            self._trim(new.model, new.tenant)
        if callback_due(new):
            self.callbacks_due.add(new.id)
        else:
            self.callbacks_due.discard(new.id)
        due = self.next_step_at(new)
        if due is not None and (old is None or due != self.next_step_at(old)):
            heapq.heappush(self.expiry, (due, new.id))

    def _remove(self, job: Job) -> None:
        """Forget a job: its id is unknown from now on, its idempotency key free."""
        del self.records[job.id]
        self.cache.pop(job.id, None)
        if job.status in PENDING:  # never, today: only expired jobs are forgotten
            self.counts[job.model][job.status] -= 1
            self.tenant_counts[job.model][job.tenant][job.status] -= 1
            self.active[job.tenant] -= 1
        key = (job.tenant, job.model, job.idempotency_key)
        if self.idempotency.get(key) == job.id:
            del self.idempotency[key]
        self.callbacks_due.discard(job.id)  # a callback still being retried has nothing left to send

    def _trim(self, model: str, tenant: str) -> deque:
        # Entries of jobs no longer queued (claimed, cancelled) leave once they reach the head.
        queue = self.queues[model][tenant]
        while queue and (queue[0] not in self.records or self.records[queue[0]].status != "queued"):
            queue.popleft()
        return queue

    def waiting(self, model: str) -> tuple[str, ...]:
        """The tenants with queued jobs of `model`."""
        return tuple(tenant for tenant, queue in self.queues[model].items() if queue)

    def next_turn(self, model: str) -> Optional[str]:
        """Whose job of `model` is claimed next: the lowest pass, then the oldest head."""
        passes = self.passes[model]
        return min(
            self.waiting(model),
            default=None,
            key=lambda t: (passes.get(t, 0.0), self.records[self.queues[model][t][0]].seq),
        )

    # -- helpers ---------------------------------------------------------------------------------

    def forget_at(self, job: Job) -> Optional[float]:
        """When a finished job is forgotten: forget_after_s after it expires; None while it is pending."""
        if job.status in PENDING or job.expires_at is None:
            return None
        return job.expires_at + self.settings.forget_after_s

    def next_step_at(self, job: Job) -> Optional[float]:
        """When a finished job expires, or an expired one is forgotten; None while it is pending."""
        forget_at = self.forget_at(job)
        if forget_at is None or job.status == "expired":
            return forget_at
        return job.expires_at

    def _owned(self, job_id: str, runner: str, attempt: int) -> Optional[Job]:
        job = self.records.get(job_id)
        if job is None or job.status != "running" or job.lease_owner != runner or job.attempts != attempt:
            return None
        return job

    def _finish(
        self,
        change: Change,
        job: Job,
        status: str,
        result: Any,
        error: Optional[dict],
        now: float,
        old: Optional[Job] = None,
        result_blob: Optional[BlobRef] = None,
    ) -> None:
        update = dict(
            status=status,
            result=result,
            result_blob=result_blob,
            error=error,
            finished_at=now,
            expires_at=now + job.ttl_s,
            lease_owner=None,
            lease_expires_at=None,
        )
        if job.callback is not None:  # due now, from its first attempt (a retried job's ending is news again)
            update["callback"] = job.callback.model_copy(
                update=dict(
                    status="pending",
                    attempts=0,
                    last_status=None,
                    last_error=None,
                    delivered_at=None,
                    next_attempt_at=now,
                    owner=None,
                )
            )
        change.save(old or job, job.model_copy(update=update))

    def _requeue_or_fail(self, change: Change, job: Job, reason: str, now: float) -> None:
        if job.attempts >= job.max_attempts:
            self._finish(
                change,
                job,
                "failed",
                None,
                {
                    "type": "attempts_exhausted",
                    "message": f"gave up after {job.attempts} attempts; the last ended because {reason}",
                },
                now,
            )
            return
        change.warnings.append((job.id, f"attempt {job.attempts} lost ({reason}); queued again"))
        change.save(job, job.model_copy(update=dict(status="queued", lease_owner=None, lease_expires_at=None)))
