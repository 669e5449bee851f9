"""Memory of a large job upload: a 1.5 GB body, generated on the fly and sent
chunked, is submitted as a job; the gateway streams it into the blob store and
the model replica reads it back as a file. Prints the peak RSS growth of the
gateway, the JobStore and the model replica while it happens, each as a
fraction of the body (the baseline: holding the body would be >= 1.0x), once
behind Ray Serve's Python proxy and once behind its HAProxy ingress.

    PYTHONPATH=$PWD python -m benchmarks.upload_memory [--gb 1.5] [--rate MiB/s] [--ingress both]

Each ingress gets its own Ray cluster and Serve app (a child process: Serve reads
its ingress settings when its processes start; file blob store in a temporary
directory); needs free disk for the body.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Union

import httpx
from pydantic import BaseModel

from longserve import Context, Model

MIB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent


class SizeInput(BaseModel):
    data: Union[bytes, Path]


class Sizer(Model):
    """Hashes its raw input, read from the file in 1 MiB steps."""

    Input = SizeInput
    raw_body_field = "data"

    @classmethod
    def parse_file(cls, path: Path, params: dict[str, str]) -> SizeInput:
        return SizeInput(data=path)

    def predict(self, inputs: SizeInput, ctx: Context) -> dict:
        digest, size = hashlib.sha256(), 0
        if isinstance(inputs.data, Path):
            with inputs.data.open("rb") as f:
                while chunk := f.read(MIB):
                    digest.update(chunk)
                    size += len(chunk)
        else:
            digest.update(inputs.data)
            size = len(inputs.data)
        return {"size": size, "sha256": digest.hexdigest()}


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Peaks(threading.Thread):
    """Samples each process's RSS every 50 ms; keeps the first sample and the peak."""

    def __init__(self, pids: dict[str, int]):
        super().__init__(daemon=True)
        self.pids = pids
        self.base = {name: rss_bytes(pid) for name, pid in pids.items()}
        self.peak = dict(self.base)
        self.running = True

    def run(self) -> None:
        while self.running:
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss_bytes(pid))
            time.sleep(0.05)


def actor_pids(config) -> dict[str, int]:
    """The processes of this app's gateway and model replica, and of its JobStore
    (other clusters on the machine have theirs: found through this cluster's GCS)."""

    import ray

    from longserve.server.jobs.store import get_job_store

    def pid_of(handle) -> int:
        return ray.get(handle.__ray_call__.remote(lambda self: os.getpid()))

    pids = {"job store": pid_of(get_job_store(config.jobs, config.blobs))}
    for actor in ray.util.list_named_actors(all_namespaces=True):
        for role, tag in (("gateway", "upload-bench#Gateway"), ("model replica", "upload-bench#sizer")):
            if tag in actor["name"]:
                pids[role] = pid_of(ray.get_actor(actor["name"], namespace=actor["namespace"]))
    return pids


def body(size: int, digest: "hashlib._Hash", rate: float = 0):
    """`size` bytes in 1 MiB chunks; at most `rate` MiB/s when given (a client on a real network)."""
    chunk = bytes(range(256)) * 4096  # 1 MiB
    sent, start = 0, time.monotonic()
    while sent < size:
        piece = chunk[: min(MIB, size - sent)]
        digest.update(piece)
        sent += len(piece)
        yield piece
        if rate:
            ahead = sent / (rate * MIB) - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)


INGRESSES = ("python proxy", "haproxy")


def ingress_env(ingress: str, folder: Path) -> dict[str, str]:
    """Environment of a cluster behind `ingress`: HAProxy's files and ports moved off the
    defaults (another cluster on this machine may use them)."""
    if ingress == "python proxy":
        return {}
    from benchmarks.serving import free_port

    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(folder / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(folder / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(folder),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(folder / "server-state"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
    }


def measure(size: int, rate: float, folder: Path) -> dict:
    """One upload through this process's cluster (the ingress its environment chose)."""
    import ray
    from ray import serve

    from benchmarks.serving import free_port
    from longserve.server.app import build_app
    from longserve.server.config import AppConfig

    port = free_port()
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"enable_access_log": False})
        config = AppConfig.model_validate(
            {
                "jobs": {"backend": "sqlite", "sqlite_path": str(folder / "jobs.sqlite3"), "max_input_mb": 4096},
                "blobs": {"backend": "file", "path": str(folder / "blobs")},
                "monitoring": {"enabled": False},
                "models": {"sizer": {"class": "benchmarks.upload_memory:Sizer", "ray_actor_options": {"num_cpus": 0}}},
            }
        )
        serve.run(build_app(config), name="upload-bench", route_prefix="/")
        pids = actor_pids(config)
        peaks = Peaks(pids)
        peaks.start()
        digest = hashlib.sha256()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            start = time.monotonic()
            response = client.post(
                "/v1/models/sizer/jobs",
                content=body(size, digest, rate),
                headers={"Content-Type": "application/octet-stream"},
            )
            upload_s = time.monotonic() - start
            response.raise_for_status()
            job = response.json()
            while job["status"] in ("queued", "running"):
                job = client.get(f"/v1/jobs/{job['id']}", params={"wait": 5}).json()
            total_s = time.monotonic() - start
        peaks.running = False
        peaks.join()
        assert job["status"] == "succeeded", job
        assert job["result"] == {"size": size, "sha256": digest.hexdigest()}, job["result"]
        return {
            "upload_s": upload_s,
            "total_s": total_s,
            "growth": {name: peaks.peak[name] - peaks.base[name] for name in pids},
            "base": peaks.base,
        }
    finally:
        serve.shutdown()
        ray.shutdown()


def child(ingress: str, size: int, rate: float) -> dict:
    """`measure` in a fresh process: Ray Serve reads its ingress settings when its processes start."""
    folder = Path(tempfile.mkdtemp(prefix="lsu-", dir="/tmp"))  # short: HAProxy caps its socket path at 97
    try:
        env = {**os.environ, **ingress_env(ingress, folder)}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))  # replicas import us
        env.setdefault("RAY_raylet_start_wait_time_s", "300")  # a loaded machine starts a node slowly
        args = [sys.executable, "-m", "benchmarks.upload_memory", "--child", str(folder), "--bytes", str(size)]
        for _ in range(2):  # once more if the node did not start (a loaded machine)
            done = subprocess.run([*args, "--rate", str(rate)], env=env, cwd=ROOT, capture_output=True, text=True)
            if "timed out during startup" not in done.stderr:
                break
        if done.returncode:
            raise SystemExit(f"{ingress}: exited {done.returncode}\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def compare(size: int, rate: float = 0, ingresses: tuple = INGRESSES) -> dict[str, dict]:
    """{ingress: measurement} of one upload of `size` bytes through each ingress, one cluster after the other."""
    return {ingress: child(ingress, size, rate) for ingress in ingresses}


def table(size: int, results: dict[str, dict]) -> list[str]:
    """A markdown table: per ingress, the upload's speed and each process's growth, also as a share of the body."""
    names = ("gateway", "job store", "model replica")
    lines = [
        "| ingress | upload | " + " | ".join(f"{n} growth" for n in names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for ingress, row in results.items():
        upload = f"{row['upload_s']:.1f} s, {size / MIB / row['upload_s']:.0f} MiB/s"
        growth = (f"{row['growth'][n] / MIB:.1f} MiB ({row['growth'][n] / size:.3f}x)" for n in names)
        lines.append(f"| {ingress} | {upload} | " + " | ".join(growth) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.5)
    parser.add_argument("--rate", type=float, default=0, help="send at most this many MiB/s (0: as fast as it goes)")
    parser.add_argument("--ingress", choices=(*INGRESSES, "both"), default="both")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # one measurement, in this folder, as JSON
    parser.add_argument("--bytes", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = args.bytes or int(args.gb * 1024 * MIB)
    if args.child:
        print(json.dumps(measure(size, args.rate, args.child)))
        return
    pace = f"{args.rate:g} MiB/s" if args.rate else "full speed"
    print(f"body: {size / MIB:.0f} MiB, streamed chunked at {pace}; load average {os.getloadavg()[0]:.1f}", flush=True)
    results = compare(size, args.rate, INGRESSES if args.ingress == "both" else (args.ingress,))
    print("\n".join(table(size, results)))
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
