"""Where the JobStore persists jobs. Each call returns only once the change is
durable, so the store can acknowledge it. Calls run in a worker thread.

- memory: nothing survives the process; for tests that need no durability.
- sqlite: one file (WAL); the embedded default, on the head node.
- redis:  for clusters; the same server KubeRay uses for GCS fault tolerance.

Each job's event log (jobs/events.py) is kept beside its record, appended
with the record's save, bounded there, and deleted with the job.

Besides jobs, a backend keeps the store's settings as last deployed (a JSON
text), so a store that restarts follows the newest deploy, not its first one.
"""

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Optional, Protocol, cast

from longserve.server.jobs.events import KEPT, JobEvent, kept, oldest_trimmable
from longserve.server.jobs.record import Job


class Backend(Protocol):
    def load(self) -> Iterator[Job]: ...
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
    def __init__(self):
        self.records: dict[str, str] = {}
        self.bodies: dict[str, bytes] = {}
        self.logs: dict[str, list[JobEvent]] = {}
        self.settings: Optional[str] = None

    def load(self) -> Iterator[Job]:
        return (Job.model_validate_json(r) for r in self.records.values())

    def save(self, job: Job, body: Optional[bytes] = None, events: Sequence[JobEvent] = ()) -> None:
        self.records[job.id] = job.model_dump_json()
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
        self.records.pop(job_id, None)
        self.bodies.pop(job_id, None)
        self.logs.pop(job_id, None)

    def load_settings(self) -> Optional[str]:
        return self.settings

    def save_settings(self, text: str) -> None:
        self.settings = text


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

    def load(self) -> Iterator[Job]:
        with self.lock:
            rows = self.db.execute("SELECT record FROM jobs").fetchall()
        return (Job.model_validate_json(r) for (r,) in rows)

    def save(self, job: Job, body: Optional[bytes] = None, events: Sequence[JobEvent] = ()) -> None:
        with self.lock:
            self.db.execute("BEGIN")
            try:
                self.db.execute("INSERT OR REPLACE INTO jobs VALUES (?, ?)", (job.id, job.model_dump_json()))
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

    def load(self) -> Iterator[Job]:
        ids = [_text(i) for i in self.redis.smembers(self.index)]
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            for record in self.redis.mget([self.jobs + i for i in chunk]):
                if record is not None:
                    yield Job.model_validate_json(record)

    def save(self, job: Job, body: Optional[bytes] = None, events: Sequence[JobEvent] = ()) -> None:
        # Trimmed in the same transaction: the dropped ones are the kind the bound drops, up to its id.
        dropped = self._trimmable(job.id, oldest_trimmable(events[-1].id)) if events else []
        with self.redis.pipeline(transaction=True) as tx:
            tx.set(self.jobs + job.id, job.model_dump_json())
            if body is not None:
                tx.set(self.bodies + job.id, body)
            if events:
                tx.zadd(self.logs + job.id, {e.dumps(): e.id for e in events})
            if dropped:
                tx.zrem(self.logs + job.id, *dropped)
            tx.sadd(self.index, job.id)
            tx.execute()

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
        with self.redis.pipeline(transaction=True) as tx:
            tx.delete(self.jobs + job_id, self.bodies + job_id, self.logs + job_id)
            tx.srem(self.index, job_id)
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
