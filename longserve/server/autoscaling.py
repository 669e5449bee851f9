"""Model replicas scale on ongoing requests AND on the job backlog.

A model with `autoscaling_config` in serve_config.yaml gets this module's
`BacklogPolicy` as its Ray Serve custom autoscaling policy (build_app adds it
unless the config names a policy of its own):

    desired = max(requests / target_ongoing_requests,          # Serve's default signal
                  min(queued + running jobs, job slots) / target_ongoing_requests)

- Queued jobs bring a model up from zero replicas: the backlog is read from
  the JobStore, not from the model's handles, so it counts jobs no runner has
  claimed yet. Capped by the model's job slots (`max_concurrent_jobs`): more
  replicas than the runners would use for jobs do not help the backlog.
- Once the backlog is gone and requests stop, Serve's own delay logic brings
  the model back to `min_replicas` (0 allowed) after `downscale_delay_s` /
  `downscale_to_zero_delay_s`; Ray applies min/max and the delays around any
  custom policy.

The policy runs inside the Serve controller, on the controller's event loop,
every control-loop tick (~0.1 s). It must never block there: a blocking
`ray.get` on the JobStore would stall every deployment's reconciliation (and
health checks) for as long as the store takes, e.g. while it restarts. So the
backlog is a cached number, refreshed at most every `refresh_s` by a one-shot
asyncio task (at most one in flight, bounded by `call_timeout_s`). A
forever-running background loop is avoided on purpose: Serve replaces the
policy object on every redeploy, and a loop holding `self` would leak. When
the store cannot be reached for `stale_after_s`, the cached backlog is
dropped and the model scales on requests alone (logged once).
"""

import asyncio
import logging
import math
import time
from typing import Any, Optional

from longserve.server.config import JobsConfig, ModelConfig

logger = logging.getLogger("ray.serve")

POLICY_PATH = "longserve.server.autoscaling:BacklogPolicy"
REFRESH_S = 1.0
CALL_TIMEOUT_S = 5.0
STALE_AFTER_S = 30.0


def model_serve_options(name: str, model: ModelConfig, jobs: JobsConfig) -> dict[str, Any]:
    """The model's Serve options, with the backlog policy added to its autoscaling_config."""
    from longserve.server.jobs.store import NAMESPACE, store_name

    options = model.serve_options()
    autoscaling = options.get("autoscaling_config")
    if autoscaling is None or "policy" in autoscaling:
        return options  # fixed replicas, or the user chose a policy
    options["autoscaling_config"] = {
        **autoscaling,
        "policy": {
            "policy_function": POLICY_PATH,
            "policy_kwargs": {
                "store": store_name(jobs),
                "namespace": NAMESPACE,
                "model": name,
                "job_slots": model.job_slots(),
            },
        },
    }
    return options


def desired_replicas(
    current: int, target: int, requests: float, target_ongoing: float, backlog: int, job_slots: int
) -> float:
    """The replica count the model needs (before Serve's bounds and delays)."""
    by_jobs = math.ceil(min(backlog, job_slots) / target_ongoing) if backlog > 0 else 0
    if current == 0:
        # Nothing running: scale straight to what the jobs need (Serve skips the
        # upscale delay from zero), or keep a scale-up already decided.
        return max(by_jobs, target)
    return max(requests / target_ongoing, by_jobs)


class BacklogPolicy:
    """Ray Serve class-based autoscaling policy; Serve builds it once per
    deployment with `policy_kwargs` and calls it with an AutoscalingContext."""

    def __init__(
        self,
        store: str,
        namespace: str,
        model: str,
        job_slots: int = 1,
        refresh_s: float = REFRESH_S,
        call_timeout_s: float = CALL_TIMEOUT_S,
        stale_after_s: float = STALE_AFTER_S,
    ):
        self.store, self.namespace, self.model = store, namespace, model
        self.job_slots = max(1, int(job_slots))
        self.refresh_s, self.call_timeout_s, self.stale_after_s = refresh_s, call_timeout_s, stale_after_s
        self.backlog = 0  # queued + running jobs of this model, as last read
        self.fetched_at: Optional[float] = None  # monotonic time of the last good read
        self.started_at = time.monotonic()
        self.last_try = -math.inf
        self.task: Optional[asyncio.Task] = None
        self.handle: Any = None  # the JobStore actor, looked up on first use
        self.warned = False

    def __call__(self, ctx) -> tuple[float, dict]:
        self._maybe_refresh()
        backlog = self._usable_backlog()
        desired = desired_replicas(
            ctx.current_num_replicas,
            ctx.target_num_replicas,
            ctx.total_num_requests,
            ctx.config.get_target_ongoing_requests(),
            backlog,
            self.job_slots,
        )
        return desired, {"job_backlog": backlog}

    # -- the cached backlog -------------------------------------------------------

    def _usable_backlog(self) -> int:
        last = self.fetched_at if self.fetched_at is not None else self.started_at
        if time.monotonic() - last > self.stale_after_s:
            if not self.warned:
                logger.warning(
                    "autoscaling %s: job store %s unreadable for %.0f s; scaling on requests only",
                    self.model,
                    self.store,
                    self.stale_after_s,
                )
                self.warned = True
            return 0
        return self.backlog

    def _maybe_refresh(self) -> None:
        if self.task is not None and not self.task.done():
            return  # one call in flight at most
        now = time.monotonic()
        if now - self.last_try < self.refresh_s:
            return
        self.last_try = now
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on an event loop (called directly): no refresh
            return
        self.task = loop.create_task(self._refresh())

    async def _refresh(self) -> None:
        import ray

        try:
            async with asyncio.timeout(self.call_timeout_s):
                if self.handle is None:
                    # A GCS lookup; off the loop so a slow GCS cannot stall the controller.
                    self.handle = await asyncio.to_thread(ray.get_actor, self.store, namespace=self.namespace)
                counts = (await self.handle.backlog.remote()).get(self.model, {})
        except ValueError:  # no store yet: no job was ever submitted
            self.backlog, self.fetched_at = 0, time.monotonic()
            return
        except Exception as exc:  # store restarting, timeout: keep the last value until stale
            self.handle = None
            logger.debug("autoscaling %s: backlog read failed: %r", self.model, exc)
            return
        self.backlog = int(counts.get("queued", 0)) + int(counts.get("running", 0))
        self.fetched_at = time.monotonic()
        if self.warned:
            logger.info("autoscaling %s: job store readable again", self.model)
            self.warned = False


def cold_start_note(name: str, model: ModelConfig) -> str:
    """For a 504 while queued: why a model that scales to zero may have had no replica."""
    if (model.autoscaling_config or {}).get("min_replicas", 1) != 0:
        return ""
    return (
        f"Model '{name}' scales to zero (autoscaling_config.min_replicas: 0 in serve_config.yaml): with no "
        "replica running, a request waits for one to start (a GPU node may have to be added, then the model "
        "loaded), and this cold start can take longer than the timeout. A replica is starting now: retry "
        "shortly, keep one warm with min_replicas: 1, or submit an async job, which waits for the replica "
        "with no timeout."
    )
