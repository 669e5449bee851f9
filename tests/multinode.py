"""A two-node Ray cluster on this machine, one node with a fake GPU, serving the
GPU variant of the app (cluster/rayservice.yaml's serveConfigV2, with the cheap
Sleeper model in place of the real ones). Run in its own process, so it shares
nothing with the test session's own Ray:

    python -m tests.multinode OUT_JSON

It starts `ray start --head` (no GPU) and a second raylet with `--num-gpus 2`
(nothing behind them), each `--block`ed in its own process group, on explicit
free ports and its own temp dir, with RAY_ADDRESS unset; it stops exactly
those process groups (and any process they spawned) at the end, never
`ray stop`. Writes what it measured to OUT_JSON.

Scenario:
1. Before the app is deployed, a stand-in runner claims max_replicas jobs of
   the model and never calls the model (a runner stuck before its first
   request): the model's job slots are full, so the app's runner claims
   nothing and Serve sees no request for the model, while the store counts
   the backlog. Request-based scaling would leave the model at zero; the
   backlog policy brings it to max_replicas, on the GPU node only, with every
   submitted job still queued.
2. Released, the queued jobs all run, each on its first attempt.
3. Idle, the model goes back to 0.
4. At zero, a job waits for the cold start (its job_timeout, shorter than the
   cold start, counts only the run); a sync request with a short timeout gets
   a 504 that says the model scales to zero, and one with a longer timeout
   waits for the cold start and answers 200.
"""

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).parent / "ray")
APP = "longserve"
MODEL = "sleeper"
JOBS, JOB_SECONDS, JOB_TIMEOUT, MAX_REPLICAS = 8, 1.0, 1.5, 2
DEADLINE_S = 150


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def gpu_app_args() -> dict:
    """The RayService's app args, with the Sleeper as its one model, placed like the real models."""
    v2 = yaml.safe_load(yaml.safe_load((ROOT / "cluster" / "rayservice.yaml").read_text())["spec"]["serveConfigV2"])
    args = next(a for a in v2["applications"] if a["import_path"] == "longserve.server.app:build_app")["args"]
    placed = args["models"]["transcriber"]  # num_gpus: 1, scales to zero
    args["jobs"] = {"backend": "memory", "lease_s": 5}  # no Redis here
    # No S3 here: the fake nodes share this machine's disk, as a shared volume would be shared.
    args["blobs"] = {"backend": "file", "path": tempfile.mkdtemp(prefix="longserve-multinode-blobs-")}
    args["gateway"] = {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1}}
    args["monitoring"] = {"enabled": False}
    args["models"] = {
        MODEL: {
            "class": "tests.slow_models:Sleeper",
            "timeout": 2,
            "max_ongoing_requests": 1,
            "max_concurrent_jobs": MAX_REPLICAS,
            # Shorter than a cold start: a job claimed at zero replicas must not time out waiting.
            "job_timeout": JOB_TIMEOUT,
            "autoscaling_config": {
                **placed["autoscaling_config"],
                "max_replicas": MAX_REPLICAS,
                "upscale_delay_s": 1,
                "downscale_delay_s": 2,
                "downscale_to_zero_delay_s": 2,
                "look_back_period_s": 2,
            },
            # num_gpus as in the cluster; no CPU so two replicas fit beside the gateway.
            "ray_actor_options": {**placed["ray_actor_options"], "num_cpus": 0},
        }
    }
    assert args["models"][MODEL]["ray_actor_options"]["num_gpus"] == 1
    assert args["models"][MODEL]["autoscaling_config"]["min_replicas"] == 0
    return args


API_KEY = "multinode-admin-key-" + secrets.token_hex(8)


class Cluster:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="lsmn-", dir="/tmp")  # short: Ray's socket paths are limited
        self.procs: list[subprocess.Popen] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        # Replicas and handles report load every second, not every 10 s: a bounded test.
        self.env["RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S"] = "1"
        self.env["RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S"] = "1"
        # The RayService requires API keys and a webhook secret (its Secret's job on a cluster).
        self.env["LONGSERVE_API_KEYS"] = f"{API_KEY}:admin"
        self.env["LONGSERVE_WEBHOOK_SECRET"] = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        self.gcs_port = free_ports(1)[0]
        self.address = f"127.0.0.1:{self.gcs_port}"

    def _start(self, name: str, args: list[str]) -> None:
        ports = free_ports(6)
        log = open(Path(self.tmp) / f"{name}.log", "wb")
        cmd = [
            RAY,
            "start",
            "--block",
            "--disable-usage-stats",
            "--temp-dir",
            self.tmp,
            "--node-manager-port",
            str(ports[0]),
            "--object-manager-port",
            str(ports[1]),
            "--dashboard-agent-listen-port",
            str(ports[2]),
            "--dashboard-agent-grpc-port",
            str(ports[3]),
            "--metrics-export-port",
            str(ports[4]),
            "--runtime-env-agent-port",
            str(ports[5]),
            *args,
        ]
        self.procs.append(
            subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True, cwd=str(ROOT)
            )
        )

    def start(self) -> None:
        self._start(
            "head",
            [
                "--head",
                "--port",
                str(self.gcs_port),
                "--include-dashboard=false",
                "--ray-client-server-port",
                str(free_ports(1)[0]),
                "--num-cpus",
                "2",
                "--num-gpus",
                "0",
            ],
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.gcs_port)) == 0:
                    break
            self._check_alive()
            time.sleep(0.5)
        self._start("gpu", ["--address", self.address, "--num-cpus", "1", "--num-gpus", str(MAX_REPLICAS)])

    def _check_alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"ray start exited with {p.returncode}; logs in {self.tmp}")

    def stop(self) -> None:
        """Stop what we started: each `ray start` runs in its own session, and
        everything it spawned (GCS, raylet, agents, workers) stays in it."""
        sessions = {p.pid for p in self.procs}
        for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            for pid in session_pids(sessions):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            end = time.monotonic() + wait_s
            while time.monotonic() < end:
                for p in self.procs:
                    p.poll()
                if not session_pids(sessions):
                    return
                time.sleep(0.2)


def session_pids(sessions: set[int]) -> list[int]:
    """Live (not zombie) processes whose session id is one of `sessions` (Linux /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if fields[0] != "Z" and int(fields[3]) in sessions:
            pids.append(int(entry))
    return pids


class StalledRunner:
    """Claims `n` jobs of the model and never calls the model, renewing their
    leases every second: while it holds them, the model's job slots are full,
    the app's runner claims nothing, and no request reaches the model. Created
    before the app, so no runner can race it to the jobs."""

    ID = "stalled-runner"

    def __init__(self, store, n: int):
        import ray

        from longserve.server.jobs.record import JobRequest, new_job_id

        self.store = store
        body = json.dumps({"seconds": JOB_SECONDS}).encode()
        for _ in range(n):
            ray.get(
                store.submit.remote(new_job_id(), MODEL, JobRequest(media_type="application/json"), body, {}, 600.0)
            )
        self.jobs = [ray.get(store.claim.remote(self.ID, {MODEL: n}, 0))[0] for _ in range(n)]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._renew, daemon=True)
        self.thread.start()

    def _renew(self) -> None:
        import ray

        while not self.stopped.wait(1.0):
            try:
                ray.get([self.store.heartbeat.remote(j.id, self.ID, j.attempts) for j in self.jobs])
            except Exception:  # shutting down; the next round retries
                pass

    def holding(self) -> int:
        """How many of its jobs it still holds (running, its lease, first attempt)."""
        import ray

        jobs = ray.get([self.store.get.remote(j.id) for j in self.jobs])
        return sum(j.status == "running" and j.lease_owner == self.ID and j.attempts == 1 for j in jobs)

    def release(self) -> None:
        """Cancel its jobs: their slots free up at once."""
        import ray

        self.stopped.set()
        self.thread.join(5)
        ray.get([self.store.cancel.remote(j.id) for j in self.jobs])


def replicas(client) -> list[dict]:
    details = client.get_serve_details()
    app = details.get("applications", {}).get(APP)
    if not app:
        return []
    return [r for r in app["deployments"][MODEL]["replicas"] if r["state"] == "RUNNING"]


def run(out: dict) -> None:
    # Before Ray is imported (it reads these once). Our own token (Ray 2.60 turns
    # token auth on): ~/.ray/auth_token, shared with other clusters on this
    # machine, is neither read nor written.
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    os.environ.pop("RAY_ADDRESS", None)
    import ray
    from ray import serve
    from ray.serve.context import _get_global_client

    from longserve.server.app import build_app
    from longserve.server.config import AppConfig
    from longserve.server.jobs.store import get_job_store

    cluster, stalled = Cluster(), None
    try:
        t = time.monotonic()
        cluster.start()
        ray.init(address=cluster.address, log_to_driver=False)
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            cluster._check_alive()
            assert time.monotonic() - t < 60, "the GPU node did not join"
            time.sleep(0.5)
        out["cluster_start_s"] = round(time.monotonic() - t, 1)
        nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
        gpu_nodes = [nid for nid, res in nodes.items() if res.get("GPU")]
        out["gpu_node"], out["nodes"] = gpu_nodes, len(nodes)

        # 1. The model's job slots held by a runner that never calls the model (the
        # store the app will use, created first: no runner exists yet to race for the jobs).
        config = AppConfig.model_validate(gpu_app_args())
        store = get_job_store(config.jobs)
        stalled = StalledRunner(store, MAX_REPLICAS)
        port = free_ports(1)[0]
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        t = time.monotonic()
        serve.run(build_app(config), name=APP, route_prefix="/")
        out["deploy_s"] = round(time.monotonic() - t, 1)
        client = _get_global_client()

        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=90, headers={"Authorization": f"Bearer {API_KEY}"}
        ) as http:
            # More jobs than the model's slots, queued: the app's runner cannot claim them.
            ids = [
                http.post(f"/v1/models/{MODEL}/jobs", json={"seconds": JOB_SECONDS}).json()["id"] for _ in range(JOBS)
            ]
            seen_nodes, full = set(), None
            while time.monotonic() - t < 60:
                running = replicas(client)
                seen_nodes |= {r["node_id"] for r in running}
                if len(running) >= MAX_REPLICAS:
                    full = time.monotonic() - t
                    break
                time.sleep(0.25)
            # No request reached the model: every job still queued, the held ones still held.
            out["queued_at_scale"] = sum(j.status == "queued" for j in ray.get([store.get.remote(i) for i in ids]))
            out["stalled_at_scale"] = stalled.holding()
            out["scale_by_backlog_s"] = None if full is None else round(full, 1)

            # 2. Released: the app's runner claims the queued jobs; each runs once.
            stalled.release()
            t = time.monotonic()
            jobs: list = []
            while time.monotonic() - t < 60:
                seen_nodes |= {r["node_id"] for r in replicas(client)}
                jobs = [http.get(f"/v1/jobs/{i}").json() for i in ids]
                if all(j["status"] not in ("queued", "running") for j in jobs):
                    break
                time.sleep(0.25)
            done = time.monotonic()
            out["jobs_done_s"] = round(done - t, 1)
            out["job_statuses"] = sorted({j["status"] for j in jobs})
            out["job_attempts"] = sorted({j["attempts"] for j in jobs})

            # 3. Idle: back to zero after the downscale delay.
            zero = None
            while time.monotonic() - done < 45:
                running = replicas(client)
                seen_nodes |= {r["node_id"] for r in running}
                if not running:
                    zero = time.monotonic() - done
                    break
                time.sleep(0.25)
            out["scale_to_0_s"] = None if zero is None else round(zero, 1)

            # 4. At zero replicas: a job waits for the cold start, its job_timeout
            # (shorter than that) counting only the run...
            cold_job = http.post(f"/v1/models/{MODEL}/jobs", json={"seconds": JOB_SECONDS}).json()["id"]
            # ...a sync request with a short timeout explains the cold start...
            r = http.post(f"/v1/models/{MODEL}/predict", json={"seconds": 0.1}, headers={"Request-Timeout": "0.5"})
            out["cold_short"] = {"status": r.status_code, "error": r.json().get("error", {})}
            # ...a long enough one waits for the replica.
            t = time.monotonic()
            r = http.post(f"/v1/models/{MODEL}/predict", json={"seconds": 0.1}, headers={"Request-Timeout": "60"})
            out["cold_long"] = {"status": r.status_code, "s": round(time.monotonic() - t, 1)}
            job = http.get(f"/v1/jobs/{cold_job}").json()
            deadline = time.monotonic() + 30
            while job["status"] in ("queued", "running") and time.monotonic() < deadline:
                job = http.get(f"/v1/jobs/{cold_job}", params={"wait": 5}).json()
            out["cold_job"] = {k: job.get(k) for k in ("status", "attempts", "queue_wait_s", "run_s")}
            out["replica_nodes"] = sorted(seen_nodes | {r["node_id"] for r in replicas(client)})
        serve.shutdown()
    finally:
        try:
            if stalled is not None:
                stalled.stopped.set()
            ray.shutdown()
        finally:
            cluster.stop()
            out["leftover_pids"] = session_pids({p.pid for p in cluster.procs})
            if sys.exc_info()[0] is None:
                shutil.rmtree(cluster.tmp, ignore_errors=True)  # kept for a failed run: the node logs
            out["logs"] = cluster.tmp


def main(path: str) -> None:
    out: dict = {}
    t = time.monotonic()
    try:
        run(out)
    except BaseException as exc:
        out["error"] = repr(exc)
        raise
    finally:
        out["total_s"] = round(time.monotonic() - t, 1)
        Path(path).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup on timeout
    main(sys.argv[1])
