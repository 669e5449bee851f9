"""Render the reliability suite's figures (JSON lines) as docs/reliability.md.

    LONGSERVE_RELIABILITY=long LONGSERVE_RELIABILITY_OUT=/tmp/rel.jsonl \\
        flock /tmp/longserve-ray.lock .venv/bin/pytest -q tests/test_reliability.py
    .venv/bin/python scripts/reliability_report.py /tmp/rel.jsonl > docs/reliability.md
"""

import json
import sys

HEADER = """# Reliability under faults and load

Produced by `tests/test_reliability.py` ({mode} version) on {machine}, and rendered by
`scripts/reliability_report.py`. To reproduce:

```bash
rm -f /tmp/rel.jsonl
LONGSERVE_RELIABILITY=long LONGSERVE_RELIABILITY_OUT=/tmp/rel.jsonl .venv/bin/pytest -q -s tests/test_reliability.py
.venv/bin/python scripts/reliability_report.py /tmp/rel.jsonl > docs/reliability.md
```

Without `LONGSERVE_RELIABILITY=long` the same scenarios run smaller (CI, about 2 minutes).

How the figures are counted:

- **acknowledged**: job submissions answered 202. **completed**: those that ended `succeeded`.
  **lost**: acknowledged jobs that were missing or not in a final state by the scenario's deadline.
- **duplicated**: jobs whose model ran more often than the job's `attempts` count (the test
  model, `tests.slow_models:Recorder`, logs every run it starts with the job's tag), or whose
  stored result is another job's. **re-runs (counted)**: runs beyond the first, each one an
  attempt the job shows (a run cut off by a fault, then run again).
- **lease overdue**: jobs seen `running` in the store more than 1.5 s after their lease ended
  (the store is sampled every 0.25 s; its reaper looks every 0.5 s).
- **sync 5xx**: all 5xx answers to the sync traffic beside the jobs, of which **500/502**
  are those other than 503 (overloaded, with `Retry-After`) and 504 (the documented timeout).
- Callbacks: **received** = jobs whose completion callback reached the receiver (deduped on
  `webhook-id`); **repeats** = deliveries of a `webhook-id` already received.

The scenarios run on an app of their own (`rel`) on the test session's Ray cluster: one
Recorder model (a sleeper that logs its runs) with 2 replicas x 2 running + 4 queued, a 1 s sync
timeout, `lease_s: 2`, `max_attempts: 6`, callbacks retried from 0.2 s up to 1 s apart, 40 times.
The full Ray stop/start runs in two processes, each with its own cluster, on one sqlite file.
The model replica killed mid-job runs the sleeper (`Recorder`), not the transcriber: a
sleeper run is cut at a known point in a second, where a transcription takes minutes.

## What holds, and what does not yet

- **Held in every scenario below**: every acknowledged job ended `succeeded`; none was lost;
  no job ran more often than its `attempts` say (re-runs after a fault are visible as
  attempts, never silent); no result was stored twice (the store refuses an outcome from
  a runner whose lease or attempt is stale); no job was seen `running` past its lease,
  except while redis was down (below); every completion callback arrived (at least once,
  deduped on `webhook-id`).
- **Gateway killed: in-flight sync requests get a bare 500.** Requests being handled by
  the gateway replica when it dies are answered by Ray Serve's proxy with
  `500 Internal Server Error` in plain text (`ray/serve/_private/http_util.py`: a
  `RayActorError` becomes 500), not a 503 in the error shape. The gateway cannot answer
  for itself once it is dead, so longserve cannot change this; `gateway.num_replicas: 2`
  shortens the outage (the proxy routes new requests to the live replica) but the
  requests in flight on the dead one still get the 500. New requests and job submissions
  sent while the replacement starts (several seconds on 2 cores) wait for it, then succeed.
- **A lease can outlive its end while the store's backend is down.** The store returns a
  job to the queue by writing it to the backend first; while redis is down it cannot, so a
  job whose runner stopped renewing stays `running` until redis is back (bounded by the
  outage; see "most seconds past a lease" under the redis restart). Submissions meanwhile
  are refused with `503 jobs_unavailable` + `Retry-After` (they were 500s before this suite).
- **JobStore memory grows with the jobs it keeps.** The store holds every job (finished
  ones too, results included) in memory until it expires (`result_ttl_s`, a day by
  default), then a tombstone without result or input until `forget_after_s` later (a
  day by default), when the job is deleted: see "JobStore growth KiB per job kept" under
  the job flood. A sync burst does not touch it. Size both for the job rate you expect.
  (That figure, RSS growth during live submits and long-polls, is about twice the
  ~3.3 KB per job of benchmarks/RESULTS.md, which preloads finished records straight
  into the store: it also counts what the live traffic leaves allocated.)
- **Fixed while writing this suite**: a job store failure while a runner stored a job's
  outcome (the store's redis restarting) was caught as the model's own error, so a job
  whose model had succeeded could end `failed` (`model_error`) once the store returned.
  The runner now retries storing the outcome (fenced by lease and attempt) for up to
  3 x `lease_s`, then leaves it to the lease (`tests/test_runner_outcome.py`).
"""


def cell(value) -> str:
    if value is None or value == {}:
        return "—"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, list):
        return " → ".join(str(v) for v in value)
    return str(value)


ROWS = [
    ("load", "load held"), ("faults", "faults injected"), ("acknowledged", "jobs acknowledged"),
    ("completed", "completed"), ("failed", "failed"), ("lost", "lost"), ("duplicated", "duplicated"),
    ("reruns_counted", "re-runs (counted as attempts)"), ("max_attempts_seen", "most attempts of one job"),
    ("lease_overdue", "jobs running past their lease"), ("lease_overdue_max_s", "most seconds past a lease"),
    ("redis_down_s", "redis down (s)"), ("submit_status", "submit answers"),
    ("submits_resent", "submissions sent again after a lost answer"),
    ("requests", "sync requests"), ("sync_status", "sync answers"), ("sync_5xx", "sync 5xx"),
    ("sync_500", "sync 500/502"), ("sync_unexpected", "answers outside the promise"),
    ("callbacks", "callback state on the jobs"), ("callbacks_received", "callbacks received (deduped)"),
    ("callback_repeats", "callback repeats"), ("receiver_down_s", "receiver down (s)"),
    ("gateway_recovered_s", "until /readyz again (s)"), ("latency", "sync latency"),
    ("first_request_after_burst", "first request after the burst"),
    ("gateway_rss_mb", "gateway RSS MiB (before → after)"), ("store_rss_mb", "JobStore RSS MiB (before → after)"),
    ("store_kib_per_job", "JobStore growth KiB per job kept"), ("submit_per_s", "submissions per s"),
    ("poll_wake_lag", "long-poll wake-up after the job ended"), ("long_poll_round_trip", "long-poll round trip"),
    ("get_latency", "GET /v1/jobs/{id} latency"), ("seconds", "scenario seconds"),
]


def render(lines: list[dict], machine: str) -> str:
    mode = lines[0].get("mode", "short") if lines else "short"
    out = [HEADER.format(mode=mode, machine=machine)]
    for figures in lines:
        out.append(f"\n## {figures['scenario']}\n\n| | |\n|---|---|")
        for key, label in ROWS:
            if key in figures:
                out.append(f"| {label} | {cell(figures[key])} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    path = sys.argv[1]
    machine = sys.argv[2] if len(sys.argv) > 2 else "the 2-core, 24 GiB dev machine (CPU only)"
    with open(path) as f:
        print(render([json.loads(line) for line in f if line.strip()], machine), end="")
