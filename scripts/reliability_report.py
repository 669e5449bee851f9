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
"""


def cell(value) -> str:
    if value is None:
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
    ("lease_overdue", "jobs running past their lease"), ("submit_status", "submit answers"),
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
