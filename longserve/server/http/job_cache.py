"""Finished jobs as this gateway replica last read them, for polls.

A poll of a finished job is the commonest job request, and its answer rarely
changes; asking the JobStore actor each time costs a Ray call on both sides
(half of a poll's ~10 ms of CPU, docs/benchmarks.md#job-operations). A record
here is served for at most `jobs.gateway_cache_s` (and never past its
`expires_at`), so what can still change a finished job shows within that:
a retry or erase sent to another gateway replica, expiry, a callback's
delivery. What this replica does itself to a job (retry, cancel, erase) drops
its entry first, so its own changes show at once: an erase is never served
stale by the gateway that erased.

Only finished, unerased jobs whose callback (if any) is settled are kept:
a pending callback changes the record within seconds. The answer's body is
kept too, serialized once.
"""

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

from longserve.api.jobs import FINISHED
from longserve.server.http.jobs import job_response
from longserve.server.jobs.record import Job

MAX_ENTRIES = 10_000  # ~1-2 KiB each


@dataclass(frozen=True)
class Entry:
    job: Job
    body: bytes  # the JSON of GET /v1/jobs/{id}
    until: float  # time.monotonic()


class FinishedJobs:
    def __init__(self, max_age_s: float, max_entries: int = MAX_ENTRIES):
        self.max_age_s = max_age_s
        self.max_entries = max_entries
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        # job id -> when this replica last changed it: a read sent before that may be older than the change
        self.fences: OrderedDict[str, float] = OrderedDict()

    @staticmethod
    def clock() -> float:
        """Take before asking the store; give to `put` with what it answered."""
        return time.monotonic()

    def get(self, job_id: str) -> Optional[Entry]:
        entry = self.entries.get(job_id)
        if entry is None:
            return None
        if time.monotonic() >= entry.until:
            del self.entries[job_id]
            return None
        return entry

    def put(self, job: Job, asked_at: float) -> None:
        """Keep `job`, as the store answered a read sent at `asked_at` (`clock()`), if its record is settled."""
        if not self.max_age_s or not cacheable(job) or asked_at <= self.fences.get(job.id, -1.0):
            self.entries.pop(job.id, None)
            return
        until = time.monotonic() + self.max_age_s
        if job.expires_at is not None:  # expiry changes it: not past that
            until = min(until, time.monotonic() + job.expires_at - time.time())
        body = bytes(job_response(job).body)  # as the store's answer would be rendered
        self.entries[job.id] = Entry(job, body, until)
        self.entries.move_to_end(job.id)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)

    def drop(self, job_id: str) -> None:
        """This replica is changing the job: forget it, and any read of it in flight."""
        self.entries.pop(job_id, None)
        self.fences[job_id] = time.monotonic()
        self.fences.move_to_end(job_id)
        while len(self.fences) > self.max_entries:
            self.fences.popitem(last=False)


def cacheable(job: Job) -> bool:
    settled_callback = job.callback is None or job.callback.status != "pending"
    return job.status in FINISHED and not job.erased and settled_callback
