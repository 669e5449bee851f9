"""Where the JobStore persists jobs. Each call returns only once the change is
durable, so the store can acknowledge it. Calls run in a worker thread.

- memory: nothing survives the process; for tests that need no durability.
- sqlite: one file (WAL); the embedded default, on the head node.
- redis:  for clusters; the same server KubeRay uses for GCS fault tolerance.

Each job's event log (jobs/events.py) is kept beside its record, appended
with the record's save, bounded there, and deleted with the job.

The store keeps only live jobs in memory (jobs/state.py), so a backend also
answers queries: a job by id or by idempotency key, the live jobs (at start),
the finished jobs due to expire or be forgotten (the reaper), and listings
(newest first, filtered). sqlite answers them from indexed columns beside
each record; redis from sets, sorted sets and a hash kept in the record's
transaction; memory from in-process indexes (it is not for large stores).

Besides jobs, a backend keeps the store's settings as last deployed (a JSON
text), so a store that restarts follows the newest deploy, not its first one.
"""

import heapq
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol, cast

from longserve.server.jobs.events import KEPT, JobEvent, kept, oldest_trimmable
from longserve.server.jobs.record import Job
from longserve.server.jobs.state import due_entries, live

LIST_SCAN = 500  # redis: records read per round while a filtered listing fills its page


@dataclass(frozen=True)
class Filters:
    """What `GET /v1/jobs` selects; None selects everything."""

    model: Optional[str] = None
    status: Optional[str] = None
    tenant: Optional[str] = None
    created_after: Optional[float] = None
    created_before: Optional[float] = None

    def match(self, job: Job) -> bool:
        return (
            (self.model is None or job.model == self.model)
            and (self.status is None or job.status == self.status)
            and (self.tenant is None or job.tenant == self.tenant)
            and (self.created_after is None or job.created_at >= self.created_after)
            and (self.created_before is None or job.created_at < self.created_before)
        )


def due(job: Job, now: float, forget_after_s: float) -> bool:
    """The job's next step (expiring, or being forgotten once expired) is due: as JobState.next_step_at."""
    if job.expires_at is None or job.status in ("queued", "running"):
        return False
    return (job.expires_at + forget_after_s if job.status == "expired" else job.expires_at) <= now


def page(jobs: Sequence[Job], limit: int) -> tuple[list[Job], Optional[int]]:
    """A listing's page from up to limit + 1 matches: the cursor is the last seq if more follow."""
    return list(jobs[:limit]), (jobs[limit - 1].seq if len(jobs) > limit and limit > 0 else None)


def idempotency_field(tenant: str, model: str, key: str) -> str:
    return f"{tenant}\0{model}\0{key}"


class Backend(Protocol):
    def load(self) -> Iterator[Job]: ...  # every record (tests, tools)
    def load_live(self) -> Iterator[Job]: ...  # queued, running, or a callback due (jobs/state.live)
    def last_seq(self) -> int: ...  # the highest seq stored, 0 if none
    def get(self, job_id: str) -> Optional[Job]: ...
    def find_key(self, tenant: str, model: str, key: str) -> Optional[Job]: ...  # the job holding the key
    # Jobs whose next step is due by `now` (as JobState.next_step_at), at most `limit`.
    def due(self, now: float, forget_after_s: float, limit: int) -> list[Job]: ...
    # Newest first, seq below `cursor`; the next cursor, or None once nothing more matches.
    def list_jobs(self, filters: Filters, limit: int, cursor: Optional[int]) -> tuple[list[Job], Optional[int]]: ...
    def save_many(self, jobs: Sequence[tuple[Job, Optional[bytes]]]) -> None: ...  # new records, in bulk, no events
    # `events` are appended to the job's log (their ids follow its last), the bound applied.
    def save(self, job: Job, body: Optional[bytes] = None, events: Sequence[JobEvent] = ()) -> None: ...
    def body(self, job_id: str) -> bytes: ...
    def drop_body(self, job_id: str) -> None: ...
    def events(self, job_id: str, after: int, limit: int) -> list[JobEvent]: ...  # ids over `after`, oldest first
    def drop_events(self, job_id: str) -> None: ...
    def delete(self, job_id: str) -> None: ...  # the record, body and events; a missing job is no error
    def load_settings(self) -> Optional[str]: ...
    def save_settings(self, text: str) -> None: ...


class MemoryBackend:
    def __init__(self) -> None:
        self.records: dict[str, str] = {}  # by first save: by seq, as jobs are created in seq order
        self.jobs: dict[str, Job] = {}  # the same, parsed: what queries scan
        self.keys: dict[str, str] = {}  # idempotency_field -> job id
        # (expires_at, id) heaps of the finished and of the expired jobs; an entry is stale once
        # its job changed (`due` checks the job itself)
        self.steps: dict[bool, list[tuple[float, str]]] = {False: [], True: []}
        self.bodies: dict[str, bytes] = {}
        self.logs: dict[str, list[JobEvent]] = {}
        self.settings: Optional[str] = None

    def load(self) -> Iterator[Job]:
        return (Job.model_validate_json(r) for r in self.records.values())

    def load_live(self) -> Iterator[Job]:
        return (Job.model_validate_json(self.records[i]) for i, job in self.jobs.items() if live(job))

    def last_seq(self) -> int:
        return max((job.seq for job in self.jobs.values()), default=0)

    def get(self, job_id: str) -> Optional[Job]:
        record = self.records.get(job_id)
        return None if record is None else Job.model_validate_json(record)

    def find_key(self, tenant: str, model: str, key: str) -> Optional[Job]:
        job_id = self.keys.get(idempotency_field(tenant, model, key))
        return None if job_id is None else self.get(job_id)

    def due(self, now: float, forget_after_s: float, limit: int) -> list[Job]:
        found: dict[str, None] = {}
        for expired, until in ((False, now), (True, now - forget_after_s + 1.0)):
            for _, job_id in sorted(due_entries(self.steps[expired], until)):
                job = self.jobs.get(job_id)
                if job is not None and (job.status == "expired") == expired and due(job, now, forget_after_s):
                    found[job_id] = None
        return [Job.model_validate_json(self.records[i]) for i in list(found)[:limit]]

    def list_jobs(self, filters: Filters, limit: int, cursor: Optional[int]) -> tuple[list[Job], Optional[int]]:
        found: list[Job] = []
        for job in reversed(self.jobs.values()):
            if (cursor is None or job.seq < cursor) and filters.match(job):
                found.append(Job.model_validate_json(self.records[job.id]))
                if len(found) > limit:
                    break
        return page(found, limit)

    def save_many(self, jobs: Sequence[tuple[Job, Optional[bytes]]]) -> None:
        for job, body in jobs:
            self.save(job, body)

    def save(self, job: Job, body: Optional[bytes] = None, events: Sequence[JobEvent] = ()) -> None:
        self._unkey(job.id)
        old = self.jobs.get(job.id)
        self.records[job.id] = job.model_dump_json()
        self.jobs[job.id] = Job.model_validate_json(self.records[job.id])
        if job.idempotency_key is not None:
            self.keys[idempotency_field(job.tenant, job.model, job.idempotency_key)] = job.id
        finished = job.status not in ("queued", "running") and job.expires_at is not None
        if finished and (old is None or (old.status, old.expires_at) != (job.status, job.expires_at)):
            heapq.heappush(self.steps[job.status == "expired"], (cast(float, job.expires_at), job.id))
        for expired, heap in self.steps.items():
            if len(heap) > 2 * len(self.jobs) + 64:  # mostly stale: rebuilt, O(1) a save on average
                heap[:] = [
                    (j.expires_at, i)
                    for i, j in self.jobs.items()
                    if j.expires_at is not None
                    and j.status not in ("queued", "running")
                    and (j.status == "expired") == expired
                ]
                heapq.heapify(heap)
        if body is not None:
            self.bodies[job.id] = body
        if events:
            log = self.logs.setdefault(job.id, []) + [JobEvent.loads(e.dumps()) for e in events]  # as stored
            self.logs[job.id] = [e for e in log if kept(e, log[-1].id)]

    def body(self, job_id: str) -> bytes:
        return self.bodies[job_id]

    def drop_body(self, job_id: str) -> None:
        self.bodies.pop(job_id, None)

    def events(self, job_id: str, after: int, limit: int) -> list[JobEvent]:
        return [e for e in self.logs.get(job_id, []) if e.id > after][:limit]

    def drop_events(self, job_id: str) -> None:
        self.logs.pop(job_id, None)

    def delete(self, job_id: str) -> None:
        self._unkey(job_id)
        self.records.pop(job_id, None)
        self.jobs.pop(job_id, None)
        self.bodies.pop(job_id, None)
        self.logs.pop(job_id, None)

    def _unkey(self, job_id: str) -> None:
        old = self.jobs.get(job_id)
        if old is not None and old.idempotency_key is not None:
            field = idempotency_field(old.tenant, old.model, old.idempotency_key)
            if self.keys.get(field) == job_id:
                del self.keys[field]

    def load_settings(self) -> Optional[str]:
        return self.settings

    def save_settings(self, text: str) -> None:
        self.settings = text


SQLITE_COLUMNS = (
    ("seq", "INTEGER"),
    ("model", "TEXT"),
    ("tenant", "TEXT"),
    ("status", "TEXT"),
    ("created_at", "REAL"),
    ("expires_at", "REAL"),  # of a finished job: when it expires, or (expired) when it did
    ("expired", "INTEGER"),
    ("live", "INTEGER"),
    ("idem", "TEXT"),  # idempotency_field, while the job holds its key
)
SQLITE_INSERT = (
    f"INSERT OR REPLACE INTO jobs (id, record, {', '.join(n for n, _ in SQLITE_COLUMNS)})"
    f" VALUES (?, ?{', ?' * len(SQLITE_COLUMNS)})"
)


class SqliteBackend:
    def __init__(self, path: str):
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(Path(path).expanduser()), check_same_thread=False, isolation_level=None)
        self.lock = threading.Lock()
        # WAL + NORMAL: a committed change survives a process crash (our fault model).
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, record TEXT NOT NULL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS bodies (id TEXT PRIMARY KEY, body BLOB NOT NULL)")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS events (job TEXT NOT NULL, id INTEGER NOT NULL, type TEXT NOT NULL,"
            " event TEXT NOT NULL, PRIMARY KEY (job, id)) WITHOUT ROWID"
        )
        self.db.execute("CREATE TABLE IF NOT EXISTS settings (id INTEGER PRIMARY KEY CHECK (id = 1), value TEXT)")
        self._add_columns()

    def _add_columns(self) -> None:
        """What the queries select on, beside each record (a file from before them is filled in once)."""
        have = {name for _, name, *_ in self.db.execute("PRAGMA table_info(jobs)")}
        if "seq" not in have:
            with self.lock:
                self.db.execute("BEGIN")
                for name, kind in SQLITE_COLUMNS:
                    self.db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
                rows = self.db.execute("SELECT record FROM jobs").fetchall()
                self.db.executemany(
                    f"UPDATE jobs SET {', '.join(f'{n} = ?' for n, _ in SQLITE_COLUMNS)} WHERE id = ?",
                    ((*self._columns(job), job.id) for job in (Job.model_validate_json(r) for (r,) in rows)),
                )
                self.db.execute("COMMIT")
        self.db.execute("CREATE INDEX IF NOT EXISTS jobs_seq ON jobs (seq)")
        self.db.execute("CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs (tenant, seq)")
        self.db.execute("CREATE INDEX IF NOT EXISTS jobs_live ON jobs (live) WHERE live = 1")
        self.db.execute("CREATE INDEX IF NOT EXISTS jobs_key ON jobs (idem) WHERE idem IS NOT NULL")
        self.db.execute("CREATE INDEX IF NOT EXISTS jobs_due ON jobs (expired, expires_at)")

    @staticmethod
    def _columns(job: Job) -> tuple:
        key = job.idempotency_key
        return (
            job.seq,
            job.model,
            job.tenant,
            job.status,
            job.created_at,
            None if job.status in ("queued", "running") else job.expires_at,
            int(job.status == "expired"),
            int(live(job)),
            None if key is None else idempotency_field(job.tenant, job.model, key),
        )

    def _row(self, job: Job) -> tuple:
        return (job.id, job.model_dump_json(), *self._columns(job))

    def _jobs(self, sql: str, args: Sequence = ()) -> list[Job]:
        with self.lock:
            rows = self.db.execute(sql, args).fetchall()
        return [Job.model_validate_json(r) for (r,) in rows]

    def load(self) -> Iterator[Job]:
        return iter(self._jobs("SELECT record FROM jobs"))

    def load_live(self) -> Iterator[Job]:
        return iter(self._jobs("SELECT record FROM jobs WHERE live = 1"))

    def last_seq(self) -> int:
        with self.lock:
            (seq,) = self.db.execute("SELECT MAX(seq) FROM jobs").fetchone()
        return seq or 0

    def get(self, job_id: str) -> Optional[Job]:
        found = self._jobs("SELECT record FROM jobs WHERE id = ?", (job_id,))
        return found[0] if found else None

    def find_key(self, tenant: str, model: str, key: str) -> Optional[Job]:
        found = self._jobs("SELECT record FROM jobs WHERE idem = ?", (idempotency_field(tenant, model, key),))
        return found[0] if found else None

    def due(self, now: float, forget_after_s: float, limit: int) -> list[Job]:
        expiring = self._jobs("SELECT record FROM jobs WHERE expired = 0 AND expires_at <= ? LIMIT ?", (now, limit))
        # The index bounds the scan; the exact test is the state's (expires_at + forget_after_s <= now).
        forgotten = self._jobs(
            "SELECT record FROM jobs WHERE expired = 1 AND expires_at <= ? AND expires_at + ? <= ? LIMIT ?",
            (now - forget_after_s + 1.0, forget_after_s, now, limit),
        )
        return (expiring + forgotten)[:limit]

    def list_jobs(self, filters: Filters, limit: int, cursor: Optional[int]) -> tuple[list[Job], Optional[int]]:
        args: list[object]
        where, args = ["seq < ?"], [2**62 if cursor is None else cursor]
        for column, value in (("model", filters.model), ("status", filters.status), ("tenant", filters.tenant)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if filters.created_after is not None:
            where.append("created_at >= ?")
            args.append(filters.created_after)
        if filters.created_before is not None:
            where.append("created_at < ?")
            args.append(filters.created_before)
        sql = f"SELECT record FROM jobs WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?"
        return page(self._jobs(sql, [*args, limit + 1]), limit)

    def save_many(self, jobs: Sequence[tuple[Job, Optional[bytes]]]) -> None:
        with self.lock:
            self.db.execute("BEGIN")
            self.db.executemany(SQLITE_INSERT, (self._row(job) for job, _ in jobs))
            self.db.executemany(
                "INSERT OR REPLACE INTO bodies VALUES (?, ?)", ((j.id, b) for j, b in jobs if b is not None)
            )
            self.db.execute("COMMIT")

    def save(self, job: Job, body: Optional[bytes] = None, events: Sequence[JobEvent] = ()) -> None:
        with self.lock:
            self.db.execute("BEGIN")
            try:
                self.db.execute(SQLITE_INSERT, self._row(job))
                if body is not None:
                    self.db.execute("INSERT OR REPLACE INTO bodies VALUES (?, ?)", (job.id, body))
                rows = [(job.id, e.id, e.type, e.dumps()) for e in events]
                self.db.executemany("INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?)", rows)
                if events and oldest_trimmable(events[-1].id) > 0:
                    self.db.execute(
                        "DELETE FROM events WHERE job = ? AND id <= ? AND type IN ('progress', 'partial')",
                        (job.id, oldest_trimmable(events[-1].id)),
                    )
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def body(self, job_id: str) -> bytes:
        with self.lock:
            (body,) = self.db.execute("SELECT body FROM bodies WHERE id = ?", (job_id,)).fetchone()
        return body

    def drop_body(self, job_id: str) -> None:
        with self.lock:
            self.db.execute("DELETE FROM bodies WHERE id = ?", (job_id,))

    def events(self, job_id: str, after: int, limit: int) -> list[JobEvent]:
        with self.lock:
            rows = self.db.execute(
                "SELECT event FROM events WHERE job = ? AND id > ? ORDER BY id LIMIT ?", (job_id, after, limit)
            ).fetchall()
        return [JobEvent.loads(r) for (r,) in rows]

    def drop_events(self, job_id: str) -> None:
        with self.lock:
            self.db.execute("DELETE FROM events WHERE job = ?", (job_id,))

    def delete(self, job_id: str) -> None:
        with self.lock:
            self.db.execute("BEGIN")
            try:
                self.db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
                self.db.execute("DELETE FROM bodies WHERE id = ?", (job_id,))
                self.db.execute("DELETE FROM events WHERE job = ?", (job_id,))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def load_settings(self) -> Optional[str]:
        with self.lock:
            row = self.db.execute("SELECT value FROM settings WHERE id = 1").fetchone()
        return None if row is None else row[0]

    def save_settings(self, text: str) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO settings VALUES (1, ?)", (text,))


class RedisBackend:
    def __init__(self, url: str, prefix: str = "longserve"):
        import redis

        # A password in the URL wins; else LONGSERVE_REDIS_PASSWORD (a Kubernetes
        # Secret on a cluster), so no secret has to be written into serve_config.yaml.
        self.redis = redis.Redis.from_url(url, password=os.environ.get("LONGSERVE_REDIS_PASSWORD") or None)
        self.redis.ping()  # fail at start, not at the first submit
        self.index, self.jobs, self.bodies = f"{prefix}:jobs", f"{prefix}:job:", f"{prefix}:body:"
        self.logs = f"{prefix}:events:"  # a sorted set per job: score the event's id
        self.settings = f"{prefix}:settings"
        # The queries' indexes, kept in each save's transaction:
        self.seqs = f"{prefix}:seq"  # sorted set: id by seq (per tenant: seq:<tenant>), for listing
        self.live = f"{prefix}:live"  # set: the live jobs' ids, loaded at start
        self.finishing = f"{prefix}:finishing"  # sorted set: finished jobs by expires_at
        self.expired = f"{prefix}:expired"  # sorted set: expired jobs by expires_at (+ forget_after_s: forgotten)
        self.keys = f"{prefix}:keys"  # hash: idempotency_field -> job id
        self.schema = f"{prefix}:schema"
        if self.redis.get(self.schema) != b"2":  # jobs stored before these indexes: indexed once
            for job in self.load():
                with self.redis.pipeline(transaction=True) as tx:
                    self._index(tx, job)
                    tx.execute()
            self.redis.set(self.schema, b"2")

    def _index(self, tx: Any, job: Job) -> None:
        tx.sadd(self.index, job.id)
        tx.zadd(self.seqs, {job.id: job.seq})
        tx.zadd(f"{self.seqs}:{job.tenant}", {job.id: job.seq})
        tx.sadd(self.live, job.id) if live(job) else tx.srem(self.live, job.id)
        finished = job.status not in ("queued", "running") and job.expires_at is not None
        for zset, member in ((self.finishing, job.status != "expired"), (self.expired, job.status == "expired")):
            tx.zadd(zset, {job.id: job.expires_at}) if finished and member else tx.zrem(zset, job.id)
        if job.idempotency_key is not None:
            tx.hset(self.keys, idempotency_field(job.tenant, job.model, job.idempotency_key), job.id)

    def _records(self, ids: Sequence["bytes | str"]) -> list[Job]:
        found = []
        for start in range(0, len(ids), 1000):
            chunk = [_text(i) for i in ids[start : start + 1000]]
            found += [Job.model_validate_json(r) for r in self.redis.mget([self.jobs + i for i in chunk]) if r]
        return found

    def load(self) -> Iterator[Job]:
        return iter(self._records(list(self.redis.smembers(self.index))))

    def load_live(self) -> Iterator[Job]:
        return iter(self._records(list(self.redis.smembers(self.live))))

    def last_seq(self) -> int:
        top = cast(list, self.redis.zrevrange(self.seqs, 0, 0, withscores=True))
        return int(top[0][1]) if top else 0

    def get(self, job_id: str) -> Optional[Job]:
        record = self.redis.get(self.jobs + job_id)
        return None if record is None else Job.model_validate_json(record)

    def find_key(self, tenant: str, model: str, key: str) -> Optional[Job]:
        job_id = self.redis.hget(self.keys, idempotency_field(tenant, model, key))
        job = None if job_id is None else self.get(_text(job_id))
        # The hash may lag an erase (it freed the key): the record decides.
        return job if job is not None and job.idempotency_key == key else None

    def due(self, now: float, forget_after_s: float, limit: int) -> list[Job]:
        ids = cast(list, self.redis.zrangebyscore(self.finishing, "-inf", now, start=0, num=limit))
        # The score bounds the range; the exact test is the state's (expires_at + forget_after_s <= now).
        ids += cast(
            list, self.redis.zrangebyscore(self.expired, "-inf", now - forget_after_s + 1.0, start=0, num=limit)
        )
        return [job for job in self._records(ids) if due(job, now, forget_after_s)][:limit]

    def list_jobs(self, filters: Filters, limit: int, cursor: Optional[int]) -> tuple[list[Job], Optional[int]]:
        index = self.seqs if filters.tenant is None else f"{self.seqs}:{filters.tenant}"
        found: list[Job] = []
        below = "+inf" if cursor is None else f"({cursor}"
        every = filters == Filters(tenant=filters.tenant)  # each id in the index matches: read no more
        while len(found) <= limit:
            scan = limit + 1 - len(found) if every else LIST_SCAN
            ids = cast(list, self.redis.zrevrangebyscore(index, below, "-inf", start=0, num=scan, withscores=True))
            if not ids:
                break
            found += [job for job in self._records([i for i, _ in ids]) if filters.match(job)]
            below = f"({int(ids[-1][1])}"
        return page(found, limit)

    def save_many(self, jobs: Sequence[tuple[Job, Optional[bytes]]]) -> None:
        with self.redis.pipeline(transaction=False) as tx:
            for job, body in jobs:
                tx.set(self.jobs + job.id, job.model_dump_json())
                if body is not None:
                    tx.set(self.bodies + job.id, body)
                self._index(tx, job)
            tx.execute()

    def save(self, job: Job, body: Optional[bytes] = None, events: Sequence[JobEvent] = ()) -> None:
        # Trimmed in the same transaction: the dropped ones are the kind the bound drops, up to its id.
        dropped = self._trimmable(job.id, oldest_trimmable(events[-1].id)) if events else []
        unkey = self._key_of(job.id) if job.erased else None  # erasing frees the key
        with self.redis.pipeline(transaction=True) as tx:
            tx.set(self.jobs + job.id, job.model_dump_json())
            if body is not None:
                tx.set(self.bodies + job.id, body)
            if events:
                tx.zadd(self.logs + job.id, {e.dumps(): e.id for e in events})
            if dropped:
                tx.zrem(self.logs + job.id, *dropped)
            if unkey is not None:
                tx.hdel(self.keys, unkey)
            self._index(tx, job)
            tx.execute()

    def _key_of(self, job_id: str) -> Optional[str]:
        """The idempotency field that maps to the job, if its stored record holds a key."""
        job = self.get(job_id)
        if job is None or job.idempotency_key is None:
            return None
        field = idempotency_field(job.tenant, job.model, job.idempotency_key)
        return field if _text(self.redis.hget(self.keys, field) or b"") == job_id else None

    def _trimmable(self, job_id: str, up_to: int) -> list[bytes]:
        if up_to <= 0:
            return []
        members = cast(list[bytes], self.redis.zrangebyscore(self.logs + job_id, "-inf", up_to))
        return [m for m in members if JobEvent.loads(m).type not in KEPT]

    def body(self, job_id: str) -> bytes:
        body = self.redis.get(self.bodies + job_id)
        if body is None:
            raise KeyError(job_id)
        return body if isinstance(body, bytes) else body.encode()

    def drop_body(self, job_id: str) -> None:
        self.redis.delete(self.bodies + job_id)

    def events(self, job_id: str, after: int, limit: int) -> list[JobEvent]:
        members = cast(
            list[bytes], self.redis.zrangebyscore(self.logs + job_id, f"({after}", "+inf", start=0, num=limit)
        )
        return [JobEvent.loads(m) for m in members]

    def drop_events(self, job_id: str) -> None:
        self.redis.delete(self.logs + job_id)

    def delete(self, job_id: str) -> None:
        job, unkey = self.get(job_id), self._key_of(job_id)
        with self.redis.pipeline(transaction=True) as tx:
            tx.delete(self.jobs + job_id, self.bodies + job_id, self.logs + job_id)
            tx.srem(self.index, job_id)
            tx.srem(self.live, job_id)
            tx.zrem(self.seqs, job_id)
            tx.zrem(self.finishing, job_id)
            tx.zrem(self.expired, job_id)
            if job is not None:
                tx.zrem(f"{self.seqs}:{job.tenant}", job_id)
            if unkey is not None:
                tx.hdel(self.keys, unkey)
            tx.execute()

    def load_settings(self) -> Optional[str]:
        text = self.redis.get(self.settings)
        return None if text is None else _text(text)

    def save_settings(self, text: str) -> None:
        self.redis.set(self.settings, text)


def make_backend(kind: str, sqlite_path: str, redis_url: str) -> Backend:
    if kind == "memory":
        return MemoryBackend()
    if kind == "sqlite":
        return SqliteBackend(sqlite_path)
    return RedisBackend(redis_url)


def _text(value: "bytes | str") -> str:
    # redis-py types its answers as bytes | str; without decode_responses they are bytes.
    return value.decode() if isinstance(value, bytes) else value
