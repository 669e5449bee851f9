"""The job lifecycle on its own (server/jobs/state.py): random interleavings of
submits (with and without idempotency keys), claims by several runners,
heartbeats, partial outputs, checkpoints, finishes and releases by current
and stale runners or attempts,
runner crashes (a runner just stops), cancels, retries, callback deliveries,
time passing (lease expiry, expiry, forgetting), new settings and store
restarts, against a MemoryBackend written before each change is applied, as
the actor does; a restart rebuilds the state from the live jobs that backend holds.
Memory keeps only live jobs and a cache of 2 finished ones: the others are
evicted all the time, and, as the actor does, each operation on a job first
pages it in from the backend (by id, by idempotency key, or as due).

After every step: no acknowledged job is lost, every live job is in memory,
memory is a subset of the backend (equal where present), the cache is bounded,
every index agrees with a recomputation from the live records, listings agree
with a recomputation from the backend, and each job's
event log (ids 1, 2, ...) tells its lifecycle in order. Each step checks
that a finished job's outcome never changes (but by a retry or its expiry)
and that a call by a runner or attempt not holding the lease changes nothing.
300 examples x 50 steps: 15,000 steps, ~15 s of CPU.
"""

from collections import Counter

from hypothesis import event, given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from longserve.api.jobs import PENDING
from longserve.server.jobs.backends import Filters, MemoryBackend
from longserve.server.jobs.events import MAX_EVENTS, JobEvent
from longserve.server.jobs.record import Callback, Job, JobRequest
from longserve.server.jobs.state import Change, JobState, Settings, callback_due, live

REQUEST = JobRequest(media_type="application/json")
MODELS = ("a", "b")
TENANTS = ("t1", "t2", "t3")
WEIGHTS = {"t1": 2.0}  # the others: 1
LIMITS = {"a": 2, "b": 1}
RUNNERS = 2  # live at a time: one often claims again a job it lost, under a new attempt
FINISHED = ("succeeded", "failed", "cancelled")
CACHE = 2  # finished jobs in memory: most are evicted, and paged in again when used
index = st.integers(min_value=0, max_value=1000)


def outcome(job) -> tuple:
    return job.status, job.result, job.error, job.finished_at


class Lifecycle(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.now = 1000.0
        self.settings = Settings(lease_s=10.0, max_attempts=2, forget_after_s=50.0, cache_finished=CACHE)
        self.backend = MemoryBackend()
        self.state = JobState(self.settings)
        self.state.load(self.backend.load_live(), self.now, self.backend.last_seq())
        self.acknowledged: set[str] = set()  # created and not (yet) forgotten
        self.ids: list[str] = []  # every id ever submitted, forgotten ones too
        self.leases: list[tuple[str, str, int]] = []  # (job, runner, attempt) of every claim, stale ones too
        self.callback_leases: list[tuple[str, str]] = []
        self.runners = [f"r{n}" for n in range(RUNNERS)]
        self.crashed: set[str] = set()  # runners that stopped: they never call again
        self.logs: dict[str, list[JobEvent]] = {}  # every event each change appended, per job

    def page_in(self, job_id: "str | None", key: "tuple[str, str, str] | None" = None) -> None:
        """As the actor does before an operation on a job: read what only the backend holds."""
        found = [self.backend.get(job_id) if job_id is not None and job_id not in self.state.records else None]
        if key is not None and key[2] is not None and key not in self.state.idempotency:
            found.append(self.backend.find_key(*key))
        self.state.page_in([job for job in found if job is not None])

    def fetch(self, job_id: str) -> "Job | None":
        """A read (get, wait, events): from memory, else paged in."""
        self.page_in(job_id)
        return self.state.get(job_id)

    def stored(self) -> dict[str, Job]:
        return {job.id: job for job in self.backend.load()}

    def commit(self, change: Change, retrying: bool = False) -> Change:
        """As the actor does: persist, then apply; checking what may change."""
        for new, _ in change.saves:
            old = self.state.get(new.id)
            if old is not None and old.status in FINISHED and new.status != "expired":
                assert outcome(new) == outcome(old) or (retrying and new.status == "queued"), (old, new)
            if old is not None and old.status == "expired" and not (new.erased and not old.erased):
                assert outcome(new) == outcome(old)
            if old is not None and old.erased:  # a tombstone never changes
                assert new.model_dump(exclude={"version"}) == old.model_dump(exclude={"version"})
        for job in change.deletes:
            assert job.status == "expired" and self.state.forget_at(job) <= self.now
        appended: dict[str, list[JobEvent]] = {}
        for job_id, new_event in change.events:
            appended.setdefault(job_id, []).append(new_event)
            self.logs.setdefault(job_id, []).append(new_event)
        for new, body in change.saves:
            self.backend.save(new, body, appended.pop(new.id, []))
        for job_id in change.drop_bodies:
            self.backend.drop_body(job_id)
        for job_id in change.erased:
            self.backend.drop_events(job_id)
            self.logs.pop(job_id, None)
        for job in change.deletes:
            self.backend.delete(job.id)
            self.acknowledged.discard(job.id)
            self.logs.pop(job.id, None)
        self.state.apply(change)
        return change

    def refused(self, change: Change) -> None:
        """A non-owner's call: refused, and nothing to persist, wake or count."""
        event("a stale runner or attempt refused")
        assert change.outcome == "refused"
        assert change.empty and not change.wake and not change.transitions and not change.wake_runners
        assert not change.events
        self.commit(change)

    def lease(self, i: int, live: bool) -> "tuple[str, str, int] | None":
        """A lease a live runner was granted: one it still holds when `live`, else one it lost (if any)."""
        leases = [lease for lease in self.leases if lease[1] not in self.crashed]
        held = [lease for lease in leases if self.holds(*lease)]
        lost = [lease for lease in leases if not self.holds(*lease)]
        pool = (held if live else lost) or leases
        return pool[i % len(pool)] if pool else None

    def holds(self, job_id: str, runner: str, attempt: int) -> bool:
        job = self.state.get(job_id)
        return job is not None and job.status == "running" and job.lease_owner == runner and job.attempts == attempt

    # -- client side ------------------------------------------------------------------

    @initialize(jobs=st.integers(1, 6), claims=st.integers(0, 3))
    def some_jobs_running(self, jobs, claims):
        """Work from the first step on, whichever rules this example draws."""
        for n in range(jobs):
            self.submit(MODELS[n % 2], TENANTS[n % 3], None, b"x", 30.0, n % 3 == 0)
        for n in range(claims):
            self.claim(n % RUNNERS)

    @rule(
        model=st.sampled_from(MODELS),
        tenant=st.sampled_from(TENANTS),
        key=st.sampled_from([None, "k1", "k2"]),
        body=st.sampled_from([b"x", b"y"]),
        ttl_s=st.sampled_from([5.0, 30.0]),
        with_callback=st.booleans(),
        max_active=st.sampled_from([None, None, 1, 3]),
    )
    def submit(self, model, tenant, key, body, ttl_s, with_callback, max_active=None):
        job_id = f"j{len(self.ids)}"
        holder = key and self.backend.find_key(tenant, model, key)  # a key is scoped to (tenant, model)
        mapped = holder.id if holder else None
        active = sum(j.tenant == tenant and j.status in PENDING for j in self.stored().values())
        callback = Callback(url="https://example.com/hook") if with_callback else None
        self.page_in(job_id, (tenant, model, key))
        change = self.commit(
            self.state.submit(
                job_id, model, REQUEST, body, {}, ttl_s, key, callback, body.decode(), self.now, tenant, max_active
            )
        )
        if mapped is None and max_active is not None and active >= max_active:
            event("over the tenant's max_active_jobs")
            assert change.outcome == "over_quota" and change.job is None and change.empty and not change.wake
        elif mapped is None:
            assert change.outcome == "created" and change.job.status == "queued" and change.job.version == 1
            assert change.job.tenant == tenant
            self.ids.append(job_id)
            self.acknowledged.add(job_id)
            assert self.backend.body(job_id) == body
        else:  # the key's job, whether its body matches or not; nothing new
            assert change.job.id == mapped and change.job.tenant == tenant and change.empty
            assert change.outcome == ("existing" if change.job.body_sha256 == body.decode() else "conflict")

    @rule(i=index)
    def submit_again(self, i):
        """A resent submit (same id) is answered with the job as it is."""
        if self.ids:
            job_id = self.ids[i % len(self.ids)]
            if job_id in self.acknowledged:
                self.page_in(job_id)
                change = self.commit(self.state.submit(job_id, "a", REQUEST, b"z", {}, 5.0, None, None, "z", self.now))
                assert change.outcome == "existing" and change.job is self.state.get(job_id) and change.empty

    @rule(i=index)
    def cancel(self, i):
        if not self.ids:
            return
        job_id = self.ids[i % len(self.ids)]
        before = self.backend.get(job_id)
        self.page_in(job_id)
        change = self.commit(self.state.cancel(job_id, self.now))
        if before is None:
            assert change.outcome == "missing"
        elif before.status in PENDING:
            assert change.outcome == "cancelled" and change.job.status == "cancelled"
            assert change.job.lease_owner is None and change.job.expires_at == self.now + before.ttl_s
        else:
            assert change.outcome == "finished" and change.empty

    @rule(i=index)
    def erase(self, i):
        if not self.ids:
            return
        job_id = self.ids[i % len(self.ids)]
        before = self.backend.get(job_id)
        self.page_in(job_id)
        change = self.commit(self.state.erase(job_id, self.now))
        if before is None:
            assert change.outcome == "missing" and change.empty
            return
        event("erased")
        job = self.fetch(job_id)
        assert change.outcome == "erased" and job.erased and job.status == "expired"
        assert (job.result, job.error, job.metadata, job.request.params, job.callback, job.idempotency_key) == (
            None,
            None,
            {},
            {},
            None,
            None,
        )
        assert job_id not in self.backend.bodies and job.tenant == before.tenant
        assert before.erased or change.erased == [job_id]

    @rule(i=index, max_active=st.sampled_from([None, None, 1, 3]))
    def retry(self, i, max_active):
        if not self.ids:
            return
        job_id = self.ids[i % len(self.ids)]
        before = self.backend.get(job_id)
        active = before and sum(j.tenant == before.tenant and j.status in PENDING for j in self.stored().values())
        self.page_in(job_id)
        change = self.commit(self.state.retry(job_id, self.now, max_active), retrying=True)
        if (
            before is not None
            and before.status in ("failed", "cancelled")
            and max_active is not None
            and (active >= max_active)
        ):
            assert change.outcome == "over_quota" and change.empty
        elif before is not None and before.status in ("failed", "cancelled"):
            assert change.outcome == "queued" and change.job.status == "queued"
            assert change.job.max_attempts == before.attempts + self.settings.max_attempts
        else:
            assert change.outcome in ("missing", "not_retryable") and change.empty

    # -- runner side ----------------------------------------------------------------------

    @rule(n=st.integers(0, RUNNERS - 1))
    def claim(self, n):
        runner = self.runners[n]
        free = [m for m in MODELS if self.state.counts[m]["running"] < LIMITS[m] and self.state.waiting(m)]
        passes = {m: dict(self.state.passes[m]) for m in free}
        heads = {m: {t: self.state.get(self.state.queues[m][t][0]) for t in self.state.waiting(m)} for m in free}
        turns = [heads[m][self.state.next_turn(m)] for m in free]
        change = self.commit(self.state.claim(runner, LIMITS, self.now, WEIGHTS))
        if not free:
            assert change.job is None and change.empty
            return
        job = change.job
        # FIFO within a tenant: the head of its queue; the tenant whose turn it was (the lowest pass);
        # across models, the oldest of those heads.
        assert heads[job.model][job.tenant].id == job.id
        lowest = min(passes[job.model].get(t, 0.0) for t in heads[job.model])
        assert passes[job.model].get(job.tenant, 0.0) == lowest
        assert self.state.passes[job.model][job.tenant] == lowest + 1 / WEIGHTS.get(job.tenant, 1.0)
        assert job.id == min(turns, key=lambda h: h.seq).id
        assert job.status == "running" and job.lease_owner == runner
        # A later attempt starts from the last checkpoint (none: from the beginning) and says where from.
        assert job.resumed_from == (job.checkpoint.done if job.checkpoint is not None else None)
        assert job.partials == 0  # counted per attempt
        assert change.events[-1][1].data == {
            "status": "running",
            "attempt": job.attempts,
            "resumed_from": job.resumed_from,
        }
        assert job.lease_expires_at == self.now + self.settings.lease_s
        self.leases.append((job.id, runner, job.attempts))

    @rule(i=index, live=st.booleans(), progress=st.booleans())
    def heartbeat(self, i, live, progress):
        if (lease := self.lease(i, live)) is None:
            return
        job_id, runner, attempt = lease
        update = {"done": 1.0, "total": 2.0} if progress else None
        if not self.holds(job_id, runner, attempt):
            return self.refused(self.state.heartbeat(job_id, runner, attempt, update, self.now))
        version = self.state.get(job_id).version
        change = self.commit(self.state.heartbeat(job_id, runner, attempt, update, self.now))
        assert change.job.lease_expires_at == self.now + self.settings.lease_s
        assert change.job.version == version + (1 if progress else 0)  # a bare renewal wakes no long-poll

    @rule(i=index, live=st.booleans(), n=st.integers(1, 3))
    def partials(self, i, live, n):
        if (lease := self.lease(i, live)) is None:
            return
        job_id, runner, attempt = lease
        values = [{"n": k} for k in range(n)]
        operation = self.state.partials(job_id, runner, attempt, values, self.now)
        if not self.holds(job_id, runner, attempt):
            return self.refused(operation)
        before = self.state.get(job_id)
        change = self.commit(operation)
        assert [(e.type, e.data) for _, e in change.events] == [("partial", v) for v in values]
        assert change.job.events == before.events + n and change.job.version == before.version
        assert change.job.partials == before.partials + n

    @rule(i=index, live=st.booleans(), done=st.sampled_from([None, 1.0, 5.0]), emitted=st.sampled_from([None, 0, 2]))
    def checkpoint(self, i, live, done, emitted):
        """The replica's checkpoint, fenced by the attempt alone (a replica does not know the runner),
        and stored only once the partials emitted before it (`emitted`) are in the job's events."""
        if (lease := self.lease(i, live)) is None:
            return
        job_id, runner, attempt = lease
        operation = self.state.checkpoint(job_id, attempt, {"done": done}, done, self.now, emitted)
        assert self.state.is_current(job_id, attempt, self.now) == self.holds(job_id, runner, attempt)
        if not self.holds(job_id, runner, attempt):
            return self.refused(operation)
        if emitted is not None and self.state.get(job_id).partials < emitted:
            event("a checkpoint waits for its partials")
            assert operation.outcome == "behind" and operation.empty and not operation.events
            return
        change = self.commit(operation)
        assert change.job.checkpoint.state == {"done": done} and change.job.checkpoint.done == done
        assert not change.events and not change.wake  # no news for watchers: the job goes on

    @rule(i=index, live=st.booleans(), status=st.sampled_from(["succeeded", "failed"]), result=st.integers(0, 3))
    def finish(self, i, live, status, result):
        if (lease := self.lease(i, live)) is None:
            return
        job_id, runner, attempt = lease
        error = None if status == "succeeded" else {"type": "model_error", "message": "no"}
        operation = self.state.finish(job_id, runner, attempt, status, result, error, self.now)
        if not self.holds(job_id, runner, attempt):
            return self.refused(operation)
        change = self.commit(operation)
        assert outcome(change.job) == (status, result, error, self.now) and change.job.lease_owner is None
        event("the lease holder finished")

    @rule(i=index, live=st.booleans())
    def release(self, i, live):
        if (lease := self.lease(i, live)) is None:
            return
        job_id, runner, attempt = lease
        operation = self.state.release(job_id, runner, attempt, "its replica died", self.now)
        if not self.holds(job_id, runner, attempt):
            return self.refused(operation)
        change = self.commit(operation)
        exhausted = attempt >= change.job.max_attempts
        assert change.job.status == ("failed" if exhausted else "queued")

    @rule(n=st.integers(0, RUNNERS - 1))
    def runner_crashes(self, n):
        """A runner stops (it never calls again); a new one, under a new name, takes its place."""
        self.crashed.add(self.runners[n])
        self.runners[n] = f"r{RUNNERS + len(self.crashed)}"

    @rule(seconds=st.sampled_from([1.0, 4.0, 11.0, 30.0, 60.0]))
    def time_passes(self, seconds):
        self.now += seconds
        lapsed = {i for i in self.state.running if self.state.get(i).lease_expires_at < self.now}
        self.state.page_in(self.backend.due(self.now, self.settings.forget_after_s, 1000))  # as the reaper does
        change = self.commit(self.state.reap(self.now))
        assert not lapsed & self.state.running  # every lapsed lease gave its job back
        if seconds > 10.0:  # longer than any lease: a crashed runner's jobs are queued again (or failed)
            assert not any(self.state.get(i).lease_owner in self.crashed for i in self.state.running)
        assert not self.backend.due(self.now, self.settings.forget_after_s, 1000)
        for job in self.stored().values():  # nothing due is left for the next round
            assert job.status not in FINISHED or job.expires_at > self.now
            assert job.status != "expired" or self.state.forget_at(job) > self.now
        assert all(job.status == "expired" for job in change.deletes)

    # -- callbacks ----------------------------------------------------------------------------

    @rule(n=st.integers(0, RUNNERS - 1), limit=st.integers(1, 3))
    def claim_callbacks(self, n, limit):
        runner = self.runners[n]
        due = {i for i in self.state.callbacks_due if self.state.get(i).callback.next_attempt_at <= self.now}
        change = self.commit(self.state.claim_callbacks(runner, limit, 5.0, self.now))
        claimed = {job.id for job, _ in change.saves}
        assert claimed <= due and len(claimed) == min(limit, len(due))
        self.callback_leases += [(i, runner) for i in claimed]

    @rule(i=index, delivered=st.booleans())
    def record_callback(self, i, delivered):
        if not self.callback_leases:
            return
        job_id, runner = self.callback_leases[i % len(self.callback_leases)]
        if runner in self.crashed:
            return
        job = self.state.get(job_id)
        callback = Callback(
            url="https://example.com/hook",
            status="delivered" if delivered else "pending",
            attempts=1,
            next_attempt_at=self.now + 2,
        )
        operation = self.state.record_callback(job_id, runner, callback, self.now)
        if job is None or (job.callback or Callback(url="")).owner != runner or job_id not in self.state.callbacks_due:
            return self.refused(operation)
        self.commit(operation)
        assert (job_id in self.state.callbacks_due) == (not delivered)

    # -- the store's lifetime -------------------------------------------------------------------

    @rule()
    def restart(self):
        """The actor's process ends; a new one loads what the backend holds."""
        before = {i: job.model_dump() for i, job in self.state.records.items() if live(job)}
        self.state = JobState(self.settings)
        loaded = self.state.load(self.backend.load_live(), self.now, self.backend.last_seq())
        for job in loaded.deletes:
            assert self.state.forget_at(job) <= self.now
            self.backend.delete(job.id)
            self.acknowledged.discard(job.id)
            del before[job.id]
        assert {i: job.model_dump() for i, job in self.state.records.items()} == before
        assert self.state.last_seq == max((j.seq for j in self.stored().values()), default=0)

    @rule(lease_s=st.sampled_from([3.0, 10.0]), forget_after_s=st.sampled_from([20.0, 50.0]))
    def new_settings(self, lease_s, forget_after_s):
        self.settings = Settings(lease_s=lease_s, max_attempts=2, forget_after_s=forget_after_s, cache_finished=CACHE)
        self.state.configure(self.settings)

    # -- the finished jobs in memory ----------------------------------------------------------------

    @rule(i=index)
    def evict(self, i):
        """A finished job leaves memory early (the cache holds fewer than CACHE now)."""
        if self.state.cache:
            self.state.evict(list(self.state.cache)[i % len(self.state.cache)])

    @rule(i=index)
    def read(self, i):
        """A read of any job (GET, wait, events): as the backend holds it, paged in if need be."""
        if self.ids:
            job_id = self.ids[i % len(self.ids)]
            stored = self.backend.get(job_id)
            job = self.fetch(job_id)
            assert (job and job.model_dump()) == (stored and stored.model_dump())

    @rule(
        model=st.sampled_from([None, *MODELS]),
        status=st.sampled_from([None, "queued", "succeeded", "expired"]),
        tenant=st.sampled_from([None, *TENANTS]),
        after=st.sampled_from([None, 1000.0, 1040.0]),
        limit=st.integers(1, 4),
    )
    def list_jobs(self, model, status, tenant, after, limit):
        """Paging through a listing meets every matching job once, newest first."""
        filters = Filters(model, status, tenant, created_after=after)
        listed, cursor = [], None
        while True:
            page, cursor = self.backend.list_jobs(filters, limit, cursor)
            assert len(page) <= limit
            listed += [job.id for job in page]
            if cursor is None:
                break
        jobs = sorted(self.stored().values(), key=lambda j: -j.seq)
        assert listed == [j.id for j in jobs if filters.match(j)]

    # -- invariants ---------------------------------------------------------------------------------

    @invariant()
    def no_acknowledged_job_is_lost(self):
        stored = self.stored()
        assert set(stored) == self.acknowledged
        assert all(stored[i].model_dump() == j.model_dump() for i, j in self.state.records.items())
        assert {i for i, j in stored.items() if live(j)} <= set(self.state.records)

    @invariant()
    def the_cache_is_bounded(self):
        state = self.state
        assert len(state.cache) <= CACHE
        assert set(state.cache) == {i for i, j in state.records.items() if not live(j)}

    @invariant()
    def indexes_agree_with_the_records(self):
        state, jobs = self.state, list(self.state.records.values())
        counts = {m: +c for m, c in state.counts.items() if +c}
        pending = [j for j in jobs if j.status in PENDING]  # counted: finished jobs are not
        assert counts == {m: Counter(j.status for j in pending if j.model == m) for m in {j.model for j in pending}}
        assert state.running == {j.id for j in jobs if j.status == "running"}
        assert +state.active == Counter(j.tenant for j in jobs if j.status in PENDING)
        for model in MODELS:
            for tenant in TENANTS:
                queue = state.queues[model].get(tenant, ())
                queued = {j.id for j in jobs if j.model == model and j.tenant == tenant and j.status == "queued"}
                assert {i for i in queue if i in queued} == queued
                assert not queue or queue[0] in queued  # claims look at the head only
        assert state.idempotency == {(j.tenant, j.model, j.idempotency_key): j.id for j in jobs if j.idempotency_key}
        assert state.callbacks_due == {j.id for j in jobs if callback_due(j)}
        assert all(
            state.expiry[k] <= state.expiry[c]
            for k in range(len(state.expiry))
            for c in (2 * k + 1, 2 * k + 2)
            if c < len(state.expiry)
        )
        scheduled = set(state.expiry)
        assert all((state.next_step_at(j), j.id) in scheduled for j in jobs if state.next_step_at(j) is not None)
        assert all(j.seq <= state.last_seq for j in self.stored().values())

    @invariant()
    def event_logs_tell_each_lifecycle(self):
        for job in self.stored().values():
            log = self.backend.events(job.id, 0, 10 * MAX_EVENTS)
            assert log == self.logs.get(job.id, [])  # durable, in order, as appended
            assert [e.id for e in log] == list(range(1, job.events + 1))
            if job.erased:  # its events went with its data
                assert not log
                continue
            status, attempts = None, 0
            for previous, current in zip([None, *log], log, strict=False):
                if current.type == "status":
                    status = current.data["status"]
                    if status == "running":  # each attempt announced once, in order
                        attempts += 1
                        assert current.data["attempt"] == attempts
                    assert previous is not None or status == "queued"
                elif current.type in ("progress", "partial"):
                    assert status == "running"  # only while an attempt runs
                else:  # the final event follows the end state
                    assert previous.type == "status"
                    assert previous.data["status"] in (("succeeded",) if current.type == "result" else FINISHED)
            assert attempts == job.attempts
            assert status == job.status or (job.status == "expired" and status in FINISHED)

    @invariant()
    def leases_belong_to_running_jobs(self):
        for job in self.stored().values():
            assert (job.lease_owner is not None) == (job.status == "running") == (job.lease_expires_at is not None)
            assert job.attempts <= job.max_attempts


@settings(max_examples=200, deadline=None)
@given(
    weights=st.lists(st.sampled_from([1.0, 2.0, 3.0]), min_size=2, max_size=4),
    backlog=st.integers(3, 15),
    late=st.integers(0, 12),
)
def test_waiting_tenants_take_turns_by_weight(weights, backlog, late):
    """One model, one slot. Every tenant but the last queues `backlog` jobs; the last
    queues its own after `late` claims. While tenants all wait, their claims since the
    last one arrived stay in proportion to their weights (within two turns), each
    tenant's jobs start in the order it queued them, and the newcomer waits no longer
    than a round (FIFO across tenants would make it wait for every earlier job)."""
    tenants = [f"t{i}" for i in range(len(weights))]
    late = min(late, backlog * (len(weights) - 1))  # arriving at the latest when the others ran out
    weight = dict(zip(tenants, weights))
    state, now, seq = JobState(Settings()), 1000.0, 0

    def submit(tenant):
        nonlocal seq
        seq += 1
        state.apply(state.submit(f"{tenant}-{seq}", "a", REQUEST, b"", {}, 60.0, None, None, "", now, tenant))

    for tenant in tenants[:-1]:
        for _ in range(backlog):
            submit(tenant)
    started: dict[str, list[int]] = {t: [] for t in tenants}
    order: list[str] = []  # the tenant of each claim
    since: Counter = Counter()
    for n in range(late + backlog * len(tenants)):
        if n == late:
            for _ in range(backlog):
                submit(tenants[-1])
            since = Counter()
        change = state.claim("r", {"a": 1}, now, weight)
        if change.job is None:
            break
        state.apply(change)
        job = change.job
        state.apply(state.finish(job.id, "r", job.attempts, "succeeded", None, None, now))
        started[job.tenant].append(job.seq)
        order.append(job.tenant)
        since[job.tenant] += 1
        waiting = state.waiting("a")
        if n >= late and len(waiting) == len(tenants):
            shares = [since[t] / weight[t] for t in tenants]
            assert max(shares) - min(shares) <= 2 / min(weights), (since, weight)
    assert all(seqs == sorted(seqs) for seqs in started.values())  # FIFO within a tenant
    assert order.index(tenants[-1]) - late < len(tenants)  # the newcomer's first job starts within a round


TestLifecycle = Lifecycle.TestCase
TestLifecycle.settings = settings(max_examples=300, stateful_step_count=50, deadline=None)


def test_a_lapsed_lease_is_no_longer_current_before_the_reaper_runs():
    """A replica learns its attempt is over once the lease ends, not only once the reaper requeues the job."""
    state, now = JobState(Settings(lease_s=10.0)), 1000.0
    state.apply(state.submit("j", "a", REQUEST, b"", {}, 60.0, None, None, "", now))
    claimed = state.claim("r", {"a": 1}, now)
    state.apply(claimed)
    assert state.is_current("j", 1, now + 10.0) and not state.is_current("j", 2, now)
    assert not state.is_current("j", 1, now + 10.5)
    assert state.checkpoint("j", 1, {"step": 3}, 3.0, now + 10.5).outcome == "refused"
    saved = state.checkpoint("j", 1, {"step": 3}, 3.0, now + 9.0)
    assert saved.outcome == "saved"
    state.apply(saved)
    state.apply(state.reap(now + 11.0))  # lease lost: queued again, attempt 2 resumes from the checkpoint
    again = state.claim("r2", {"a": 1}, now + 12.0)
    assert again.job.attempts == 2 and again.job.resumed_from == 3.0 and again.job.checkpoint.state == {"step": 3}
