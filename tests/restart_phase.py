"""One phase of the full-Ray-restart test, run in its own process (its own Ray):

    python -m tests.restart_phase submit DB IDS_FILE [N [S]]  # submit a 3 s job + N (2) of S (0.5) s, stop Ray mid-job
    python -m tests.restart_phase resume DB IDS_FILE          # start Ray again; IDS_FILE.done: the jobs once done

The model records each run it starts in DB.runs (tests.slow_models:Recorder).
"""

import json
import os
import socket
import sys
import time
from pathlib import Path

import httpx
import ray
from ray import serve

from longserve.server.app import build_app
from longserve.server.config import AppConfig

ROOT = Path(__file__).resolve().parent.parent


def start(db: str) -> str:
    os.environ["PYTHONPATH"] = str(ROOT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    config = AppConfig.model_validate(
        {
            "jobs": {"backend": "sqlite", "sqlite_path": db, "lease_s": 2},
            "models": {
                "sleeper": {
                    "class": "tests.slow_models:Recorder",
                    "options": {"log": db + ".runs"},
                    "timeout": False,
                    "max_ongoing_requests": 1,
                    "ray_actor_options": {"num_cpus": 0},
                }
            },
        }
    )
    serve.run(build_app(config), name="restart", route_prefix="/")
    return f"http://127.0.0.1:{port}"


def main(phase: str, db: str, ids_file: str, n: str = "2", seconds: str = "0.5") -> None:
    url = start(db)
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            if phase == "submit":
                work = [3.0] + [float(seconds)] * int(n)
                ids = [
                    client.post("/v1/models/sleeper/jobs", json={"seconds": s, "tag": f"j{i}"}).json()["id"]
                    for i, s in enumerate(work)
                ]
                Path(ids_file).write_text(json.dumps(ids))
                while client.get(f"/v1/jobs/{ids[0]}").json()["status"] != "running":
                    time.sleep(0.1)
                ray.shutdown()  # a hard stop, like `ray stop`: the first job mid-run, two queued
                return
            ids = json.loads(Path(ids_file).read_text())
            deadline = time.monotonic() + 90 + 2 * len(ids)
            jobs = []
            while time.monotonic() < deadline:
                jobs = [client.get(f"/v1/jobs/{i}").json() for i in ids]
                if all(j["status"] not in ("queued", "running") for j in jobs):
                    break
                time.sleep(0.5)
            Path(ids_file + ".done").write_text(json.dumps(jobs))
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:6])
