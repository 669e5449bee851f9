"""What watching costs: the server's CPU per job event per watcher, with 1 and
with 100 watchers on one job's event stream (GET /v1/jobs/{id}/events).

    python -m benchmarks.watchers_bench                 # prints a markdown section
    python -m benchmarks.watchers_bench --watchers 100 --steps 200 --out /tmp/w.md

Its own Ray cluster (benchmarks/serving.py) and one app: the test model
`Counter` (tests/slow_models.py: one partial and one progress report a step)
on the sqlite job store. For each count of watchers, the same job runs while
that many SSE clients follow it from start to end; the server's CPU (every
process this benchmark's Ray started, from /proc, as benchmarks/collapse.py
reads it) is taken before the submit and after the last watcher got the final
event. The watchers run in this process, which is not counted. Each watcher
must see every event once, ids without a gap, or the run fails.
"""

import argparse
import asyncio
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx
from httpx_sse import aconnect_sse

from benchmarks.collapse import cpu_ticks, names
from benchmarks.serving import deploy, serving

APP = "watch"


def config(tmp: Path):
    from longserve.server.config import AppConfig

    return AppConfig.model_validate(
        {
            "jobs": {"backend": "sqlite", "sqlite_path": str(tmp / "jobs.sqlite3")},
            "blobs": {"backend": "file", "path": str(tmp / "blobs")},
            "monitoring": {"enabled": False},
            "models": {
                "counter": {
                    "class": "tests.slow_models:Counter",
                    "options": {"log": str(tmp / "counter.log")},
                    "timeout": False,
                    "ray_actor_options": {"num_cpus": 0},
                }
            },
        }
    )


async def watch(http: httpx.AsyncClient, job_id: str, ready: asyncio.Event) -> list[int]:
    """The ids of every event of the job, in order, until the final one."""
    ids: list[int] = []
    async with aconnect_sse(http, "GET", f"/v1/jobs/{job_id}/events") as source:
        ready.set()
        async for event in source.aiter_sse():
            ids.append(int(event.id))
            if event.event in ("result", "error"):
                return ids
    raise AssertionError(f"the stream of {job_id} ended before its final event")


async def one_run(url: str, watchers: int, steps: int, delay: float) -> dict:
    limits = httpx.Limits(max_connections=watchers + 4)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        before = cpu_ticks()
        started = time.monotonic()
        body = {"n": steps, "delay": delay}
        job = (await http.post("/v1/models/counter/jobs", json=body)).json()
        ready = [asyncio.Event() for _ in range(watchers)]
        seen = await asyncio.gather(*(watch(http, job["id"], r) for r in ready))
        elapsed = time.monotonic() - started
        after = cpu_ticks()
    for ids in seen:  # every watcher saw every event once, in order
        assert ids == list(range(1, len(ids) + 1)) and ids == seen[0], ids[:20]
    per_process: dict[str, float] = defaultdict(float)
    for pid, secs in after.items():
        per_process[kind(names.get(pid, "?"))] += secs - before.get(pid, 0.0)
    return {"events": len(seen[0]), "cpu_s": sum(per_process.values()), "by": per_process, "wall_s": elapsed}


def kind(name: str) -> str:
    for part in ("Gateway", "JobStore", "ModelServer", "JobRunner", "ProxyActor"):
        if part in name:
            return part
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--steps", type=int, default=200, help="partials the job emits")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds per step")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="watchers-bench-"))
    with serving({}, access_log=False) as base:
        deploy(f"/{APP}", config(tmp), access_log=False)
        url = f"{base}/{APP}"
        asyncio.run(one_run(url, 1, 5, 0.0))  # warm: replica, runner and store started
        one = asyncio.run(one_run(url, 1, args.steps, args.delay))
        many = asyncio.run(one_run(url, args.watchers, args.steps, args.delay))
    extra = (many["cpu_s"] - one["cpu_s"]) / (many["events"] * (args.watchers - 1))
    parts = sorted(set(one["by"]) | set(many["by"]))
    lines = [
        "",
        "## Watching a job: CPU per event per watcher",
        "",
        f"`python -m benchmarks.watchers_bench --watchers {args.watchers} --steps {args.steps}`: one job of "
        f"{args.steps} steps ({args.delay:g} s each, a partial and a progress report per step), followed from "
        "submit to its final event by 1, then by "
        f"{args.watchers} SSE clients; server CPU from /proc over the job (all of the cluster's processes). "
        "Every watcher saw every event once, in order.",
        "",
        "| watchers | events each | server CPU s | " + " | ".join(parts) + " | wall s |",
        "|---|---|---|" + "---|" * len(parts) + "---|",
    ]
    for n, run in ((1, one), (args.watchers, many)):
        cells = " | ".join(f"{run['by'].get(p, 0.0):.2f}" for p in parts)
        lines.append(f"| {n} | {run['events']} | {run['cpu_s']:.2f} | {cells} | {run['wall_s']:.1f} |")
    lines += [
        "",
        f"Extra server CPU per event per additional watcher: **{extra * 1000:.2f} ms** "
        f"(({many['cpu_s']:.2f} - {one['cpu_s']:.2f}) s / ({many['events']} events x {args.watchers - 1} watchers)).",
        "",
    ]
    text = "\n".join(lines)
    print(text, flush=True)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
