"""Per-tenant usage, for `GET /v1/usage`: jobs submitted, sync requests and
model-seconds (time a replica spent on the tenant's work), per model, in
one-minute buckets.

Kept in the JobStore actor's memory for RETAIN_S: the store counts jobs and
their run time itself; gateway replicas send their sync requests in batches
(one call a second at most). Not persisted: a restarted store starts at zero.
"""

from collections import defaultdict
from typing import Optional

BUCKET_S = 60
RETAIN_S = 86400.0
FIELDS = ("jobs", "requests", "model_seconds")


class Usage:
    def __init__(self):
        # minute -> (tenant, model) -> [jobs, requests, model_seconds]
        self.buckets: dict[int, dict[tuple[str, str], list[float]]] = defaultdict(
            lambda: defaultdict(lambda: [0, 0, 0.0])
        )

    def add(self, tenant: str, model: str, now: float, jobs: int = 0, requests: int = 0, seconds: float = 0.0) -> None:
        row = self.buckets[int(now // BUCKET_S)][(tenant, model)]
        row[0] += jobs
        row[1] += requests
        row[2] += seconds
        oldest = int((now - RETAIN_S) // BUCKET_S)
        for minute in [m for m in self.buckets if m < oldest]:
            del self.buckets[minute]

    def report(self, tenant: Optional[str], since: float) -> dict[str, dict[str, dict[str, float]]]:
        """tenant -> model -> {jobs, requests, model_seconds} from the minute holding `since` on
        (None: every tenant)."""
        out: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
        first = int(since // BUCKET_S)
        for minute, rows in self.buckets.items():
            if minute < first:
                continue
            for (who, model), row in rows.items():
                if tenant is None or who == tenant:
                    totals = out[who].setdefault(model, dict.fromkeys(FIELDS, 0))
                    for name, value in zip(FIELDS, row, strict=True):
                        totals[name] += value
        for models in out.values():
            for totals in models.values():
                totals["model_seconds"] = round(totals["model_seconds"], 3)
        return dict(out)
