"""The replica side of monitoring, used by the gateway and the job runner:
export each finished request's metrics, send its sample to the app's Stats
actor (batched), and keep the auto timeouts and slow thresholds it computes.
"""

import asyncio
import logging
import time
from typing import Optional

from longserve.server.config import AUTO, AppConfig
from longserve.server.jobs.record import loggable
from longserve.server.monitoring.metrics import Metrics
from longserve.server.monitoring.stats import FLUSH_S, Sample, get_stats

logger = logging.getLogger("ray.serve")

REFRESH_S = 1.0


class Monitor:
    def __init__(self, app_name: str, config: AppConfig):
        self.config = config
        self.enabled = config.monitoring.enabled
        self.auto: dict[str, tuple[float, str]] = {}  # model -> (seconds, why)
        self.slow: dict[tuple[str, str], float] = {}  # (model, kind) -> seconds
        self.pending: list[Sample] = []
        self.task: Optional[asyncio.Task] = None
        self.tenants = config.jobs._tenant_labels
        if self.enabled:
            self.stats = get_stats(app_name, config.monitoring, config.callbacks)
            self.metrics = Metrics()

    def start(self) -> None:
        """Begin flushing and refreshing; needs the replica's running loop."""
        if self.enabled and self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run_forever())

    def inc(self, name: str, **tags: str) -> None:
        """Count an event in a longserve metric (nothing with monitoring off)."""
        if self.enabled:
            self.metrics.inc(name, 1, **tags)

    def record(
        self,
        model: str,
        kind: str,
        outcome: str,
        queue_s: Optional[float],
        run_s: Optional[float],
        total_s: float,
        ident: str,
        tenant: str = "anonymous",
    ) -> None:
        if not self.enabled:
            return
        self.start()
        tags = {"model": model, "kind": kind}
        label = tenant if tenant in self.tenants else "other"
        if run_s:  # Ray's counters refuse 0
            self.metrics.inc("longserve_model_seconds_total", run_s, **tags, tenant=label)
        if outcome == "ok":
            for name, value in (
                ("longserve_queue_seconds", queue_s),
                ("longserve_run_seconds", run_s),
                ("longserve_latency_seconds", total_s),
            ):
                if value is not None:
                    self.metrics.observe(name, value, **tags)
        if kind == "sync":
            self.metrics.inc("longserve_requests_total", model=model, outcome=outcome, tenant=label)
        self.pending.append(Sample(time.time(), model, kind, outcome, queue_s, run_s, total_s))
        threshold = self.slow.get((model, kind))
        if run_s is not None and threshold is not None and run_s > threshold:
            logger.warning(
                "slow %s: model=%s id=%s ran %.3f s, over the abnormal threshold of %.3f s",
                kind,
                model,
                loggable(ident),
                run_s,
                threshold,
            )
            self.metrics.inc("longserve_slow_total", 1, **tags)

    async def _run_forever(self) -> None:
        auto = {name: m.auto_timeout for name, m in self.config.models.items() if m.timeout == AUTO}
        next_refresh = 0.0
        while True:
            await asyncio.sleep(FLUSH_S)
            try:
                if self.pending:
                    batch, self.pending = self.pending, []
                    await self.stats.record.remote(batch)
                if time.monotonic() >= next_refresh:
                    next_refresh = time.monotonic() + REFRESH_S
                    # Again each time: Ray restarts a crashed Stats actor with its first settings.
                    self.stats.configure.remote(
                        self.config.monitoring, self.config.monitoring.deployed_ns, self.config.callbacks
                    )
                    if auto:
                        self.auto = await self.stats.auto_timeouts.remote(auto)
                    self.slow = await self.stats.slow_thresholds.remote(list(self.config.models))
                    self._export_timeouts()
            except Exception:  # monitoring must never take serving down
                logger.exception("monitoring update failed")

    def _export_timeouts(self) -> None:
        for name, model in self.config.models.items():
            timeout = model.timeout  # `auto` (a str): the value derived now
            seconds = self.auto.get(name, (None,))[0] if isinstance(timeout, str) else timeout
            self.metrics.set("longserve_timeout_seconds", seconds or 0.0, model=name)
