"""`longserve transcribe --follow` and `longserve predict --stream`, run as subprocesses
against the real app: output as it comes on stdout, the progress bar on stderr."""

import json
import re
import signal
import subprocess

import httpx

from longserve.client import cli
from tests.conftest import DATA
from tests.test_cli import LONGSERVE, env_for, longserve
from tests.transcripts import assert_transcript


def test_transcribe_follow_prints_segments_as_they_come_and_the_bar_on_stderr(serve_app):
    proc = subprocess.Popen(
        [LONGSERVE, "transcribe", str(DATA / "speech_long.ogg"), "--follow", "--progress", "--format", "text"],
        env=env_for(serve_app.url),
        text=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        first = proc.stdout.readline()  # the first segment, while the rest is still being transcribed
        job_id = re.match(r"job (job_\S+)", proc.stderr.readline()).group(1)
        assert httpx.get(f"{serve_app.url}/v1/jobs/{job_id}").json()["status"] == "running", first
        rest, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == cli.OK, stderr
    lines = [first, *rest.splitlines(keepends=True)]
    assert len(lines) >= 3 and all(line.endswith("\n") and line.strip() for line in lines)
    assert_transcript(" ".join(line.strip() for line in lines), "speech_long.ogg")
    # The bar on stderr: seconds of audio done / total, advancing to the end.
    done = [float(d) for d in re.findall(r"\| ([\d.]+)/67\.0 s", stderr)]
    assert len(set(done)) >= 2 and done == sorted(done), stderr
    # The job's segments are the lines printed.
    result = httpx.get(f"{serve_app.url}/v1/jobs/{job_id}/result").json()
    assert [segment["text"] + "\n" for segment in result["segments"]] == lines


def test_predict_stream_prints_each_partial_then_the_result(serve_app):
    run = longserve(serve_app, "predict", "ticker", "--json", '{"ticks": 3}', "--stream")
    assert run.returncode == cli.OK, run.stderr
    *partials, result = run.stdout.split("\n", 3)
    assert [json.loads(line) for line in partials] == [{"tick": 0}, {"tick": 1}, {"tick": 2}]
    assert json.loads(result) == {"ticks": 3, "tag": ""}


def test_predict_stream_timeout_mid_stream_exits_6_with_the_hint(serve_app):
    body = '{"ticks": 10000, "every": 0.1}'
    run = longserve(serve_app, "predict", "ticker", "--json", body, "--stream", "--request-timeout", "1.5")
    assert run.returncode == cli.TIMEOUT, run.stderr
    assert run.stdout.startswith('{"tick": 0}\n')  # partials came before the deadline
    assert run.stderr.startswith("error: 504 timeout: Model 'ticker' did not answer within 1.5 s")


def test_ctrl_c_while_following_cancels_the_job_when_asked_to(serve_app, client):
    proc = subprocess.Popen(
        [LONGSERVE, "transcribe", str(DATA / "speech_long.ogg"), "--follow", "--on-interrupt", "cancel"],
        env=env_for(serve_app.url),
        text=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    first = proc.stderr.readline()  # "job <id> (transcriber) queued": it follows the job now
    job_id = re.match(r"job (job_\S+)", first).group(1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == cli.INTERRUPTED, stderr
    assert f"cancelled job {job_id}" in stderr
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
