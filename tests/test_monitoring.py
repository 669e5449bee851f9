"""Latency you can see, timeouts that set themselves, alerts on abnormal
tasks, and the metrics in Ray's Prometheus export. Runs in file order: the
`timed` model's history builds up from one test to the next."""

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.conftest import WEBHOOK_SECRET, AlertReceiver, error_of
from tests.webhooks import verify
from tests.test_timeouts import gateway_log_lines

SLEEPS = [0.05, 0.1, 0.2, 0.3] * 5


def predict(client, model, seconds, **headers):
    return client.post(f"/v1/models/{model}/predict", json={"seconds": seconds}, headers=headers)


def model_info(client, model):
    return client.get(f"/v1/models/{model}").json()


def wait_until(check, timeout_s=10.0, every=0.2):
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(every)


def test_latency_percentiles_agree_with_what_the_client_measured(client):
    measured = []
    for seconds in SLEEPS:
        started = time.perf_counter()
        assert predict(client, "timed", seconds).status_code == 200
        measured.append(time.perf_counter() - started)

    sync = wait_until(lambda: (s := model_info(client, "timed")["latency"]["sync"])["latency_s"]["count"] == 20 and s)
    assert sync["outcomes"] == {"ok": 20}
    server, ordered = sync["latency_s"], sorted(measured)
    # The gateway's clock starts after the proxy hop, so it may read a little less.
    assert ordered[9] - 0.05 <= server["p50"] <= ordered[9]  # nearest-rank p50 of 20 is the 10th
    assert ordered[-1] - 0.05 <= server["max"] <= ordered[-1]
    assert 0.1 <= sync["run_s"]["p50"] < 0.13 and 0.3 <= sync["run_s"]["p99"] < 0.35
    assert sync["queue_s"]["max"] < 0.1


def test_timeouts_are_counted_by_stage(client):
    response = predict(client, "timed", 1, **{"Request-Timeout": "0.3"})
    assert error_of(response)["stage"] == "running"
    timeouts = wait_until(lambda: (t := model_info(client, "timed")["latency"]["sync"]["timeouts"])["running"] and t)
    assert timeouts == {"queued": 0, "running": 1}


def test_slow_request_is_logged_as_a_warning(client):
    time.sleep(1.5)  # the gateway refreshes slow thresholds every second
    response = predict(client, "timed", 1.5)
    assert response.status_code == 200
    rid = response.headers["x-request-id"]
    lines = wait_until(lambda: gateway_log_lines(rid, "slow sync"), timeout_s=5)
    (line,) = lines
    assert line.startswith("WARNING") and "model=timed" in line
    ran, threshold = map(float, re.search(r"ran ([\d.]+) s, over the abnormal threshold of ([\d.]+) s", line).groups())
    assert ran >= 1.5 and 0.9 <= threshold < 1.1  # 3 x p99 run time (~0.3 s)


def test_auto_timeout_falls_back_then_follows_observed_run_times(client):
    info = model_info(client, "auto_sleeper")
    assert info["timeout_s"] == 5 and "fallback" in info["timeout_source"]

    def settled_timeout(low, high):
        seconds = model_info(client, "auto_sleeper")["timeout_s"]
        return low <= seconds <= high and seconds

    with ThreadPoolExecutor(4) as pool:
        assert all(r.status_code == 200 for r in pool.map(lambda _: predict(client, "auto_sleeper", 0.3), range(12)))
    # 2 x p99 run time, ~0.3 s.
    wait_until(lambda: settled_timeout(0.6, 0.75))
    source = model_info(client, "auto_sleeper")["timeout_source"]
    assert "auto: 2 x p99 run time" in source and "12 requests" in source

    # Slower work (let through by the header) moves it up.
    with ThreadPoolExecutor(4) as pool:
        slow = pool.map(lambda _: predict(client, "auto_sleeper", 0.8, **{"Request-Timeout": "5"}), range(12))
        assert all(r.status_code == 200 for r in slow)
    seconds = wait_until(lambda: settled_timeout(1.6, 1.9))

    response = predict(client, "auto_sleeper", 4)
    error = error_of(response)
    assert response.status_code == 504 and error["timeout_s"] == seconds
    assert "auto: 2 x p99 run time" in error["timeout_source"]


def test_sustained_timeouts_raise_an_alert(client, alerts):
    _, received = alerts
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: predict(client, "alerting", 0.5, **{"Request-Timeout": "0.1"}), range(8)))
    assert all(r.status_code == 504 for r in responses)
    event = wait_until(lambda: next((e for e in received if e["model"] == "alerting"), None))
    assert event["alert"] == "timeout_rate" and event["rate"] == 1.0 and event["requests"] >= 6
    assert event["threshold"] == 0.5
    # Signed as job callbacks are (Standard Webhooks), and checked by the documented verifier.
    headers, body = next((h, b) for h, b in AlertReceiver.raw if json.loads(b)["model"] == "alerting")
    assert verify(WEBHOOK_SECRET, headers, body) == event and headers["webhook-id"].startswith("msg_alert_")


def test_metrics_appear_in_rays_prometheus_export(client, serve_app):
    expected = [
        r'ray_longserve_requests_total\{[^}]*model="timed"[^}]*outcome="ok"',
        r'ray_longserve_requests_total\{[^}]*model="timed"[^}]*outcome="timeout_running"',
        r'ray_longserve_latency_seconds_bucket\{[^}]*kind="sync"[^}]*model="timed"',
        r'ray_longserve_run_seconds_bucket\{[^}]*kind="job"',
        r'ray_longserve_job_transitions_total\{[^}]*status="succeeded"',
        r'ray_longserve_jobs_backlog\{[^}]*state="queued"',
        r'ray_longserve_timeout_seconds\{[^}]*model="auto_sleeper"',
        r'ray_longserve_slow_total\{[^}]*model="timed"',
        r'ray_longserve_alerts_total\{[^}]*alert="timeout_rate"[^}]*model="alerting"',
        # Per tenant: the open app's one tenant (a tenant not named in `tenants:` would be "other").
        r'ray_longserve_requests_total\{[^}]*model="timed"[^}]*tenant="anonymous"',
        r'ray_longserve_model_seconds_total\{[^}]*kind="job"[^}]*tenant="anonymous"',
    ]
    # A job, so the job metrics have something to show.
    job = client.post("/v1/models/timed/jobs", json={"seconds": 0}).json()
    wait_until(lambda: client.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded")

    def missing():
        text = httpx.get(serve_app.metrics_url, timeout=5).text
        return [pattern for pattern in expected if not re.search(pattern, text)]

    wait_until(lambda: not missing(), timeout_s=60, every=2)
    requests_ok = sum(
        float(line.rsplit(" ", 1)[1])
        for line in httpx.get(serve_app.metrics_url, timeout=5).text.splitlines()
        if line.startswith("ray_longserve_requests_total{") and 'model="timed"' in line and 'outcome="ok"' in line
    )
    assert requests_ok == 21  # 20 + the slow one
