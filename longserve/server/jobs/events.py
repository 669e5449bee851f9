"""A job's event log: what `GET /v1/jobs/{id}/events` streams (SSE).

Each job has one ordered log, ids from 1 up, kept in the job store's backend
with the job (so it survives a store restart and any gateway replica can
serve a reconnect) and deleted with it:

- `status`: the lifecycle's transitions (queued, running with its attempt and
  where it resumed from, the end state), planned by the state machine itself;
- `progress`: a heartbeat that carries new progress;
- `partial`: what the model passed to `ctx.emit`, forwarded by the runner;
- `result` (a succeeded job) or `error` (failed or cancelled): the final event.

Bounded: progress and partial events older than the newest MAX_EVENTS are
dropped; status, result and error events are always kept.
"""

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from longserve.api.jobs import ProgressView

if TYPE_CHECKING:
    from longserve.server.jobs.record import Job

MAX_EVENTS = 1000
KEPT = ("status", "result", "error")  # never dropped by the bound
FINAL = ("result", "error")  # a stream ends after one of these
ENDS = ("succeeded", "failed", "cancelled")  # statuses with a final event


@dataclass(frozen=True)
class JobEvent:
    id: int
    type: str  # status | progress | partial | result | error
    data: Any  # a result event's is filled in when read: the job's view, result included

    def dumps(self) -> str:
        return json.dumps([self.id, self.type, self.data], separators=(",", ":"))

    @classmethod
    def loads(cls, text: "str | bytes") -> "JobEvent":
        id, type, data = json.loads(text)
        return cls(id, type, data)


def kept(event: JobEvent, last_id: int) -> bool:
    """Whether the bound keeps `event` in a log whose newest id is `last_id`."""
    return event.type in KEPT or event.id > last_id - MAX_EVENTS


def oldest_trimmable(last_id: int) -> int:
    """Progress and partial events with ids up to this one are dropped."""
    return last_id - MAX_EVENTS


def lifecycle(old: "Optional[Job]", new: "Job") -> list[tuple[str, Any]]:
    """The events a record's change makes: (type, data), in order."""
    if old is None or old.status != new.status:
        if new.status == "running":
            return [("status", {"status": "running", "attempt": new.attempts, "resumed_from": new.resumed_from})]
        if new.status == "queued":
            return [("status", {"status": "queued"})]
        if new.status == "succeeded":
            return [("status", {"status": new.status}), ("result", None)]  # the result is read with the job
        if new.status in ENDS:
            return [("status", {"status": new.status}), ("error", new.view(with_result=False))]
        return []  # expired: the stream ended with the final event
    if new.status == "running" and new.progress != old.progress:
        return [("progress", ProgressView(**new.progress.model_dump(), fraction=new.progress.fraction).model_dump())]
    return []
