"""Stats: one named actor per app that every gateway replica and job runner
sends its finished requests to, so latency percentiles, `timeout: auto` and
alerts see the whole app, not one replica.

Senders batch samples and flush every FLUSH_S; the actor keeps a sliding
window (monitoring.window_s, at most MAX_SAMPLES) per model and kind.

The actor is detached: it outlives `serve delete` and `serve shutdown`
(`python -m longserve.server.actors` removes it). It follows the monitoring
settings of the newest deploy: every replica sends its settings (`configure`)
when it starts and again every refresh, so an actor that Ray restarted with
the settings it was first created with catches up within a second.
"""

import asyncio
import json
import logging
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from typing import Any, NamedTuple, Optional

import httpx
import numpy as np
import ray

from longserve.server.config import AutoTimeoutConfig, CallbacksConfig, MonitoringConfig
from longserve.server.errors import InvalidCallbackUrl
from longserve.server.jobs.callbacks import check_url, deliver, headers_for, load_secret, new_client
from longserve.server.monitoring.metrics import Metrics

logger = logging.getLogger(__name__)

FLUSH_S = 0.5
MAX_SAMPLES = 10_000
TIMEOUTS = ("timeout_queued", "timeout_running")


class Sample(NamedTuple):
    at: float
    model: str
    kind: str  # "sync" | "job"
    outcome: str  # ok, timeout_queued, timeout_running, overloaded, client_error, server_error
    queue_s: Optional[float]
    run_s: Optional[float]
    total_s: float


def get_stats(app_name: str, config: MonitoringConfig, callbacks: CallbacksConfig) -> "ray.actor.ActorHandle":
    # Detached: it must not die with whichever replica happened to create it.
    stats: Any = (
        ray.remote(Stats)
        .options(
            name=f"longserve-stats-{app_name}",
            namespace="longserve",
            get_if_exists=True,
            lifetime="detached",
            max_restarts=-1,
            max_task_retries=-1,
            max_concurrency=100,
            num_cpus=0,
        )
        .remote(config, callbacks)
    )
    stats.configure.remote(config, config.deployed_ns, callbacks)  # ordered before this caller's later calls
    return stats


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank q-th percentile (a value that was observed): the one
    definition longserve, its benchmarks and its tests use."""
    return float(np.percentile(values, q, method="inverted_cdf"))


def distribution(values: list[float]) -> dict:
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}
    return {
        "count": len(ordered),
        **{f"p{q}": round(percentile(ordered, q), 4) for q in (50, 90, 99)},
        "max": round(ordered[-1], 4),
    }


class Stats:
    def __init__(self, config: MonitoringConfig, callbacks: CallbacksConfig):
        self.config, self.deployed_ns = config, config.deployed_ns
        # The alert webhook is signed and address-checked as job callbacks are, with their settings.
        self.callbacks, self.secret = callbacks, load_secret(callbacks)
        self.samples: dict[tuple[str, str], deque[Sample]] = defaultdict(lambda: deque(maxlen=MAX_SAMPLES))
        self.firing: dict[tuple[str, str], float] = {}  # (model, alert) -> when it last fired
        self.metrics = Metrics()

    async def configure(self, config: MonitoringConfig, deployed_ns: int, callbacks: CallbacksConfig) -> bool:
        """Follow a deploy's settings from now on, unless older than those in force."""
        if deployed_ns <= self.deployed_ns:
            return False
        self.config, self.deployed_ns = config, deployed_ns
        self.callbacks, self.secret = callbacks, load_secret(callbacks)
        return True

    async def record(self, samples: list[Sample]) -> None:
        for sample in samples:
            self.samples[(sample.model, sample.kind)].append(sample)
        for model in {s.model for s in samples if s.kind == "sync"}:
            await self._check_alerts(model)

    async def summary(self, model: str) -> dict:
        """The recent latency distribution of `model`, per kind."""
        out = {}
        for kind in ("sync", "job"):
            window = self._window(model, kind, self.config.window_s)
            done = [s for s in window if s.outcome == "ok"]
            outcomes: dict[str, int] = defaultdict(int)
            for s in window:
                outcomes[s.outcome] += 1
            out[kind] = {
                "window_s": self.config.window_s,
                "latency_s": distribution([s.total_s for s in done]),
                "queue_s": distribution([s.queue_s for s in done if s.queue_s is not None]),
                "run_s": distribution([s.run_s for s in done if s.run_s is not None]),
                "outcomes": dict(outcomes),
                "timeouts": {"queued": outcomes["timeout_queued"], "running": outcomes["timeout_running"]},
            }
        return out

    async def run_time(self, model: str, kind: str, q: float) -> tuple[Optional[float], int]:
        """The q-th percentile of recent successful run times, and how many there were."""
        runs = sorted(
            s.run_s
            for s in self._window(model, kind, self.config.window_s)
            if s.outcome == "ok" and s.run_s is not None
        )
        return (percentile(runs, q) if runs else None), len(runs)

    async def auto_timeouts(self, settings: dict[str, AutoTimeoutConfig]) -> dict[str, tuple[float, str]]:
        """The timeout in force for each `timeout: auto` model, and why."""
        out = {}
        for model, auto in settings.items():
            observed, count = await self.run_time(model, "sync", auto.percentile)
            if observed is None or count < auto.min_samples:
                out[model] = (
                    auto.fallback,
                    f"auto: fallback {auto.fallback:g} s until {auto.min_samples} "
                    f"run times are observed (have {count})",
                )
                continue
            seconds = min(max(auto.factor * observed, auto.min), auto.max)
            out[model] = (
                round(seconds, 3),
                (
                    f"auto: {auto.factor:g} x p{auto.percentile:g} run time ({observed:.3f} s over {count} requests "
                    f"in {self.config.window_s:g} s), clamped to [{auto.min:g}, {auto.max:g}] s"
                ),
            )
        return out

    async def slow_thresholds(self, models: list[str]) -> dict[tuple[str, str], float]:
        """Run time above which a request or job is abnormal, per (model, kind)."""
        config, out = self.config, {}
        for model in models:
            for kind in ("sync", "job"):
                if config.slow_threshold_s is not None:
                    out[(model, kind)] = config.slow_threshold_s
                    continue
                p99, count = await self.run_time(model, kind, 99)
                if p99 is not None and count >= config.slow_min_samples:
                    out[(model, kind)] = config.slow_factor * p99
        return out

    def _window(self, model: str, kind: str, seconds: float) -> list[Sample]:
        since = time.time() - seconds
        return [s for s in self.samples.get((model, kind), ()) if s.at >= since]

    async def _check_alerts(self, model: str) -> None:
        config = self.config
        window = self._window(model, "sync", config.alert_window_s)
        if len(window) < config.alert_min_requests:
            return
        rates = {
            "timeout_rate": (sum(s.outcome in TIMEOUTS for s in window) / len(window), config.alert_timeout_rate),
            "error_rate": (sum(s.outcome == "server_error" for s in window) / len(window), config.alert_error_rate),
        }
        now = time.time()
        for alert, (rate, threshold) in rates.items():
            last = self.firing.get((model, alert))
            if rate <= threshold or (last is not None and now - last < config.alert_cooldown_s):
                continue
            self.firing[(model, alert)] = now
            event = {
                "alert": alert,
                "model": model,
                "rate": round(rate, 3),
                "threshold": threshold,
                "requests": len(window),
                "window_s": config.alert_window_s,
                "at": now,
            }
            logger.error(
                "ALERT %s for model %s: %.0f%% of %d requests in %g s (threshold %.0f%%)",
                alert,
                model,
                rate * 100,
                len(window),
                config.alert_window_s,
                threshold * 100,
            )
            self.metrics.inc("longserve_alerts_total", model=model, alert=alert)
            if config.alert_webhook_url:
                asyncio.get_running_loop().create_task(self._post(config.alert_webhook_url, event))

    async def _post(self, url: str, event: dict) -> None:
        """One signed POST (Standard Webhooks, as job callbacks), to an address check_url allows."""
        # The host only in logs: a webhook URL may carry a token in its path or query.
        host = httpx.URL(url).host
        msg_id = f"msg_alert_{event['model']}_{event['alert']}_{int(event['at'] * 1000)}"
        body = json.dumps(event, separators=(",", ":")).encode()
        try:
            address = await check_url(url, self.callbacks)
            async with new_client(self.callbacks) as client:
                outcome = await deliver(client, url, address, body, headers_for(self.secret, msg_id, body))
        except InvalidCallbackUrl as exc:
            logger.warning("alert webhook to %s refused: %s", host, exc.message.replace(url, "<url>"))
            return
        if not outcome.delivered:
            logger.warning("alert webhook to %s failed: %s", host, outcome.error)
