"""The `longserve` command, run as a subprocess against the real app."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from longserve.client import cli
from tests.conftest import API_KEYS, DATA, free_port
from tests.test_timeouts import wait_idle

LONGSERVE = str(Path(sys.executable).parent / "longserve")  # the console script pyproject installs
SLOW = "sleeper_false"


def env_for(url: str) -> dict:
    env = {**os.environ, "LONGSERVE_URL": url}
    env.pop("LONGSERVE_API_KEY", None)
    return env


def longserve(app, *args: str, timeout: float = 90, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [LONGSERVE, *args],
        env=env_for(app.url),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )


def test_predict_prints_the_result(serve_app):
    run = longserve(serve_app, "predict", "embedder", "A cat sits on the mat.", "A dog.")
    assert run.returncode == cli.OK, run.stderr
    result = json.loads(run.stdout)
    assert result["dim"] == 384 and len(result["embeddings"]) == 2


def test_unknown_model_is_one_line_and_exit_4(serve_app):
    run = longserve(serve_app, "predict", "no_such_model", "x")
    assert run.returncode == cli.CLIENT_ERROR == 4
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: 404 not_found: no model named 'no_such_model'; served models: ")
    assert "request_id" in lines[0]


def test_504_prints_the_hint_and_exits_6(serve_app, client):
    wait_idle(client)
    run = longserve(serve_app, "predict", "sleeper", "--json", '{"seconds": 3}', "--request-timeout", "0.5")
    assert run.returncode == cli.TIMEOUT == 6, run.stderr
    line = run.stderr.strip()
    assert "\n" not in line
    assert line.startswith("error: 504 timeout: Model 'sleeper' did not answer within 0.5 s")
    assert "send the header 'Request-Timeout: <seconds>'" in line and "Prefer: wait=<seconds>" in line  # the hint


def test_unreachable_server_exits_3():
    run = subprocess.run(
        [LONGSERVE, "--url", f"http://127.0.0.1:{free_port()}", "models"], capture_output=True, text=True, timeout=30
    )
    assert run.returncode == cli.UNREACHABLE == 3
    assert run.stderr.startswith("error: connection_failed: could not reach")


def test_models_table(serve_app):
    run = longserve(serve_app, "models")
    assert run.returncode == 0, run.stderr
    header, *rows = run.stdout.splitlines()
    assert header.split() == ["MODEL", "TIMEOUT_S", "TIMEOUT_SOURCE", "RUN/QUEUE", "JOBS_Q/R", "P99_SYNC", "P99_JOB"]
    sleeper = next(row for row in rows if row.startswith("sleeper "))
    assert sleeper.split()[:2] == ["sleeper", "1.5"] and " 1/2 " in sleeper


@pytest.fixture(scope="module")
def transcribed(serve_app, tmp_path_factory):
    """`longserve transcribe` of 67 s of speech, with the progress bar, written as SRT."""
    out = tmp_path_factory.mktemp("cli") / "speech.srt"
    run = longserve(
        serve_app, "transcribe", str(DATA / "speech_long.ogg"), "--progress", "--format", "srt", "-o", str(out)
    )
    return run, out


def test_transcribe_shows_a_progress_bar_that_advances(transcribed):
    run, _ = transcribed
    assert run.returncode == 0, run.stderr
    assert re.match(r"job job_\S+ \(transcriber\) (queued|running)\n", run.stderr)
    # tqdm redraws the bar with \r: seconds of audio done / total, and the ETA.
    done = [float(d) for d in re.findall(r"\| ([\d.]+)/67\.0 s \[[\d:]+<[\d:?]+\]", run.stderr)]
    assert len(set(done)) >= 3 and done == sorted(done), run.stderr
    assert done[-1] == pytest.approx(67.0, abs=1.0)
    assert "100%" in run.stderr


def test_transcribe_writes_srt_and_jobs_commands_show_the_job(serve_app, transcribed):
    run, out = transcribed
    srt = out.read_text()
    assert re.match(r"1\n00:00:00,000 --> 00:00:\d\d,\d{3}\n\S", srt), srt
    assert run.stdout == "" and f"wrote {out}" in run.stderr
    job_id = re.match(r"job (job_\S+)", run.stderr).group(1)

    vtt = longserve(serve_app, "jobs", "result", job_id, "--format", "vtt")
    assert vtt.returncode == 0 and re.match(r"WEBVTT\n\n00:00:00\.000 --> 00:00:\d\d\.\d{3}\n\S", vtt.stdout)
    as_json = json.loads(longserve(serve_app, "jobs", "result", job_id, "--format", "json").stdout)
    assert as_json["duration"] == pytest.approx(67.0, abs=0.1) and len(as_json["segments"]) == srt.count(" --> ")
    text = longserve(serve_app, "jobs", "result", job_id, "--format", "text").stdout
    assert text == as_json["text"] + "\n"

    status = json.loads(longserve(serve_app, "jobs", "status", job_id).stdout)
    assert status["status"] == "succeeded" and status["progress"]["fraction"] == 1.0
    listing = longserve(serve_app, "jobs", "list", "--model", "transcriber")
    assert any(line.split()[:3] == [job_id, "transcriber", "succeeded"] for line in listing.stdout.splitlines())
    waited = longserve(serve_app, "jobs", "wait", job_id, "--format", "text")
    assert waited.returncode == 0 and waited.stdout == text


def test_failed_job_exits_8_and_submit_prints_the_id(serve_app):
    submitted = longserve(serve_app, "jobs", "submit", SLOW, "--json", '{"seconds": 0, "fail": true}')
    job_id = submitted.stdout.strip()
    assert submitted.returncode == 0 and re.fullmatch(r"job_\S+", job_id)
    run = longserve(serve_app, "jobs", "wait", job_id)
    assert run.returncode == cli.JOB_FAILED == 8
    assert f"error: job {job_id} failed: " in run.stderr and "asked to fail" in run.stderr
    result = longserve(serve_app, "jobs", "result", job_id)
    assert result.returncode == 8 and "409 job_failed" in result.stderr


def interrupt_while_waiting(app, *options: str, stdin: str = "") -> tuple[subprocess.CompletedProcess, str]:
    """Start `jobs wait` on a 30 s job, press Ctrl-C once it waits; (the run, the job id)."""
    submitted = longserve(app, "jobs", "submit", SLOW, "--json", '{"seconds": 30}')
    job_id = submitted.stdout.strip()
    proc = subprocess.Popen(
        [LONGSERVE, "jobs", "wait", job_id, *options],
        env=env_for(app.url),
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    first = proc.stderr.readline()  # "job <id> (sleeper_false) queued|running": it is waiting now
    assert first.startswith(f"job {job_id} "), first
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(stdin, timeout=30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, first + stderr), job_id


def test_ctrl_c_without_a_terminal_leaves_the_job_running(serve_app, client):
    run, job_id = interrupt_while_waiting(serve_app)
    try:
        assert run.returncode == cli.INTERRUPTED == 130, run.stderr
        assert f"job {job_id} left running; follow it with: longserve jobs wait {job_id}" in run.stderr
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] in ("queued", "running")
    finally:
        client.delete(f"/v1/jobs/{job_id}")


@pytest.mark.parametrize("options, stdin", [(["--on-interrupt", "cancel"], ""), (["--on-interrupt", "ask"], "y\n")])
def test_ctrl_c_cancels_the_job_when_asked_to(serve_app, client, options, stdin):
    run, job_id = interrupt_while_waiting(serve_app, *options, stdin=stdin)
    assert run.returncode == 130, run.stderr
    if "ask" in options:
        assert f"Cancel job {job_id}? (no: leave it running)" in run.stderr
    assert f"cancelled job {job_id}" in run.stderr
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"


def test_documented_exit_code_table_is_the_cli_s():
    page = (Path(__file__).resolve().parent.parent / "docs" / "client.md").read_text()
    table = page[page.index("| code | meaning |") :].split("\n\n")[0]
    documented = {int(code): text for code, text in re.findall(r"^\| (\d+) \| (.+?) \|$", table, re.M)}
    assert documented == cli.EXIT_CODES
    help_text = subprocess.run([LONGSERVE, "--help"], capture_output=True, text=True).stdout
    assert all(f"{code:>3}  {text}" in help_text for code, text in cli.EXIT_CODES.items()), help_text


def test_jobs_cancel_and_the_cancelled_exit_code(serve_app):
    job_id = longserve(serve_app, "jobs", "submit", SLOW, "--json", '{"seconds": 30}').stdout.strip()
    cancelled = longserve(serve_app, "jobs", "cancel", job_id)
    assert cancelled.returncode == cli.OK, cancelled.stderr
    run = longserve(serve_app, "jobs", "wait", job_id)
    assert run.returncode == cli.JOB_CANCELLED == 9 and f"error: job {job_id} cancelled" in run.stderr
    again = longserve(serve_app, "jobs", "cancel", job_id)  # finished: the server's 409, one line
    assert again.returncode == cli.CLIENT_ERROR and "409 job_finished" in again.stderr


def test_api_key_from_the_option_or_the_environment(serve_app):
    """The keyed app (API keys required): no key is a 401, exit 4; --api-key
    or $LONGSERVE_API_KEY with the right scope opens it."""
    args = ["predict", "sleeper", "--json", '{"seconds": 0}']
    env = env_for(serve_app.secure_url)
    run = subprocess.run([LONGSERVE, *args], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == cli.CLIENT_ERROR and "error: 401 unauthorized" in run.stderr
    run = subprocess.run(
        [LONGSERVE, "--api-key", API_KEYS["predict"], *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == cli.OK and json.loads(run.stdout)["slept"] == 0, run.stderr
    run = subprocess.run(
        [LONGSERVE, "models"],
        env={**env, "LONGSERVE_API_KEY": API_KEYS["predict"]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == cli.CLIENT_ERROR and "403 forbidden" in run.stderr and "'admin'" in run.stderr


def test_callback_url_on_a_plain_sync_transcription_is_a_usage_error(serve_app):
    run = longserve(serve_app, "transcribe", str(DATA / "speech.ogg"), "--sync", "--callback-url", "http://x.example/")
    assert run.returncode == cli.USAGE and "--callback-url needs a job" in run.stderr
