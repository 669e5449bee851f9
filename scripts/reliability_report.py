"""Render docs/reliability.md, the whole page, from the reliability suite's figures.

    rm -f /tmp/rel.jsonl
    LONGSERVE_RELIABILITY=long LONGSERVE_RELIABILITY_OUT=/tmp/rel.jsonl \\
        .venv/bin/pytest -q -s tests/test_reliability.py
    .venv/bin/python scripts/reliability_report.py /tmp/rel.jsonl

With a path, the figures are copied to docs/reliability-figures.jsonl (each
scenario stamped with this machine unless it names one) and the page rendered
from them; without one, the committed figures are rendered again. Every number
and every verdict on the page comes from the figures; the fixed text here only
explains how they are counted. tests/test_docs.py checks that the committed
page is the render of the committed figures.
"""

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "docs" / "reliability-figures.jsonl"
PAGE = ROOT / "docs" / "reliability.md"

HEADER = """# Reliability under faults and load

<!-- Rendered by scripts/reliability_report.py from docs/reliability-figures.jsonl: edit those, not this page. -->

`tests/test_reliability.py` injects faults while jobs and sync traffic run, and loads
the service; each scenario checks that every acknowledged job ends, none is lost or
run more often than its `attempts` say, no job stays `running` past its lease, and
callbacks arrive at least once, and records its figures. The figures below
(`docs/reliability-figures.jsonl`) are from {mode}, run on {machine}.
To reproduce:

```bash
rm -f /tmp/rel.jsonl
LONGSERVE_RELIABILITY=long LONGSERVE_RELIABILITY_OUT=/tmp/rel.jsonl .venv/bin/pytest -q -s tests/test_reliability.py
.venv/bin/python scripts/reliability_report.py /tmp/rel.jsonl   # copies the figures here, renders this page
```

Without `LONGSERVE_RELIABILITY=long` the same scenarios run smaller: that is the
version `make test` and CI run. `pytest -m reliability` runs only these;
`-m "not reliability"` skips them.
"""

SETUP = """
## How the figures are counted

- **acknowledged**: job submissions answered 202. **completed**: those that ended `succeeded`.
  **lost**: acknowledged jobs that were missing or not in a final state by the scenario's deadline.
- **duplicated**: jobs whose model ran more often than the job's `attempts` count (the test
  model, `tests.slow_models:Recorder`, logs every run it starts with the job's tag), or whose
  stored result is another job's. **re-runs (counted)**: runs beyond the first, each one an
  attempt the job shows (a run cut off by a fault, then run again).
- **jobs running past their lease**: jobs seen `running` in the store later after their lease
  ended than the store's reaper explains (`LEASE_SLACK_S` in `tests/reliability.py`; the store
  is sampled every 0.25 s).
- **sync 5xx**: all 5xx answers to the sync traffic beside the jobs, of which **500/502**
  are those other than 503 (overloaded, with `Retry-After`) and 504 (the documented timeout).
  **answers outside the promise**: sync answers other than 200, 503 + `Retry-After` in the
  error shape, or the documented 504.
- **submissions sent again**: submissions whose answer was not the app's own (a proxy's bare
  500, a dropped connection), sent again under their `Idempotency-Key`, then acknowledged.
- Callbacks: **received** = jobs whose completion callback reached the receiver (deduped on
  `webhook-id`); **repeats** = deliveries of a `webhook-id` already received.

The scenarios run on an app of their own (`rel`, `rel_config` in `tests/test_reliability.py`)
on the test session's Ray cluster: one Recorder model (a sleeper that logs its runs) on 2
replicas with small queues, a short sync timeout, a short `lease_s` and fast callback retries,
so faults show within seconds. The full Ray stop/start runs in two processes, each with its
own cluster, on one sqlite file. The model replica killed mid-job runs the sleeper: a sleeper
run is cut at a known point. One scenario runs the real transcriber on an app of its own (`tx`,
`tx_config`): a clean transcription job of real speech, then the same audio again, its replica
killed once the job's progress passes 70%. **a resumed job gives a clean run's result**: the
second attempt resumed from its last checkpoint (`resumed_from` > 0, seconds of audio), and its
text is no further from what the audio says than the worse of two clean runs (on two replicas) is,
give or take 10 points of word error rate (word-level edit distance, `tests/transcripts.py`). Not
"within 2% of a clean run's text": two clean runs in two processes differ by that much here (the
int8 kernels hear a word differently, and Whisper now and then drops a sentence where the clip
repeats), and the resumed part runs in another process than the part before the fault: a
resumed run has been seen 4 points past the worse of its two clean runs (14.6% vs 10.6%), while
a resume that decoded the remainder twice or skipped it would be 30 points or more away.
"""

# What each verdict column checks, in the order of the summary table.
CHECKS = [
    ("completed", "every acknowledged job succeeded"),
    ("lost", "none lost"),
    ("duplicated", "none run more often than its attempts say"),
    ("lease", "no job running past its lease"),
    ("callbacks", "every completion callback arrived"),
    ("submits", "every submission answered by the app"),
    ("sync", "sync answers within the promise"),
    ("resume", "a resumed job gives a clean run's result"),
]

NOTES = {
    "proxy_500": """- **A gateway replica that dies mid-request: its requests get a bare 500.** Requests being
  handled by the gateway replica when it dies are answered by Ray Serve's proxy with
  `500 Internal Server Error` in plain text (Ray Serve turns the replica's `RayActorError`
  into a 500), not a 503 in the error shape. The gateway cannot answer for itself once it is
  dead, so longserve cannot change this; `gateway.num_replicas: 2` shortens the outage (the
  proxy routes new requests to the live replica) but the requests in flight on the dead one
  still get the 500. New requests and job submissions sent while the replacement starts wait
  for it, then succeed. A submission in flight gets the same 500, and its client cannot know
  whether the job was stored: sending it again under the same `Idempotency-Key` is safe (the
  store replays the job if it exists), and the SDK keys every submission and does this by
  itself. The scenario holds one submission's upload open across the kill and sends it again
  through the SDK; every submission sent again must be acknowledged and run once.""",
    "lease_outage": """- **A lease can outlive its end while the store's backend is down.** The store returns a
  job to the queue by writing it to the backend first; while redis is down it cannot, so a
  job whose runner stopped renewing stays `running` until redis is back (bounded by the
  outage). Submissions meanwhile are refused with `503 jobs_unavailable` + `Retry-After`.""",
    "store_memory": """- **JobStore memory grows with the jobs it keeps: {kib} KiB per job** in "{scenario}".
  The store holds every job (finished ones too, results included) in memory until it
  expires (`jobs.result_ttl_s`), then a tombstone without result or input until
  `jobs.forget_after_s` later, when the job is deleted. That figure is RSS growth during live
  submits and long-polls, so it also counts what the live traffic leaves allocated;
  benchmarks/RESULTS.md measures the stored records alone. Size both settings for the job
  rate you expect.""",
    "outcome_retry": """- **A job store failure while a runner stores a job's outcome** (the store's redis
  restarting) does not turn the model's success into a failure: the runner retries storing
  the outcome, fenced by lease and attempt, for up to 3 x `lease_s`, then leaves it to the
  lease (`tests/test_runner_outcome.py`).""",
}

ROWS = [
    ("load", "load held"),
    ("faults", "faults injected"),
    ("acknowledged", "jobs acknowledged"),
    ("completed", "completed"),
    ("failed", "failed"),
    ("lost", "lost"),
    ("duplicated", "duplicated"),
    ("reruns_counted", "re-runs (counted as attempts)"),
    ("max_attempts_seen", "most attempts of one job"),
    ("lease_overdue", "jobs running past their lease"),
    ("lease_overdue_max_s", "most seconds past a lease"),
    ("redis_down_s", "redis down (s)"),
    ("submit_status", "submit answers"),
    ("submits_resent", "submissions sent again after a lost answer"),
    ("submits_unanswered", "submissions never answered by the app"),
    ("submits_refused_badly", "submissions refused outside the promise"),
    ("requests", "sync requests"),
    ("sync_status", "sync answers"),
    ("sync_5xx", "sync 5xx"),
    ("sync_500", "sync 500/502"),
    ("sync_unexpected", "answers outside the promise"),
    ("callbacks", "callback state on the jobs"),
    ("callbacks_received", "callbacks received (deduped)"),
    ("callback_repeats", "callback repeats"),
    ("receiver_down_s", "receiver down (s)"),
    ("gateway_recovered_s", "until /readyz again (s)"),
    ("latency", "sync latency"),
    ("first_request_after_burst", "first request after the burst"),
    ("gateway_rss_mb", "gateway RSS MiB (before → after)"),
    ("store_rss_mb", "JobStore RSS MiB (before → after)"),
    ("store_kib_per_job", "JobStore growth KiB per job kept"),
    ("submit_per_s", "submissions per s"),
    ("poll_wake_lag", "long-poll wake-up after the job ended"),
    ("long_poll_round_trip", "long-poll round trip"),
    ("get_latency", "GET /v1/jobs/{id} latency"),
    ("killed_at_s", "killed at (s of audio)"),
    ("resumed_from", "resumed from (s of audio)"),
    ("wer_vs_clean", "word error rate vs a clean run"),
    ("wer_clean_vs_clean", "word error rate between two clean runs"),
    ("wer_vs_speech", "word error rate vs the speech"),
    ("run_s", "run seconds (clean → resumed job)"),
    ("seconds", "scenario seconds"),
]

# A resumed transcription's word error rate vs the speech: at most 10 points over the worse clean run's.
WER_LIMIT = 0.10

PROXY_500 = "500 without the error shape"


def cell(value) -> str:
    if value is None or value == {}:
        return "—"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, list):
        return " → ".join(str(v) for v in value)
    return str(value)


def measured(figures: dict, *keys: str) -> bool:
    return all(figures.get(k) is not None for k in keys)


def verdicts(f: dict) -> dict[str, tuple[Optional[bool], str]]:
    """check -> (held: True / False / None when not measured, note), from one scenario's figures."""
    out: dict[str, tuple[Optional[bool], str]] = {check: (None, "") for check, _ in CHECKS}
    if measured(f, "acknowledged", "completed"):
        out["completed"] = (f["completed"] == f["acknowledged"], f"{f['completed']} of {f['acknowledged']}")
    if measured(f, "lost"):
        out["lost"] = (f["lost"] == 0, f"{f['lost']} lost" if f["lost"] else "")
    if measured(f, "duplicated"):
        out["duplicated"] = (f["duplicated"] == 0, f"{f['duplicated']} duplicated" if f["duplicated"] else "")
    if measured(f, "lease_overdue"):
        if f["lease_overdue"] == 0:
            out["lease"] = (True, "")
        elif measured(f, "redis_down_s", "lease_overdue_max_s") and f["lease_overdue_max_s"] <= f["redis_down_s"]:
            out["lease"] = (
                True,
                f"{f['lease_overdue']} jobs, at most {f['lease_overdue_max_s']} s, "
                f"while redis was down {f['redis_down_s']} s",
            )
        else:
            out["lease"] = (False, f"{f['lease_overdue']} jobs, at most {f.get('lease_overdue_max_s')} s")
    if measured(f, "callbacks_received", "acknowledged"):
        out["callbacks"] = (
            f["callbacks_received"] == f["acknowledged"],
            f"{f['callbacks_received']} of {f['acknowledged']}",
        )
    if measured(f, "submits_unanswered", "submits_refused_badly"):
        bad = f["submits_unanswered"] + f["submits_refused_badly"]
        out["submits"] = (bad == 0, f"{bad} not" if bad else "")
    if measured(f, "sync_unexpected") and (f.get("sync_status") or f.get("requests")):
        bad = f["sync_unexpected"]
        if bad == 0:
            out["sync"] = (True, "")
        else:
            proxy = sum(1 for p in f.get("_sync_bad", []) if p.startswith(PROXY_500))
            out["sync"] = (
                False,
                f"{bad} bare 500 from the proxy" if proxy == bad == len(f.get("_sync_bad", [])) else f"{bad} outside",
            )
    if measured(f, "wer_vs_speech", "resumed_from"):
        resumed, *clean = f["wer_vs_speech"].values()  # the resumed job's, then the clean runs'
        out["resume"] = (
            f["resumed_from"] > 0 and resumed <= max(clean) + WER_LIMIT,
            f"from {f['resumed_from']} s; {resumed:.1%} vs {max(clean):.1%} WER",
        )
    return out


def mark(held: Optional[bool], note: str) -> str:
    sign = {True: "yes", False: "**no**", None: "—"}[held]
    return f"{sign} ({note})" if note else sign


def summary(lines: list[dict]) -> list[str]:
    out = ["\n## What holds\n"]
    table = ["| scenario | " + " | ".join(label for _, label in CHECKS) + " |", "|---|" + "---|" * len(CHECKS)]
    held_everywhere, failures = [], []
    results = [(f["scenario"], verdicts(f)) for f in lines]
    outage = [scenario for scenario, v in results if v["lease"][0] and v["lease"][1]]
    for scenario, v in results:
        table.append(f"| {scenario} | " + " | ".join(mark(*v[check]) for check, _ in CHECKS) + " |")
    for check, label in CHECKS:
        seen = [(scenario, v[check]) for scenario, v in results if v[check][0] is not None]
        bad = [(scenario, note) for scenario, (held, note) in seen if held is False]
        if seen and not bad:
            if check == "lease" and outage:
                label += (
                    " except while the store's backend was down ("
                    + ", ".join(f'"{s}"' for s in outage)
                    + ": see the notes)"
                )
            held_everywhere.append(label)
        failures += [f'{label}, in "{scenario}" ({note})' for scenario, note in bad]
    if held_everywhere:
        out.append(f"Held in every scenario that measures it: {'; '.join(held_everywhere)}.")
    if failures:
        out.append("Not held: " + "; ".join(failures) + ".")
    out += ["", *table, "", "Notes on what the figures show:", ""]
    notes = []
    if any(v["sync"][0] is False and "bare 500" in v["sync"][1] for _, v in results):
        notes.append(NOTES["proxy_500"])
    if outage:
        notes.append(NOTES["lease_outage"])
    for f in lines:
        if f.get("store_kib_per_job") is not None:
            notes.append(NOTES["store_memory"].format(kib=f["store_kib_per_job"], scenario=f["scenario"]))
    notes.append(NOTES["outcome_retry"])
    out.append("\n".join(notes))
    return out


def describe(values: list[str], what: str) -> str:
    distinct = list(dict.fromkeys(values))
    return distinct[0] if len(distinct) == 1 else f"several {what} (named under each scenario)"


def render(lines: list[dict]) -> str:
    modes = [f.get("mode", "short") for f in lines]
    machines = [f.get("machine", "an unrecorded machine") for f in lines]
    one_mode, one_machine = len(set(modes)) <= 1, len(set(machines)) <= 1
    out = [
        HEADER.format(
            mode=describe([f"the {m} version" for m in modes], "versions"), machine=describe(machines, "machines")
        ).rstrip("\n")
    ]
    out += summary(lines)
    out.append(SETUP.rstrip("\n"))
    for f in lines:
        out.append(f"\n## {f['scenario']}\n")
        if not (one_mode and one_machine):
            out.append(f"The {f.get('mode', 'short')} version, on {f.get('machine', 'an unrecorded machine')}.\n")
        out.append("| | |\n|---|---|")
        for key, label in ROWS:
            if key in f:
                out.append(f"| {label} | {cell(f[key])} |")
    return "\n".join(out) + "\n"


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def this_machine() -> str:
    try:
        kib = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        )
        memory = f", {round(kib / 1024**2)} GiB"
    except (OSError, StopIteration):
        memory = ""
    gpu = "a GPU present" if shutil.which("nvidia-smi") else "CPU only"
    return f"a {os.cpu_count()}-core machine{memory} ({gpu})"


def stamped(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    machine = this_machine()
    return [figures if "machine" in figures else {**figures, "machine": machine} for figures in lines]


def main(argv: list[str]) -> None:
    if argv:
        lines = stamped(read(Path(argv[0])))
        FIGURES.write_text("".join(json.dumps(figures) + "\n" for figures in lines))
    PAGE.write_text(render(read(FIGURES)))
    print(f"wrote {PAGE.relative_to(ROOT)} from {FIGURES.relative_to(ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:])
