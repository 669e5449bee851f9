"""Past saturation: the embedder at rising concurrency under wrk, with the
replica's batches recorded (busy share, mean batch size) and the CPU seconds
each process of this Ray cluster used. One Ray cluster per --env set.

    python -m benchmarks.collapse --conc 16,64 --seconds 10 [--env RAY_SERVE_ROUTER_RETRY_MAX_BACKOFF_S=0.01]
"""

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from benchmarks import wrk
from benchmarks.serving import serving

EMB = "benchmarks.instrumented:RecordingEmbedder"
T = TypeVar("T")
BODY = {"texts": ["A cat sits on the mat and looks out of the window."]}


def config(max_ongoing: int, max_queued: int = 256, queue_in: str = "gateway", **extra):
    from longserve.server.config import AppConfig

    return AppConfig.model_validate(
        {
            "jobs": {"backend": "memory"},
            "monitoring": {"enabled": True},
            "models": {
                "embedder": {
                    "class": EMB,
                    "max_ongoing_requests": max_ongoing,
                    "max_queued_requests": max_queued,
                    "timeout": 10,
                    "queue_in": queue_in,
                    "batching": {"max_batch_size": 32, "batch_wait_timeout_s": 0.005},
                    "ray_actor_options": {"num_cpus": 0},
                    **extra,
                }
            },
        }
    )


names: dict[str, str] = {}  # pid -> the process's name (Ray retitles a worker with its current task)


def cpu_ticks() -> dict[str, float]:
    """CPU seconds per process (by name) of everything this driver started."""
    out: dict[str, float] = {}
    me = os.getpid()
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            raw = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            name = cmd[5:60] if cmd.startswith("ray::") else Path(cmd.split()[0]).name if cmd else name
        except (OSError, IndexError):
            pass
        fields = raw[raw.rindex(")") + 2 :].split()
        ppid, ut, st = int(fields[1]), int(fields[11]), int(fields[12])
        children.setdefault(ppid, []).append(int(d))
        stats[int(d)] = (name, (ut + st) / tick)
    todo = [me]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            todo.append(child)
            name, secs = stats[child]
            out[f"{child}"] = secs
            names[f"{child}"] = name
    return out


# What each Ray process is, from its title: "ray::ServeReplica:<app>:<deployment>..." etc.
KINDS = ("ProxyActor", "Gateway", "JobStore", "JobRunner")


def kind(name: str) -> str:
    for part in KINDS:
        if part in name:
            return part
    return "model" if "ServeReplica" in name else "other"


def cpu_by_kind(before: dict[str, float], after: dict[str, float], app: str = "") -> dict[str, float]:
    """CPU seconds between two `cpu_ticks()` per kind of process (proxy, gateway, model, store, runner,
    other). With `app`, the replicas of other Serve apps (idle beside it) are left out."""
    out = {k: 0.0 for k in (*KINDS, "model", "other")}
    for pid, secs in after.items():
        name = names.get(pid, "?")
        if app and "ServeReplica:" in name and f"ServeReplica:{app}:" not in name:
            continue
        out[kind(name)] += secs - before.get(pid, 0.0)
    return out


def accounted(run: Callable[[], T], requests: Callable[[T], int], app: str = "") -> tuple[T, dict[str, float]]:
    """`run()`'s result, and the CPU ms per request (`requests(result)` of them) of each kind of process meanwhile."""
    before = cpu_ticks()
    result = run()
    return result, cpu_since(before, requests(result), app)


def cpu_since(before: dict[str, float], requests: int, app: str = "") -> dict[str, float]:
    """CPU ms per request (`requests` of them) of each kind of process since `before` (a `cpu_ticks()`)."""
    used = cpu_by_kind(before, cpu_ticks(), app)
    return {k: 1000 * v / max(requests, 1) for k, v in used.items()}


def batches(path: Path, since: float, until: float) -> dict:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            s, e, n = line.split()
            if since <= float(s) <= until:
                rows.append((float(s), float(e), int(n)))
    if not rows:
        return {"batches": 0}
    busy = sum(e - s for s, e, _ in rows)
    return {
        "batches": len(rows),
        "mean size": sum(n for *_, n in rows) / len(rows),
        "busy share": busy / (until - since),
        "ms per text": 1000 * busy / sum(n for *_, n in rows),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conc", default="16,64")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("--check", action="store_true", help="also show a 504 and a request id as a client sees them")
    parser.add_argument("--apps", default="ls32r,ls32", help="comma list of ls<max_ongoing>[r]")
    args = parser.parse_args()
    env = dict(e.split("=", 1) for e in args.env)
    log = Path(f"/tmp/h4/batches-{os.getpid()}.log")
    os.environ["LONGSERVE_BATCH_LOG"] = str(log)
    # ls<N>: max_ongoing_requests N, waiting in the gateway; ls<N>r: in Ray's router
    apps = {
        f"/{a}": config(int(a[2:].rstrip("r")), queue_in="router" if a.endswith("r") else "gateway")
        for a in args.apps.split(",")
    }
    with serving(apps, env=env, access_log=False) as url:
        for a in apps:  # warm up
            wrk.run(f"{url}{a}/v1/models/embedder/predict", BODY, 8, 3)
        if args.check:  # what a client sees through this ingress: a 504 explained, request ids
            import httpx

            for headers in ({"Request-Timeout": "0.001"}, {"X-Request-ID": "mine-1"}):
                r = httpx.post(f"{url}{next(iter(apps))}/v1/models/embedder/predict", json=BODY, headers=headers)
                print(
                    "CHECK",
                    json.dumps(
                        {"sent": headers, "status": r.status_code, "headers": dict(r.headers), "body": r.text[:600]}
                    ),
                    flush=True,
                )
        for c in [int(x) for x in args.conc.split(",")]:
            for a in apps:
                before, t0 = cpu_ticks(), time.monotonic()
                load = os.getloadavg()[0]
                stats = wrk.run(f"{url}{a}/v1/models/embedder/predict", BODY, c, args.seconds)
                t1, after = time.monotonic(), cpu_ticks()
                used = {k: after[k] - before.get(k, 0) for k in after}
                top = sorted(((v, k) for k, v in used.items() if v > 0.05), reverse=True)[:6]
                total = sum(used.values())
                ok = sum(n for s, n in stats["statuses"].items() if s < 300) or 1
                print(
                    json.dumps(
                        {
                            "env": env,
                            "app": a,
                            "c": c,
                            "load1": load,
                            **{k: v for k, v in stats.items()},
                            "batch": batches(log, t0, t1),
                            "cores busy": total / (t1 - t0),
                            "cpu ms/req": 1000 * total / ok,
                            "top": [(names[k], round(v, 1)) for v, k in top],
                        }
                    ),
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
