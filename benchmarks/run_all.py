"""Every benchmark, in one run on this machine, written to benchmarks/RESULTS.md:
longserve beside a bare Ray Serve app and LitServe serving the same model
code (echo, MiniLM embedder), dynamic batching, jobs per backend at 1k/10k/100k
stored jobs, timeout precision, transcription, and Ray's default settings
against the ones this project ships (access log off) and a tuned set, and the
memory of a large job upload through the Python proxy and the HAProxy ingress.

    timeout 1200 flock /tmp/longserve-ray.lock .venv/bin/python -m benchmarks.run_all
    .venv/bin/python -m benchmarks.run_all --quick --phases echo,jobs --out /tmp/r.md   # a smoke run

Needs the `bench` extra (LitServe) and, for the redis backend, `redis-server` on PATH.
Only our own lines reach the file: Ray runs with log_to_driver=False and
nothing from stdout or stderr is copied into it.
"""

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Iterator, Optional

import httpx

from benchmarks import goals, jobs_bench, serve_settings, upload_memory, wrk
from benchmarks.bare_serve import bare_app
from benchmarks.collapse import accounted
from benchmarks.goals import cpu_point, note_cpu
from benchmarks.load import client
from benchmarks.serving import ROOT, deploy, free_port, serving
from longserve.server.monitoring.stats import percentile

ECHO = "benchmarks.echo_model:Echo"
EMBEDDER = "longserve.models.embedder:Embedder"
BATCH = (32, 0.005)  # as serve_config.yaml ships the embedder
PHASES = ("echo", "embedder", "timeouts", "jobs", "transcription", "settings", "upload")
# What serve_config.yaml and the RayService ship: Ray's defaults, access log off.
SHIPPED = "access log off"


@dataclass
class Sizes:
    concurrencies: tuple = (1, 16, 64)
    # The embedder also past saturation: 4x its capacity (32 slots), where a server must
    # plateau and shed, not fall over.
    embedder_concurrencies: tuple = (1, 16, 64, 256)
    rounds: int = 1
    seconds: float = 10.0
    stored: tuple = (1_000, 100_000, 1_000_000)
    job_samples: int = 100
    probes: int = 60
    audio: str = "speech_long.ogg"
    backends: tuple = ("sqlite", "redis", "memory")
    upload_mb: int = 1536  # one job upload, through each ingress


QUICK = Sizes(
    concurrencies=(1, 4),
    embedder_concurrencies=(1, 4),
    rounds=1,
    seconds=1.0,
    stored=(20, 50),
    job_samples=5,
    probes=4,
    audio="speech.ogg",
    upload_mb=32,
)
# A middle way while others share the machine: every table, short points, fewer stored jobs.
SHORT = Sizes(
    concurrencies=(1, 16, 64),
    embedder_concurrencies=(1, 16, 64, 256),
    rounds=1,
    seconds=5.0,
    stored=(1_000, 100_000),
    job_samples=30,
    probes=20,
    audio="speech.ogg",
    backends=("sqlite",),
    upload_mb=512,
)


@dataclass
class Report:
    lines: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    # What issue 19's goals are judged on (goals.py), filled in by the phases that ran:
    measured: dict = field(default_factory=dict)
    # "echo, 16 clients" -> kind of process -> CPU ms per request (benchmarks/collapse.py)
    cpu: dict = field(default_factory=dict)

    def section(self, title: str, *notes: str) -> None:
        self.lines += ["", f"## {title}", ""] + [n for n in notes] + ([""] if notes else [])

    def add(self, *lines: str) -> None:
        self.lines += lines
        print("\n".join(lines), flush=True)


def model_config(class_path: str, batching=BATCH, monitoring=True, backend="memory", **extra) -> "AppConfig":
    from longserve.server.config import AppConfig

    jobs = {"backend": backend, "sqlite_path": str(Path(tempfile.mkdtemp()) / "jobs.sqlite3")}
    jobs.update(extra.pop("jobs", {}))
    name = extra.pop("name", "echo" if class_path == ECHO else "embedder")
    return AppConfig.model_validate(
        {
            "monitoring": {"enabled": monitoring},
            "jobs": jobs,
            "models": {
                name: {
                    "class": class_path,
                    "max_ongoing_requests": 64,
                    "max_queued_requests": -1,
                    "batching": None
                    if batching is None
                    else {"max_batch_size": batching[0], "batch_wait_timeout_s": batching[1]},
                    "ray_actor_options": {"num_cpus": 0},
                    **extra,
                }
            },
        }
    )


@contextlib.contextmanager
def litserve(class_path: str, batch: int = 1) -> Iterator[str]:
    """A LitServe server (its own processes) on a free loopback port."""
    port = free_port()
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.litserve_server",
            "--model",
            class_path,
            "--port",
            str(port),
            "--batch",
            str(batch),
            "--batch-wait",
            str(BATCH[1]),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"LitServe did not start:\n{log.read()[-3000:].decode(errors='replace')}")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and its workers
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def median_stats(rounds: list[dict]) -> dict:
    out = {k: statistics.median(r[k] for r in rounds) for k in ("req/s", "p50 ms", "p99 ms")}
    statuses: dict[int, int] = {}
    for r in rounds:
        for status, n in r.get("statuses", {}).items():
            statuses[status] = statuses.get(status, 0) + n
    out["statuses"] = statuses
    out["client timeouts"] = sum(r.get("client timeouts", 0) for r in rounds)
    out["socket errors"] = sum(r.get("socket errors", 0) for r in rounds)
    if "cpu" in rounds[-1]:
        out["cpu"] = rounds[-1]["cpu"]
    return out


def side_by_side(
    sides: dict[str, str],
    payload: dict,
    sizes: Sizes,
    concurrencies: Optional[tuple] = None,
    account: Optional[dict[int, tuple[str, str]]] = None,
) -> dict[int, dict[str, dict]]:
    """{concurrency: {side: median stats}}, load from wrk (`benchmarks/wrk.py`): every side in
    every round, the order rotating from one point to the next so no server always goes first.
    `account`: {concurrency: (side, its Serve app)}: that point's stats also hold "cpu", the CPU ms
    per request of each kind of process (benchmarks/collapse.py)."""
    names = list(sides)
    out = {}
    for name in names:  # warm up: a first answer (a model may load lazily), then connections, first batches
        httpx.post(sides[name], json=payload, timeout=120).raise_for_status()
        wrk.run(sides[name], payload, 4, min(sizes.seconds, 3))
    point = 0
    for concurrency in concurrencies or sizes.concurrencies:
        rounds: dict[str, list] = {n: [] for n in names}
        for _ in range(sizes.rounds):
            for name in names[point % len(names) :] + names[: point % len(names)]:
                settle()  # the previous point's backlog drained first
                side, app = (account or {}).get(concurrency, ("", ""))
                if name == side:
                    point_run = functools.partial(wrk.run, sides[name], payload, concurrency, sizes.seconds)
                    stats, cpu = accounted(point_run, lambda s: s["2xx"], app)
                    rounds[name].append({**stats, "cpu": cpu})
                else:
                    rounds[name].append(wrk.run(sides[name], payload, concurrency, sizes.seconds))
            point += 1
        out[concurrency] = {n: median_stats(rs) for n, rs in rounds.items()}
    return out


def settle(idle_share: float = 0.8, max_s: float = 20.0) -> None:
    """Wait until the machine is mostly idle (a 0.5 s window of /proc/stat), at most max_s: a server
    that kept a backlog when its point ended (wrk closes its connections; LitServe, for one, goes on
    with what it has queued) would otherwise take CPU from the next server's point."""

    def busy_idle() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # idle + iowait

    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        total, idle = busy_idle()
        time.sleep(0.5)
        total2, idle2 = busy_idle()
        if total2 > total and (idle2 - idle) / (total2 - total) >= idle_share:
            return


def ratio(a: float, b: float) -> str:
    """a ÷ b, or `n/a` when b served (next to) nothing."""
    return f"{a / b:.2f}" if b >= 0.5 else "n/a"


def answers(s: dict) -> str:
    """Every answer that was not a 2xx, by status, and wrk's client timeouts: `-` when none."""
    parts = [f"{n}x{status}" for status, n in sorted(s["statuses"].items()) if not 200 <= status < 300]
    if s["client timeouts"]:
        parts.append(f"{s['client timeouts']} client timeouts")
    if s["socket errors"]:
        parts.append(f"{s['socket errors']} socket errors")
    return ", ".join(parts) or "-"


def serving_table(results: dict[int, dict[str, dict]], ours: str = "longserve") -> list[str]:
    lines = [
        "| clients | server | req/s | p50 ms | p99 ms | longserve req/s ÷ this | longserve p50 ÷ this | not 2xx |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for concurrency, sides in results.items():
        mine = sides[ours]
        for name, s in sides.items():
            lines.append(
                f"| {concurrency} | {name} | {s['req/s']:.0f} | {s['p50 ms']:.1f} | {s['p99 ms']:.1f} "
                f"| {ratio(mine['req/s'], s['req/s'])} | {ratio(mine['p50 ms'], s['p50 ms'])} "
                f"| {answers(s)} |"
            )
    return lines


def phase_echo(report: Report, url: str, sizes: Sizes) -> None:
    from ray import serve

    deploy("/ls-echo", model_config(ECHO, batching=None), access_log=False)
    deploy("/ls-echo-nomon", model_config(ECHO, batching=None, monitoring=False), access_log=False)
    deploy("/bare-echo", bare_app(ECHO), access_log=False)
    with litserve(ECHO) as lit:
        sides = {
            "longserve": f"{url}/ls-echo/v1/models/echo/predict",
            "longserve, monitoring off": f"{url}/ls-echo-nomon/v1/models/echo/predict",
            "bare Ray Serve": f"{url}/bare-echo/predict",
            "LitServe": f"{lit}/predict",
        }
        results = side_by_side(
            sides, {"value": 1}, sizes, account={cpu_point(sizes.concurrencies, "echo"): ("longserve", "ls-echo")}
        )
    for name in ("ls-echo", "ls-echo-nomon", "bare-echo"):
        serve.delete(name)
    report.measured["echo"] = {
        c: s["longserve"]["req/s"] / max(s["LitServe"]["req/s"], 0.5) for c, s in results.items()
    }
    note_cpu(report, "echo", results)
    report.section(
        "Sync serving overhead: echo model",
        "A model that returns its input: the serving path and nothing else. "
        'Body `{"value": 1}`. Ratios > 1 in the req/s column: longserve is faster.',
    )
    report.add(*serving_table(results))


def phase_embedder(report: Report, url: str, sizes: Sizes) -> None:
    from ray import serve

    # As serve_config.yaml ships it: 32 slots, 256 queued, waiting in the gateway; and the same
    # with requests waiting in Ray Serve's router instead (longserve before issue 19).
    shipped = {"max_ongoing_requests": 32, "max_queued_requests": 256, "timeout": 10}
    deploy("/ls-emb", model_config(EMBEDDER, **shipped), access_log=False)
    deploy("/ls-emb-router", model_config(EMBEDDER, **shipped, queue_in="router"), access_log=False)
    deploy("/ls-emb-nobatch", model_config(EMBEDDER, batching=None), access_log=False)
    deploy("/bare-emb", bare_app(EMBEDDER, BATCH), access_log=False)
    with litserve(EMBEDDER, batch=BATCH[0]) as lit, litserve(EMBEDDER) as lit_nobatch:
        sides = {
            "longserve": f"{url}/ls-emb/v1/models/embedder/predict",
            "longserve, queue in Ray's router": f"{url}/ls-emb-router/v1/models/embedder/predict",
            "bare Ray Serve": f"{url}/bare-emb/predict",
            "LitServe": f"{lit}/predict",
            "longserve, batching off": f"{url}/ls-emb-nobatch/v1/models/embedder/predict",
            "LitServe, batching off": f"{lit_nobatch}/predict",
        }
        body = {"texts": ["A cat sits on the mat and looks out of the window."]}
        account = {cpu_point(sizes.embedder_concurrencies, "embedder"): ("longserve", "ls-emb")}
        results = side_by_side(sides, body, sizes, sizes.embedder_concurrencies, account)
    for name in ("ls-emb", "ls-emb-router", "ls-emb-nobatch", "bare-emb"):
        serve.delete(name)
    report.measured["embedder"] = {
        c: s["longserve"]["req/s"] / max(s["LitServe"]["req/s"], 0.5) for c, s in results.items()
    }
    report.measured["embedder answers"] = {c: s["longserve"] for c, s in results.items()}
    note_cpu(report, "embedder", results)
    synced = {c: {k: v for k, v in s.items() if "batching off" not in k} for c, s in results.items()}
    report.section(
        "Sync serving overhead: MiniLM embedder",
        f"all-MiniLM-L6-v2, one sentence per request, dynamic batching on everywhere "
        f"(max batch {BATCH[0]}, wait {BATCH[1] * 1000:g} ms). longserve as shipped: 32 slots, "
        "256 queued, timeout 10 s, requests over capacity wait in the gateway "
        "(`models.<name>.queue_in: gateway`); the row below it waits in Ray Serve's router instead "
        "(`queue_in: router`, longserve before issue 19).",
    )
    report.add(*serving_table(synced))
    concurrencies = list(results)
    if len(concurrencies) >= 3:
        top, knee = concurrencies[-1], concurrencies[-2]
        lines = [
            f"| server | req/s at {knee} clients | req/s at {top} | {top} ÷ {knee} | answers at {top} |",
            "|---|---|---|---|---|",
        ]
        for name in synced[top]:
            a, b = results[knee][name], results[top][name]
            lines.append(
                f"| {name} | {a['req/s']:.0f} | {b['req/s']:.0f} | {ratio(b['req/s'], a['req/s'])} "
                f"| {sum(b['statuses'].values())} answers; not 2xx: {answers(b)} |"
            )
        report.section(
            "Past saturation: embedder",
            f"From the table above: throughput at {top} clients (4x past the 32 slots and the "
            f"batch size) against {knee}. A server should plateau (ratio near 1.00) and answer "
            "every request with a 200 or an explained 503/504, never a client timeout "
            f"(wrk `--timeout {wrk.TIMEOUT_S}s`). Mechanism: docs/benchmarks.md#past-saturation.",
        )
        report.add(*lines)
    report.section(
        "Dynamic batching: embedder, batching on vs off", "Same run as the table above (all servers in rotating order)."
    )
    lines = [
        "| clients | server | req/s batching on | req/s batching off | on ÷ off | p99 ms on | p99 ms off |",
        "|---|---|---|---|---|---|---|",
    ]
    for concurrency, s in results.items():
        for name in ("longserve", "LitServe"):
            on, off = s[name], s[f"{name}, batching off"]
            lines.append(
                f"| {concurrency} | {name} | {on['req/s']:.0f} | {off['req/s']:.0f} "
                f"| {ratio(on['req/s'], off['req/s'])} | {on['p99 ms']:.1f} | {off['p99 ms']:.1f} |"
            )
        lines.append(
            f"| {concurrency} | longserve ÷ LitServe (on) | | | "
            f"{ratio(s['longserve']['req/s'], s['LitServe']['req/s'])} | | |"
        )
    report.add(*lines)


def phase_timeouts(report: Report, url: str, sizes: Sizes) -> None:
    from ray import serve

    from longserve.server.config import AppConfig

    timeout = 0.25
    deploy(
        "/ls-slow",
        AppConfig.model_validate(
            {
                "jobs": {"backend": "memory"},
                "models": {
                    "sleeper": {
                        "class": "tests.slow_models:Sleeper",
                        "max_ongoing_requests": 64,
                        "max_queued_requests": -1,
                        "ray_actor_options": {"num_cpus": 0},
                    },
                    "echo": {
                        "class": ECHO,
                        "max_ongoing_requests": 64,
                        "max_queued_requests": -1,
                        "ray_actor_options": {"num_cpus": 0},
                    },
                },
            }
        ),
        access_log=False,
    )
    probe_url = f"{url}/ls-slow/v1/models/sleeper/predict"
    load_url = f"{url}/ls-slow/v1/models/echo/predict"

    async def probes(load: int) -> tuple[list[float], dict]:
        late: list[float] = []
        async with client(concurrency=load + 8) as http:

            async def prober():
                for _ in range(sizes.probes // 4):
                    started = time.perf_counter()
                    response = await http.post(
                        probe_url, json={"seconds": 5}, headers={"Request-Timeout": str(timeout)}
                    )
                    assert response.status_code == 504, response.text
                    late.append((time.perf_counter() - started - timeout) * 1000)

            background = asyncio.gather(*[prober() for _ in range(4)])
            if load:  # wrk, in a thread: its own process, the probes go on meanwhile
                stats = await asyncio.to_thread(
                    wrk.run, load_url, {"value": 1}, load, max(1.0, sizes.probes / 4 * timeout * 1.5)
                )
            else:
                stats = {}
            await background
        return late, stats

    rows = []
    for load in (0, 16):
        late, stats = asyncio.run(probes(load))
        report.measured[f"late p99 ms at {load}"] = percentile(late, 99)
        rows.append(
            f"| {load} | {stats.get('req/s', 0):.0f} | {len(late)} | {percentile(late, 50):.1f} "
            f"| {percentile(late, 99):.1f} | {max(late):.1f} |"
        )
    serve.delete("ls-slow")
    report.section(
        "Timeout precision",
        f"`Request-Timeout: {timeout}` on a model that would run 5 s; 4 concurrent probers, each 504 "
        f"timed at the client: lateness = client-side elapsed − {timeout} s (so it includes the proxy "
        "hops both ways; the deadline itself starts when the gateway gets the request). Load: "
        "concurrent echo clients on the same gateway meanwhile.",
    )
    report.add(
        "| echo load clients | echo req/s meanwhile | 504s | late p50 ms | late p99 ms | late max ms |",
        "|---|---|---|---|---|---|",
        *rows,
    )


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import redis

        r = redis.Redis(port=port)
        for _ in range(100):
            with contextlib.suppress(redis.ConnectionError):
                r.ping()
                break
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


MEMORY_BACKEND_MAX = 100_000


def phase_jobs(report: Report, url: str, sizes: Sizes) -> None:
    import ray
    from ray import serve

    from longserve.server.jobs.store import get_job_store

    rows, memory_rows = [], []
    for backend in sizes.backends:
        with redis_server() if backend == "redis" else contextlib.nullcontext("") as redis_url:
            config = model_config(
                ECHO, batching=None, backend=backend, jobs={"redis_url": redis_url or "redis://127.0.0.1:6379/0"}
            )
            deploy(f"/jobs-{backend}", config, access_log=False)
            store = get_job_store(config.jobs)
            prefix = f"{url}/jobs-{backend}"
            held, rss = 0, {}
            # The memory backend holds every job in the actor by design: 1M would be ~5 GB there.
            for stored in [n for n in sizes.stored if backend != "memory" or n <= MEMORY_BACKEND_MAX]:
                started = time.perf_counter()
                total, sample = ray.get(
                    store.__ray_call__.remote(jobs_bench.preload_in_actor, max(stored - held, 0), "echo")
                )
                preload_s = time.perf_counter() - started
                rss[stored] = jobs_bench.actor_rss(store)

                async def run(sample=sample):
                    async with client(concurrency=16) as http:
                        return await jobs_bench.measure(
                            http, prefix, sizes.job_samples, sizes.seconds, 16, sample, app=f"jobs-{backend}"
                        )

                m = asyncio.run(run())
                report.measured.setdefault("jobs", []).append(m)
                report.cpu[f"finished-job poll, 16 clients ({backend}, {stored:,} stored)"] = m["poll cpu"]
                report.cpu[f"job submit, sequential ({backend}, {stored:,} stored; the job runs too)"] = m["submit cpu"]
                rows.append(
                    f"| {backend} | {stored:,} | {rss[stored] / 2**20:.0f} "
                    f"| {m['submit p50 ms']:.1f} | {m['submit p99 ms']:.1f} "
                    f"| {m['poll p50 ms']:.1f} | {m['poll p99 ms']:.1f} "
                    f"| {m['cold poll p50 ms']:.1f} | {m['cold poll p99 ms']:.1f} | {m['polls/s']:.0f} "
                    f"| {m['submit->done p50 ms']:.0f} | {m['submit->done p99 ms']:.0f} "
                    f"| {total:,} | {preload_s:.1f} |"
                )
                held = total  # jobs submitted while measuring count too
            first, last = min(rss), max(rss)
            per_job = (rss[last] - rss[first]) / (last - first)
            memory_rows.append(f"| {backend} | {rss[first] / 2**20:.0f} | {rss[last] / 2**20:.0f} | {per_job:,.0f} |")
            serve.delete(f"jobs-{backend}")
            ray.kill(store)
    report.section(
        f"Jobs: latency and JobStore memory with {', '.join(f'{n:,}' for n in sizes.stored)} finished jobs stored",
        "Echo model, one app per backend. Stored jobs are preloaded by a function run inside the "
        "JobStore actor (`__ray_call__`) that writes finished jobs straight to the backend in bulk, as if "
        "they had run and been evicted from the store's memory (through HTTP that is ~90 jobs/s). RSS: the "
        "JobStore actor's resident memory after preloading. Submit and poll: sequential over HTTP (poll: a "
        "job just submitted, in memory; cold poll: a preloaded job, read from the backend); polls/s: wrk, 16 "
        "clients polling one finished job; submit->done: submit a trivial job, long-poll (`?wait=10`) until it "
        "succeeded. Polls of a finished job after the first are answered from the gateway's copy "
        "(`jobs.gateway_cache_s`). "
        f"The memory backend stops at {MEMORY_BACKEND_MAX:,}: it holds every job in the actor by design.",
    )
    report.add(
        "| backend | stored | RSS MiB | submit p50 ms | submit p99 ms | poll p50 ms | poll p99 ms "
        "| cold poll p50 ms | cold poll p99 ms | polls/s | submit->done p50 ms | submit->done p99 ms "
        "| held after | preload s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    )
    report.section(
        "JobStore actor memory per stored job",
        "Resident memory of the actor's process after preloading, (RSS at the last size − RSS at the "
        "first) ÷ the jobs added. The store keeps only live jobs and a cache of finished ones "
        "(`jobs.cache_finished`) in memory; the memory backend also holds every job's JSON and body there.",
    )
    report.add(
        "| backend | RSS MiB at first size | RSS MiB at last size | bytes per job |", "|---|---|---|---|", *memory_rows
    )


def phase_transcription(report: Report, url: str, sizes: Sizes) -> None:
    from ray import serve

    from longserve.model import Context
    from longserve.models.transcriber import TranscribeInput, Transcriber

    audio = (ROOT / "tests" / "data" / sizes.audio).read_bytes()
    short = (ROOT / "tests" / "data" / "speech.ogg").read_bytes()
    deploy(
        "/ls-tx",
        model_config(
            "longserve.models.transcriber:Transcriber",
            batching=None,
            name="transcriber",
            options={"beam_size": 1},
            timeout=False,
            **{"max_ongoing_requests": 1},
        ),
        access_log=False,
    )
    direct = Transcriber(beam_size=1)
    direct.load("cpu")
    direct.predict(TranscribeInput(audio=short), Context())  # warm up, as the replica is below

    def run_direct() -> tuple[float, float]:
        started = time.perf_counter()
        result = direct.predict(TranscribeInput(audio=audio), Context())
        return result["duration"], time.perf_counter() - started

    async def run_job(audio: bytes) -> tuple[float, float]:
        async with httpx.AsyncClient(base_url=f"{url}/ls-tx", timeout=600) as http:
            started = time.perf_counter()
            response = await http.post(
                "/v1/models/transcriber/jobs", content=audio, headers={"content-type": "audio/ogg"}
            )
            response.raise_for_status()
            job_id = response.json()["id"]
            while True:
                job = (await http.get(f"/v1/jobs/{job_id}", params={"wait": 30})).json()
                if job["status"] not in ("queued", "running"):
                    break
            elapsed = time.perf_counter() - started
            assert job["status"] == "succeeded", job
            result = (await http.get(f"/v1/jobs/{job_id}/result")).json()
            return result["duration"], elapsed

    asyncio.run(run_job(short))
    job_audio, job_s = asyncio.run(run_job(audio))
    direct_audio, direct_s = run_direct()
    serve.delete("ls-tx")
    del direct
    report.measured["transcription"] = (job_audio / job_s) / (direct_audio / direct_s)
    report.section(
        "Transcription: through a job vs faster-whisper in one process",
        f"`tests/data/{sizes.audio}` ({direct_audio:.1f} s of audio), Whisper base, int8, beam 1. "
        "Direct: the same Transcriber class called in the benchmark's own process (decode + "
        "transcribe): the physical limit on this CPU. Job: submit over HTTP, long-poll until done.",
    )
    report.add(
        "| path | wall s | audio s per wall s | vs direct |",
        "|---|---|---|---|",
        f"| direct, one process | {direct_s:.1f} | {direct_audio / direct_s:.2f} | 1.00 |",
        f"| longserve job | {job_s:.1f} | {job_audio / job_s:.2f} | {(job_audio / job_s) / (direct_audio / direct_s):.2f} |",
    )


def phase_settings(report: Report, sizes: Sizes) -> None:
    names = [
        "ray defaults",
        SHIPPED,
        "HAProxy ingress, access log off",
        "tuned (access log off, one loop, no stderr log)",
    ]
    results = serve_settings.compare(names, sizes.rounds, sizes.seconds, 16)
    report.section(
        "Ray Serve settings: defaults vs access log off (longserve's default) vs the HAProxy ingress vs a tuned set",
        "Echo model, 16 clients; each setting in its own fresh Ray cluster (the variables are read when "
        "Serve's processes start), one cluster after the other; within a row longserve and the bare app "
        "alternate. Each setting alone (one loop, router loop, gRPC proxy path, stderr logging): `python -m benchmarks.serve_settings`.",
    )
    report.add(*serve_settings.table(results, 16))


def phase_upload(report: Report, sizes: Sizes) -> None:
    size = sizes.upload_mb * 1024 * 1024
    results = upload_memory.compare(size)
    report.section(
        "Memory of a large job upload: the Python proxy vs the HAProxy ingress",
        f"One {sizes.upload_mb} MiB body, generated and sent chunked at full loopback speed, submitted as a job "
        "(file blob store); peak RSS growth of each process while it is uploaded and read, and as a share of "
        "the body (holding it would be >= 1.0x). Each ingress in its own fresh Ray cluster, one after the other "
        "(`python -m benchmarks.upload_memory`).",
    )
    report.add(*upload_memory.table(size, results))


def run_phase(report: Report, name: str, run) -> None:
    """A failed phase is reported in the file (and fails the run) without losing the others."""
    try:
        run()
    except Exception as exc:
        report.failed.append(name)
        report.section(
            f"Phase {name}: FAILED", f"`{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}`"
        )
        import traceback

        traceback.print_exc()


def wrk_version() -> str:
    with contextlib.suppress(Exception):
        return subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split()[1]
    return "?"


def versions() -> str:
    names = [
        "ray",
        "litserve",
        "fastapi",
        "starlette",
        "uvicorn",
        "pydantic",
        "torch",
        "sentence-transformers",
        "faster-whisper",
        "ctranslate2",
        "httpx",
        "redis",
    ]
    found = []
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{name} {metadata.version(name)}")
    with contextlib.suppress(Exception):
        found.append(
            "redis-server "
            + subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
            .stdout.split()[2]
            .removeprefix("v=")
        )
    return f"Python {platform.python_version()}, " + ", ".join(found)


def machine() -> str:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    memory = ""
    with contextlib.suppress(OSError, StopIteration):
        kb = int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")))
        memory = f", {kb / 2**20:.0f} GiB RAM"
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu}){memory}, no GPU used"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, numbers mean nothing")
    parser.add_argument(
        "--short",
        action="store_true",
        help="every serving table with 5 s points, fewer stored jobs, one backend: ~10 min",
    )
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    parser.add_argument(
        "--stored", help="the jobs phase's stored-job counts, comma-separated (e.g. 1000,100000,1000000)"
    )
    parser.add_argument("--backends", help="the jobs phase's backends, comma-separated (sqlite,redis,memory)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = parser.parse_args()
    phases = args.phases.split(",")
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    sizes = QUICK if args.quick else SHORT if args.short else Sizes()
    if args.stored:
        sizes = dataclasses.replace(sizes, stored=tuple(int(n) for n in args.stored.split(",")))
    if args.backends:
        sizes = dataclasses.replace(sizes, backends=tuple(args.backends.split(",")))
    started = time.time()
    load_at_start = os.getloadavg()
    report = Report()
    command = " ".join(["python -m benchmarks.run_all", *sys.argv[1:]])
    env, access_log = serve_settings.SETTINGS[SHIPPED]
    server_phases = [p for p in phases if p not in ("settings", "upload")]
    if server_phases:
        with serving({}, env=env, access_log=access_log) as url:
            for phase in server_phases:
                run_phase(report, phase, lambda: globals()[f"phase_{phase}"](report, url, sizes))
    if "settings" in phases:
        run_phase(report, "settings", lambda: phase_settings(report, sizes))
    if "upload" in phases:
        run_phase(report, "upload", lambda: phase_upload(report, sizes))
    run_phase(report, "goals", lambda: goals.section(report))
    header = [
        "# Benchmark results",
        "",
        f"Written by `{command}` (run it under `flock /tmp/longserve-ray.lock` so no other Ray workload of this "
        "project runs meanwhile; the load average below says what else did), "
        f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(started))}, {(time.time() - started) / 60:.1f} min.",
        "",
        f"- Machine: {machine()}",
        f"- Versions: {versions()}",
        "- Ray Serve settings for longserve and the bare Ray Serve app: as this project ships them ("
        + (", ".join(f"`{k}={v}`" for k, v in env.items()) or "Ray's defaults")
        + (", access log off" if not access_log else "")
        + "); the last table compares other settings",
        f"- Load: wrk {wrk_version()} (a C client; `benchmarks/wrk.py`, a Lua script sends the POST body and "
        f"counts statuses), closed loop, `--timeout {wrk.TIMEOUT_S}s`, {sizes.rounds} round(s) of {sizes.seconds:g} s "
        "per server and concurrency, servers in rotating order, each point begun once the machine is >= 80% idle "
        "(at most 20 s: what the previous server still had queued drains first); req/s counts 2xx answers only. Job latencies and "
        "504 lateness are timed per request by a Python client (`benchmarks/load.py`), which wrk cannot do. "
        f"Load average (1 min) at the start: {load_at_start[0]:.1f}, at the end: {os.getloadavg()[0]:.1f} "
        "(other work on the machine makes every figure noisier; compare ratios within a table).",
        "- LitServe 0.2: one API server process, one inference worker, the same model class "
        "(`benchmarks/litserve_server.py`). Bare Ray Serve: a FastAPI ingress → model deployment "
        "(`benchmarks/bare_serve.py`), no timeouts, jobs, validation or metrics.",
    ]
    text = "\n".join(header + report.lines) + "\n"
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
