"""One Ray cluster and one Serve app for the whole test run.

The app is the shipped serve_config.yaml (the real embedder and transcriber)
plus test-only sleeper models with short timeouts and small queues.
"""

import base64
import json
import os
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

from longserve.server.config import AppConfig
from tests.s3_server import CREDENTIALS as S3_CREDENTIALS

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
APP_NAME = "longserve"

SLEEPER = "tests.slow_models:Sleeper"
RECORDER = "tests.slow_models:Recorder"  # a Sleeper that logs each run it starts
DIGEST = "tests.blob_models:Digest"
NO_CPU = {"num_cpus": 0}
# Secrets the test cluster's replicas read from their environment.
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"test webhook signing key 32 byte").decode()
API_KEYS = {"predict": "pk-predict-only-0001", "jobs": "jk-jobs-only-00000002", "admin": "ak-admin-key-000000003"}
# Keys with tenants (docs/security.md): two keys of acme (rotation), one of globex.
# Tenants with quotas (secure_app_args): metered (a request rate), capped (active jobs, input size);
# fair_a and fair_b share the `turns` model (fair turns).
TENANT_KEYS = {
    "acme": "tk-acme-key-one-00001",
    "acme2": "tk-acme-key-two-00002",
    "globex": "tk-globex-key-000003",
    "metered": "tk-metered-key-00004",
    "capped": "tk-capped-key-000005",
    "fair_a": "tk-fair-a-key-000006",
    "fair_b": "tk-fair-b-key-000007",
}
TENANT_ENTRIES = [
    f"{TENANT_KEYS['acme']}:predict,jobs@acme",
    f"{TENANT_KEYS['acme2']}@acme",
    f"{TENANT_KEYS['globex']}:jobs@globex",
] + [f"{TENANT_KEYS[name]}@{name}" for name in ("metered", "capped", "fair_a", "fair_b")]
SECURE_PREFIX = "/secure"
# Short, so a killed runner's job runs again soon; not 2 s: on a busy 2-core machine a
# transcription starved the runner's heartbeats past 2 s, and the job failed after 3 lost leases.
LEASE_S = 8


def app_args(jobs_db: Path, alert_url: str) -> dict:
    args = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"][0]["args"]
    args.update(max_timeout=5, max_body_mb=8)
    # A short lease, so a killed runner's job is queued again within seconds; expired
    # jobs (only those submitted with a short ttl_s) are forgotten 5 s after expiry.
    args["jobs"].update(backend="sqlite", sqlite_path=str(jobs_db), lease_s=LEASE_S, forget_after_s=5)
    # Job inputs may be larger than sync bodies (max_body_mb 8), up to 16 MiB here.
    args["jobs"]["max_input_mb"] = 16
    # Short, so tests/test_job_events.py sees a keep-alive comment soon.
    args["jobs"]["events_keepalive_s"] = 1
    args["blobs"] = {"backend": "file", "path": str(jobs_db.parent / "blobs")}
    # Input URLs from the tests' loopback origin (tests/test_job_inputs_by_url.py).
    args["inputs"] = {"allow": ["127.0.0.1"], "timeout_s": 10}
    args["monitoring"] = {
        "slow_min_samples": 10,
        "alert_window_s": 30,
        "alert_min_requests": 6,
        "alert_timeout_rate": 0.5,
        "alert_cooldown_s": 600,
        "alert_webhook_url": alert_url,
    }
    args["models"].update(
        # Its runs log lets a test wait until the replica has begun a request (tests/test_timeouts.py: began).
        sleeper={
            "class": RECORDER,
            "options": {"log": str(jobs_db.parent / "sleeper-runs.log")},
            "timeout": 1.5,
            "max_ongoing_requests": 1,
            "max_queued_requests": 2,
            "job_timeout": 2,
            "ray_actor_options": NO_CPU,
        },
        sleeper_false={"class": SLEEPER, "timeout": False, "max_ongoing_requests": 1, "ray_actor_options": NO_CPU},
        sleeper_minus_one={"class": SLEEPER, "timeout": -1, "max_ongoing_requests": 1, "ray_actor_options": NO_CPU},
        # Only the monitoring tests use these, so their latency history is known.
        timed={"class": SLEEPER, "timeout": 10, "max_ongoing_requests": 4, "ray_actor_options": NO_CPU},
        auto_sleeper={
            "class": SLEEPER,
            "timeout": "auto",
            "max_ongoing_requests": 4,
            "ray_actor_options": NO_CPU,
            "auto_timeout": {"percentile": 99, "factor": 2, "min": 0.2, "max": 10, "min_samples": 10, "fallback": 5},
        },
        # Job inputs and results at size (tests/test_job_blobs.py); one job at a time.
        digest={"class": DIGEST, "max_ongoing_requests": 2, "max_concurrent_jobs": 1, "ray_actor_options": NO_CPU},
        alerting={"class": SLEEPER, "timeout": 10, "max_ongoing_requests": 8, "ray_actor_options": NO_CPU},
        # The OpenAI facade's timeout tests: an embedder that sleeps and counts its calls.
        slow_embedder={
            "class": "tests.slow_models:CountingEmbedder",
            "timeout": 6,
            "max_ongoing_requests": 1,
            "ray_actor_options": NO_CPU,
        },
        # Only the OpenAI batch tests use this one, so a cancelled batch's jobs meet no other test's.
        batch_sleeper={
            "class": "tests.slow_models:CountingEmbedder",
            "max_ongoing_requests": 2,
            "ray_actor_options": NO_CPU,
        },
        # Job events, checkpoints and resume (tests/test_job_events.py): its run log shows each attempt's steps.
        counter={
            "class": "tests.slow_models:Counter",
            "options": {"log": str(jobs_db.parent / "counter-runs.log")},
            "max_ongoing_requests": 4,
            "ray_actor_options": NO_CPU,
        },
        # Never leaves its fallback; its timeout_source counts its run times, so the
        # monitoring tests can see when the gateway has reloaded what the stats hold.
        refresh_probe={
            "class": SLEEPER,
            "timeout": "auto",
            "max_ongoing_requests": 4,
            "ray_actor_options": NO_CPU,
            "auto_timeout": {"min_samples": 1_000_000, "fallback": 5},
        },
        # Streamed predictions (tests/test_streams.py): partials on demand; its log tells what each run did.
        ticker={
            "class": "tests.slow_models:Ticker",
            "options": {"log": str(jobs_db.parent / "ticker-runs.log")},
            "timeout": 5,
            "max_ongoing_requests": 4,
            "ray_actor_options": NO_CPU,
        },
    )
    args["openai"] = {"files": {"path": str(jobs_db.parent / "openai")}}
    args["models"]["transcriber"].update(ray_actor_options=NO_CPU)
    args["models"]["transcriber"]["options"].update(max_audio_s=600)
    args["models"]["embedder"].update(ray_actor_options=NO_CPU)
    # Callbacks to the tests' loopback receivers, retried quickly.
    args["callbacks"] = {
        "allow": ["127.0.0.1"],
        "backoff_s": 0.2,
        "max_backoff_s": 2,
        "max_attempts": 4,
        "timeout_s": 3,
    }
    return args


def secure_app_args(jobs_db: Path) -> dict:
    """A second app on the same cluster: API keys on, callbacks with the
    default SSRF guard (no allowlist), one cheap model."""
    return {
        "timeout": 5,
        "auth": {"api_keys_env": "LONGSERVE_TEST_API_KEYS", "required": True},
        "callbacks": {"require_signing": True},
        "jobs": {"backend": "sqlite", "sqlite_path": str(jobs_db), "lease_s": LEASE_S},
        "blobs": {"path": str(jobs_db.parent / "blobs-secure")},
        "openai": {"files": {"path": str(jobs_db.parent / "openai-secure")}},
        "monitoring": {"enabled": False},
        "tenants": {
            "defaults": {"max_input_mb": 8},
            "metered": {"requests_per_s": 0.5, "burst": 2},
            "capped": {"max_active_jobs": 1, "max_input_mb": 0.0001},
        },
        "models": {
            "sleeper": {"class": SLEEPER, "max_ongoing_requests": 2, "ray_actor_options": NO_CPU},
            "turns": {
                "class": SLEEPER,
                "max_ongoing_requests": 2,
                "max_concurrent_jobs": 1,
                "ray_actor_options": NO_CPU,
            },
        },
    }


@dataclass
class App:
    url: str
    config: AppConfig
    metrics_url: str  # Ray's Prometheus export
    secure_url: str  # the second app: API keys on, default SSRF guard
    logs_dir: Path  # this cluster's logs (/tmp/ray/session_latest moves when a test starts another cluster)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AlertReceiver(BaseHTTPRequestHandler):
    """Collects the JSON bodies POSTed to it (the alert webhook)."""

    received: list = []
    raw: list = []  # (headers, body) of each, to check the signature

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        AlertReceiver.received.append(json.loads(body))
        AlertReceiver.raw.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def alerts():
    server = ThreadingHTTPServer(("127.0.0.1", 0), AlertReceiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/alerts", AlertReceiver.received
    server.shutdown()


@pytest.fixture(scope="session")
def serve_app(tmp_path_factory, alerts):
    import ray
    from ray import serve

    from longserve.server.app import build_app

    # Replicas import tests.slow_models; workers inherit this environment.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    os.environ["LONGSERVE_WEBHOOK_SECRET"] = WEBHOOK_SECRET
    os.environ.update(S3_CREDENTIALS)  # for apps on the blob store of tests/s3_server.py
    os.environ["LONGSERVE_TEST_API_KEYS"] = "\n".join(
        [f"{key}:{scope}" for scope, key in API_KEYS.items()] + TENANT_ENTRIES
    )
    port, metrics_port = free_port(), free_port()
    ray_context = ray.init(
        address="local", include_dashboard=False, log_to_driver=False, _metrics_export_port=metrics_port
    )
    try:
        # As serve_config.yaml: no access log (request paths carry job ids).
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"enable_access_log": False})
        jobs_dir = tmp_path_factory.mktemp("jobs")
        config = AppConfig.model_validate(app_args(jobs_dir / "jobs.sqlite3", alerts[0]))
        serve.run(build_app(config), name=APP_NAME, route_prefix="/")
        secure = AppConfig.model_validate(secure_app_args(jobs_dir / "secure.sqlite3"))
        serve.run(build_app(secure), name="secure", route_prefix=SECURE_PREFIX)
        url = f"http://127.0.0.1:{port}"
        yield App(
            url,
            config,
            f"http://127.0.0.1:{metrics_port}/metrics",
            url + SECURE_PREFIX,
            Path(ray_context.address_info["session_dir"]) / "logs",
        )
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="session")
def receiver():
    """A webhook receiver on loopback (tests/webhooks.py)."""
    from tests.webhooks import Receiver

    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="session")
def client(serve_app):
    with httpx.Client(base_url=serve_app.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="session")
def speech() -> bytes:
    """7 s of speech: "The quick brown fox jumps over the lazy dog. ..." (espeak-ng)."""
    return (DATA / "speech.ogg").read_bytes()


def speech_wav(name: str = "speech.ogg", repeat: int = 1) -> bytes:
    """A clip from tests/data as 16 kHz mono WAV, `repeat` times over.

    speech.ogg: 7.4 s, "The quick brown fox jumps over the lazy dog. ..."
    speech_long.ogg: 67 s, a paragraph about long work (espeak-ng)."""
    import io
    import wave

    import numpy as np
    from faster_whisper import decode_audio

    samples = decode_audio(str(DATA / name), sampling_rate=16000)
    pcm = (np.tile(samples, repeat) * 32767).astype("<i2").tobytes()
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm)
    return out.getvalue()


def error_of(response: httpx.Response) -> dict:
    """The `error` object of an error response, checking the shared shape."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    error = response.json()["error"]
    assert {"type", "message", "request_id"} <= error.keys(), error
    assert error["request_id"] == response.headers["x-request-id"]
    return error
