"""The machinery of the reliability suite (tests/test_reliability.py): a
workload of tagged jobs and sync traffic, the checks that nothing acknowledged
is lost or silently run twice, and the figures each scenario records.

    LONGSERVE_RELIABILITY=long        the longer version (default: short, for CI)
    LONGSERVE_RELIABILITY_OUT=PATH    append each scenario's figures to PATH (JSON lines);
                                      scripts/reliability_report.py renders docs/reliability.md
"""

import json
import os
import statistics
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import httpx
import ray

from longserve.client.core import error_body
from longserve.server.monitoring.stats import percentile

LONG = os.environ.get("LONGSERVE_RELIABILITY", "short") == "long"
TERMINAL = {"succeeded", "failed", "cancelled", "expired"}
# The store's reaper looks every 0.5 s; a lease may be this far past its end before it is seen.
LEASE_SLACK_S = 1.5
RESENDS = 5  # a submission without an answer from the app is sent again this often (0.2 s apart)


def size(short, long):
    return long if LONG else short


def record(figures: dict) -> dict:
    """Print a scenario's figures and append them to $LONGSERVE_RELIABILITY_OUT."""
    figures = {"mode": "long" if LONG else "short", **figures}
    print("\nreliability:", json.dumps(figures))
    out = os.environ.get("LONGSERVE_RELIABILITY_OUT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(figures) + "\n")
    return figures


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 50) * 1000, 1),
        "p99_ms": round(percentile(values, 99) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
        "mean_ms": round(statistics.fmean(values) * 1000, 1),
    }


def named_actor(part: str, timeout_s: float = 60) -> tuple[str, str]:
    """(name, namespace) of the one live named actor whose name contains `part`,
    waiting for it while Ray or Serve starts it again."""
    deadline = time.monotonic() + timeout_s
    while True:
        actors = [a for a in ray.util.list_named_actors(all_namespaces=True) if part in a["name"]]
        if len(actors) == 1 or time.monotonic() > deadline:
            (actor,) = actors
            return actor["name"], actor["namespace"]
        time.sleep(0.25)


def kill_named(part: str, restart: bool) -> None:
    name, namespace = named_actor(part)
    ray.kill(ray.get_actor(name, namespace=namespace), no_restart=not restart)


def actor_rss_mb(part: str) -> float:
    """Resident memory (MiB) of the live actor process whose name contains `part`
    (a local cluster: the process is on this machine)."""
    name, namespace = named_actor(part)
    actor = ray.get_actor(name, namespace=namespace)
    pid = ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=30)
    status = Path(f"/proc/{pid}/status").read_text()
    (kib,) = [line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")]
    return round(int(kib) / 1024, 1)


def wait_ready(url: str, timeout_s: float = 120) -> float:
    """Seconds until GET /readyz answers 200 (the app is whole again)."""
    started = time.monotonic()
    while True:
        try:
            if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                return round(time.monotonic() - started, 2)
        except httpx.HTTPError:
            pass
        assert time.monotonic() - started < timeout_s, f"{url} not ready after {timeout_s} s"
        time.sleep(0.25)


def check_sync(response: httpx.Response) -> Optional[str]:
    """None if the answer is one the sync API promises under load, else why not."""
    if response.status_code == 200:
        return None
    try:
        error = response.json()["error"]
    except Exception:
        return f"{response.status_code} without the error shape: {response.text[:200]!r}"
    if response.status_code == 503 and error["type"] in ("overloaded", "unavailable"):
        return None if int(response.headers.get("Retry-After", "0")) >= 1 else "503 without Retry-After"
    if response.status_code == 504 and error["type"] == "timeout":
        missing = {"model", "timeout_s", "timeout_source", "stage", "hint"} - error.keys()
        return f"504 body lacks {missing}" if missing else None
    return f"{response.status_code} {error}"


class Workload:
    """Tagged jobs on one app's Recorder model, sync traffic beside them, and a
    watch on the store for jobs running past their lease."""

    def __init__(self, url: str, model: str, runs_log: Path, store: str, callback_url: Optional[str] = None):
        self.url, self.model, self.runs_log, self.store = url, model, runs_log, store
        self.callback_url = callback_url
        self.client = httpx.Client(base_url=url, timeout=60)
        self.jobs: dict[str, str] = {}  # tag -> acknowledged job id
        self.submit_status: Counter = Counter()
        self.resent = 0  # submissions sent again after a lost answer, then acknowledged
        self.unanswered = 0  # submissions still without an answer from the app after RESENDS
        self.submit_bad: list[str] = []  # the app's answers other than 202 and 503 + Retry-After
        self.sync_status: Counter = Counter()
        self.sync_bad: list[str] = []
        self.overdue: dict[str, float] = {}  # job id -> the most its lease was seen overdue
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.started = time.monotonic()

    # -- load ------------------------------------------------------------------

    def submit(self, count: int, seconds: float, workers: int = 4) -> None:
        def one(_):
            tag = uuid.uuid4().hex[:16]
            params = {"callback_url": self.callback_url} if self.callback_url else {}
            # Keyed by the tag, as the SDK keys every submission: one whose answer
            # was lost (a proxy's bare 5xx, a dropped connection) is sent again
            # and must not make a second job.
            for attempt in range(RESENDS + 1):
                try:
                    response = self.client.post(
                        f"/v1/models/{self.model}/jobs",
                        json={"seconds": seconds, "tag": tag},
                        params=params,
                        headers={"Idempotency-Key": tag},
                    )
                except httpx.HTTPError as exc:
                    self.submit_status[type(exc).__name__] += 1
                else:
                    self.submit_status[response.status_code] += 1
                    if response.status_code == 202:
                        self.jobs[tag] = response.json()["id"]
                        self.resent += attempt
                        return
                    if error_body(response) is not None:  # the app's own answer (not a proxy's): final
                        if response.status_code != 503 or "retry-after" not in response.headers:
                            self.submit_bad.append(f"{response.status_code} {response.text[:200]}")
                        return
                time.sleep(0.2)
            self.unanswered += 1

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, range(count)))

    def background(self, sync_seconds: float = 0.05, sync_workers: int = 1) -> "Workload":
        """Start sync traffic and the lease watch; `close` stops them."""

        def sync():
            with httpx.Client(base_url=self.url, timeout=30) as client:
                while not self.stop.is_set():
                    try:
                        response = client.post(f"/v1/models/{self.model}/predict", json={"seconds": sync_seconds})
                    except httpx.HTTPError as exc:  # e.g. the connection dropped by a dying proxy path
                        self.sync_status[type(exc).__name__] += 1
                        time.sleep(0.05)
                        continue
                    self.sync_status[response.status_code] += 1
                    problem = check_sync(response)
                    if problem:
                        self.sync_bad.append(problem)
                        time.sleep(0.05)

        def watch():
            name, namespace = named_actor(self.store)
            while not self.stop.wait(0.25):
                try:
                    store = ray.get_actor(name, namespace=namespace)
                    running, _ = ray.get(store.list.remote(None, "running", 1000), timeout=2)
                except Exception:  # restarting: it cannot reap now, and no one can see its leases
                    continue
                now = time.time()
                for job in running:
                    late = now - job.lease_expires_at
                    if late > LEASE_SLACK_S:
                        self.overdue[job.id] = max(late, self.overdue.get(job.id, 0))

        for target in [watch] + [sync] * sync_workers:
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)
        self.client.close()

    # -- the verdict -------------------------------------------------------------

    def finish(self, timeout_s: float) -> dict:
        """Wait for every acknowledged job to end; the figures of the scenario."""
        ids = {job_id: tag for tag, job_id in self.jobs.items()}
        final: dict[str, dict] = {}
        deadline = time.monotonic() + timeout_s
        while len(final) < len(ids) and time.monotonic() < deadline:
            for job_id in [i for i in ids if i not in final]:
                try:
                    response = self.client.get(f"/v1/jobs/{job_id}")
                except httpx.HTTPError:
                    break
                if response.status_code == 404 or (
                    response.status_code == 200 and response.json()["status"] in TERMINAL
                ):
                    final[job_id] = response.json()
            else:
                time.sleep(0.2)
                continue
            time.sleep(0.5)
        self.close()
        runs = (
            Counter(line.split()[0] for line in self.runs_log.read_text().splitlines())
            if self.runs_log.exists()
            else Counter()
        )
        lost = [i for i in ids if i not in final or final[i].get("status") not in TERMINAL]
        statuses = Counter(job.get("status", "missing") for job in final.values())
        duplicated = []
        for job_id, tag in ids.items():
            job = final.get(job_id, {})
            if runs[tag] > job.get("attempts", 0):  # ran more often than the store counted
                duplicated.append(job_id)
            elif job.get("status") == "succeeded" and job["result"]["tag"] != tag:
                duplicated.append(job_id)  # someone else's result
        callbacks = Counter((job.get("callback") or {}).get("status") for job in final.values() if job.get("callback"))
        return {
            "acknowledged": len(ids),
            "completed": statuses["succeeded"],
            "failed": statuses["failed"],
            "lost": len(lost),
            "duplicated": len(duplicated),
            "reruns_counted": sum(max(0, runs[t] - 1) for t in ids.values()),
            "max_attempts_seen": max((job.get("attempts", 0) for job in final.values()), default=0),
            "lease_overdue": len(self.overdue),
            "lease_overdue_max_s": round(max(self.overdue.values(), default=0), 1),
            "submit_status": dict(sorted((str(k), v) for k, v in self.submit_status.items())),
            "submits_resent": self.resent,
            "submits_unanswered": self.unanswered,
            "submits_refused_badly": len(self.submit_bad),
            "sync_status": dict(sorted((str(k), v) for k, v in self.sync_status.items())),
            "sync_5xx": sum(v for k, v in self.sync_status.items() if isinstance(k, int) and k >= 500),
            "sync_500": sum(
                v for k, v in self.sync_status.items() if isinstance(k, int) and k >= 500 and k not in (503, 504)
            ),
            "sync_unexpected": len(self.sync_bad),
            "callbacks": dict(callbacks) if callbacks else None,
            "seconds": round(time.monotonic() - self.started, 1),
            "_lost_ids": lost[:5],
            "_duplicated_ids": duplicated[:5],
            "_sync_bad": self.sync_bad[:5],
            "_submit_bad": self.submit_bad[:5],
            "_overdue": dict(list(self.overdue.items())[:5]),
        }


def assert_nothing_lost(figures: dict, overdue_allowed_s: float = 0, proxy_answers: bool = False) -> None:
    """`overdue_allowed_s`: how long past LEASE_SLACK_S a lease may run while the
    store's backend is down (the store cannot persist the job's return to the queue).
    `proxy_answers`: the gateway was killed, so a submission in flight on it may get
    the proxy's bare 500 (or a dropped connection) and be sent again."""
    assert figures["acknowledged"] > 0, figures
    assert figures["lost"] == 0, figures
    assert figures["duplicated"] == 0, figures
    assert (
        figures["lease_overdue_max_s"] <= LEASE_SLACK_S + overdue_allowed_s
        if overdue_allowed_s
        else figures["lease_overdue"] == 0
    ), figures
    # The app accepts a submission (202) or refuses it in the error shape with Retry-After (503), never a 500.
    assert figures["submits_refused_badly"] == 0, figures
    # Only the submissions in flight on a dying gateway get the proxy's answer instead; sent again, each is
    # acknowledged (and the Idempotency-Key keeps it one job: `duplicated` above).
    assert figures["submits_unanswered"] == 0, figures
    if not proxy_answers:
        assert set(figures["submit_status"]) <= {"202", "503"}, figures


def dedupe_deliveries(received: dict, prefix: str) -> tuple[dict[str, str], int]:
    """{job id: webhook-id} of the callbacks received under `prefix`, and how
    many POSTs were repeats of a webhook-id already seen (at least once, deduped)."""
    seen: dict[str, str] = {}
    repeats = 0
    per_id: defaultdict[str, int] = defaultdict(int)
    for path, calls in list(received.items()):
        if not path.startswith(prefix):
            continue
        for headers, body in calls:
            per_id[headers["webhook-id"]] += 1
            seen[json.loads(body)["data"]["id"]] = headers["webhook-id"]
    repeats = sum(n - 1 for n in per_id.values())
    return seen, repeats
