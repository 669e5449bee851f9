"""Where a job submit and a finished-job poll spend their time and CPU.

    python -m benchmarks.jobops [--seconds 5] [--samples 200] [--env RAY_SERVE_ENABLE_HA_PROXY=1]
    python -m benchmarks.jobops --ab --rounds 2    # polls: finished-job cache off, on, off, on, off

Its own Ray cluster (benchmarks/serving.py, access log off as shipped), the echo
model on the sqlite job store. Per operation: sequential latency over HTTP (p50,
p99), wrk at 16 clients (GET of one finished job; POST of a small job), and the
CPU milliseconds per request of each kind of process (benchmarks/collapse.py:
proxy, gateway, model, JobStore, runner, other) from /proc over each run. The
wall-time split comes from timing the parts alone: the store's `get` and `submit`
as a driver-side Ray call, and a small body's write to the blob store.
"""

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from benchmarks import wrk
from benchmarks.collapse import accounted
from benchmarks.serving import deploy, serving
from longserve.server.monitoring.stats import percentile

ECHO = "benchmarks.echo_model:Echo"
BODY = b'{"value": 1}'


def config(tmp: Path, backend: str = "sqlite", **jobs):
    from longserve.server.config import AppConfig

    return AppConfig.model_validate(
        {
            "jobs": {"backend": backend, "sqlite_path": str(tmp / "jobs.sqlite3"), **jobs},
            "blobs": {"backend": "file", "path": str(tmp / "blobs")},
            "models": {
                "echo": {
                    "class": ECHO,
                    "max_ongoing_requests": 64,
                    "max_queued_requests": -1,
                    "ray_actor_options": {"num_cpus": 0},
                }
            },
        }
    )


def timed(send: Callable[[], Any], samples: int) -> list[float]:
    out = []
    for _ in range(samples):
        started = time.perf_counter()
        send()
        out.append((time.perf_counter() - started) * 1000)
    return out


def summary(ms: list[float]) -> dict:
    return {"p50 ms": round(statistics.median(ms), 2), "p99 ms": round(percentile(ms, 99), 2), "n": len(ms)}


def finished_job(http: httpx.Client) -> str:
    """A job of the echo model, once it succeeded."""
    job = http.post("/v1/models/echo/jobs", content=BODY, headers={"content-type": "application/json"}).json()
    while job["status"] in ("queued", "running"):
        job = http.get(f"/v1/jobs/{job['id']}", params={"wait": 10}).json()
    assert job["status"] == "succeeded", job
    return job["id"]


def parts(store: Any, tmp: Path, job_id: str, samples: int) -> dict:
    """The pieces alone, from this process: a store get, a store submit (body inline, as a blob ref), a blob write."""
    import ray

    from longserve.server.blobs import Blobs
    from longserve.server.config import BlobsConfig
    from longserve.server.jobs.record import BlobRef, JobRequest, new_job_id

    request = JobRequest(media_type="application/json")
    ref = BlobRef(key="x/input", size=len(BODY), sha256="0" * 64)
    blobs = Blobs(BlobsConfig(path=str(tmp / "blobs-parts")))

    async def write() -> None:
        async def chunks():
            yield BODY

        await blobs.write(f"{new_job_id()}/input", chunks())

    def submit(model: str, body, input=None):
        return lambda: ray.get(store.submit.remote(new_job_id(), model, request, body, {}, 3600.0, input=input))

    loop = asyncio.new_event_loop()
    out = {
        "store.get": summary(timed(lambda: ray.get(store.get.remote(job_id)), samples)),
        "store.submit, body inline": summary(timed(submit("echo", BODY), samples)),
        "store.submit, blob ref": summary(
            timed(
                lambda: ray.get(store.submit.remote(new_job_id(), "echo", request, None, {}, 3600.0, input=ref)),
                samples,
            )
        ),
        # A model no runner serves: the submit alone, no claim or finish competing for the store.
        "store.submit, blob ref, no runner": summary(
            timed(
                lambda: ray.get(store.submit.remote(new_job_id(), "idle", request, None, {}, 3600.0, input=ref)),
                samples,
            )
        ),
        "blob write (file)": summary(timed(lambda: loop.run_until_complete(write()), samples)),
    }
    loop.close()
    return out


def measure(url: str, store: Any, tmp: Path, seconds: float, samples: int) -> dict:
    out: dict[str, Any] = {}
    with httpx.Client(base_url=url, timeout=60) as http:
        job_id = finished_job(http)
        ms, cpu = accounted(lambda: timed(lambda: http.get("/healthz").raise_for_status(), samples), len)
        out["floor: GET /healthz, sequential"] = {**summary(ms), "cpu ms/req": cpu}
        poll_url = f"/v1/jobs/{job_id}"
        for _ in range(20):  # warm
            http.get(poll_url).raise_for_status()
        ms, cpu = accounted(lambda: timed(lambda: http.get(poll_url).raise_for_status(), samples), len)
        out["poll, sequential"] = {**summary(ms), "cpu ms/req": cpu}

        def submit() -> None:
            http.post(
                "/v1/models/echo/jobs", content=BODY, headers={"content-type": "application/json"}
            ).raise_for_status()

        ms, cpu = accounted(lambda: timed(submit, samples), len)
        out["submit, sequential (the jobs then run)"] = {**summary(ms), "cpu ms/req": cpu}
        time.sleep(2)  # let the submitted jobs run before the next measure
    stats, cpu = accounted(lambda: wrk.run(f"{url}{poll_url}", None, 16, seconds, method="GET"), ok_answers)
    out["poll, wrk c=16"] = {**brief(stats), "cpu ms/req": cpu}
    stats, cpu = accounted(lambda: wrk.run(f"{url}/healthz", None, 16, seconds, method="GET"), ok_answers)
    out["floor: GET /healthz, wrk c=16"] = {**brief(stats), "cpu ms/req": cpu}
    out["parts"] = parts(store, tmp, job_id, samples)
    return out


def polls(url: str, seconds: float, samples: int) -> dict:
    """A finished job's polls: sequential, then wrk at 16 clients."""
    with httpx.Client(base_url=url, timeout=60) as http:
        poll_url = f"/v1/jobs/{finished_job(http)}"
        for _ in range(20):
            http.get(poll_url).raise_for_status()
        ms, cpu = accounted(lambda: timed(lambda: http.get(poll_url).raise_for_status(), samples), len)
    stats, wcpu = accounted(lambda: wrk.run(f"{url}{poll_url}", None, 16, seconds, method="GET"), ok_answers)
    return {
        "load1": round(os.getloadavg()[0], 1),
        "sequential": {**summary(ms), "cpu ms/req": rounded(cpu)},
        "wrk c=16": {**brief(stats), "cpu ms/req": rounded(wcpu)},
    }


def rounded(cpu: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in cpu.items()} | {"total": round(sum(cpu.values()), 2)}


def ok_answers(stats: dict) -> int:
    return stats["2xx"]


def brief(stats: dict) -> dict:
    return {k: round(stats[k], 1) for k in ("req/s", "p50 ms", "p99 ms")} | {"statuses": stats["statuses"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--env", action="append", default=[], help="Ray Serve settings, e.g. RAY_SERVE_ENABLE_HA_PROXY=1"
    )
    parser.add_argument("--ab", action="store_true", help="polls only: finished-job cache off, on, off, on ...")
    args = parser.parse_args()
    from longserve.server.jobs.store import get_job_store

    tmp = Path(tempfile.mkdtemp(prefix="jobops-"))
    cfg = config(tmp)
    with serving({}, env=dict(e.split("=", 1) for e in args.env), access_log=False) as base:
        deploy("/jobs", cfg, access_log=False)
        store = get_job_store(cfg.jobs, cfg.blobs)
        if args.ab:
            off = tmp / "off"
            off.mkdir()
            deploy("/jobs-off", config(off, gateway_cache_s=0), access_log=False)
            for i in range(2 * args.rounds + 1):
                name = "/jobs-off" if i % 2 == 0 else "/jobs"
                print(name, json.dumps(polls(f"{base}{name}", args.seconds, args.samples)), flush=True)
            return
        for _ in range(args.rounds):
            print(json.dumps(measure(f"{base}/jobs", store, tmp, args.seconds, args.samples), indent=1), flush=True)


if __name__ == "__main__":
    main()
