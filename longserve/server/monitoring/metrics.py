"""longserve's Prometheus metrics, through ray.util.metrics so Ray's metrics
export (and the Ray dashboard, and Grafana) sees them. Ray prefixes each name
with `ray_`: `longserve_requests_total` is scraped as `ray_longserve_requests_total`.

Create `Metrics()` once per process (a replica or an actor) and reuse it.
"""

from ray.util.metrics import Counter, Gauge, Histogram

# Seconds: from 5 ms to 30 min, so a 10-minute transcription has a bucket.
LATENCY_BOUNDARIES = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800]

# name: (kind, description, tag keys)
METRICS = {
    "longserve_queue_seconds": ("histogram", "Time a request or job waited for a replica.", ("model", "kind")),
    "longserve_run_seconds": ("histogram", "Time a replica spent on a request or job.", ("model", "kind")),
    "longserve_latency_seconds": (
        "histogram",
        "Arrival to answer (sync) or submit to finish (job).",
        ("model", "kind"),
    ),
    "longserve_requests_total": (
        "counter",
        "Sync requests by outcome: ok, timeout_queued, timeout_running, overloaded, client_error, server_error.",
        ("model", "outcome", "tenant"),
    ),
    "longserve_model_seconds_total": (
        "counter",
        "Seconds replicas spent on requests (kind sync) and jobs (kind job), per tenant.",
        ("model", "kind", "tenant"),
    ),
    "longserve_job_transitions_total": ("counter", "Jobs entering each status.", ("model", "status", "tenant")),
    "longserve_jobs_backlog": ("gauge", "Jobs queued or running now.", ("model", "state", "tenant")),
    "longserve_timeout_seconds": ("gauge", "The sync timeout in force (0: none).", ("model",)),
    "longserve_slow_total": ("counter", "Requests or jobs that ran over the slow threshold.", ("model", "kind")),
    "longserve_callback_attempts_total": (
        "counter",
        "Job callback POSTs by outcome: delivered, retry (will try again), failed (gave up).",
        ("model", "outcome"),
    ),
    "longserve_alerts_total": ("counter", "Alert events raised (sustained timeout or error rate).", ("model", "alert")),
}


class Metrics:
    def __init__(self):
        self._m = {}
        for name, (kind, description, tags) in METRICS.items():
            if kind == "histogram":
                self._m[name] = Histogram(name, description, boundaries=LATENCY_BOUNDARIES, tag_keys=tags)
            elif kind == "counter":
                self._m[name] = Counter(name, description, tag_keys=tags)
            else:
                self._m[name] = Gauge(name, description, tag_keys=tags)

    def observe(self, name: str, value: float, **tags: str) -> None:
        self._m[name].observe(value, tags=tags)

    def inc(self, name: str, value: float = 1, **tags: str) -> None:
        self._m[name].inc(value, tags=tags)

    def set(self, name: str, value: float, **tags: str) -> None:
        self._m[name].set(value, tags=tags)
