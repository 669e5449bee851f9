"""docs/podcast.md, "Transcribe a podcast": every command and the Python block run,
in order, against the test app, on a shorter recording and with shorter timeouts
(the test app's max_timeout is 5 s). A command changed on the page is run as
changed; one added, removed or reworded so a substitution no longer applies
fails here."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from longserve.client import cli
from tests.conftest import WEBHOOK_SECRET
from tests.transcripts import assert_transcript
from tests.webhooks import Receiver, verify

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "podcast.md"

# What the page says -> what the test runs. Each must apply exactly once.
SUBSTITUTIONS = [
    ("--minutes 15", "--minutes 2"),  # ~8 s of transcription here instead of ~60 s
    ("--request-timeout 10", "--request-timeout 1"),
    ("--prefer-wait 30", "--prefer-wait 2"),  # still shorter than the work: it becomes a job
    ("https://hooks.example.com/podcast", "{receiver}"),  # a receiver on loopback (allowed in the test app)
]


def steps(text: str) -> list[tuple[str, str]]:
    """("shell", command) for each `$ ` line of the console blocks, ("python", code) for each python block."""
    found = []
    for lang, body in re.findall(r"```(console|python)\n(.*?)```", text, re.S):
        if lang == "python":
            found.append(("python", body))
        else:
            found += [("shell", line[2:]) for line in body.splitlines() if line.startswith("$ ")]
    return found


def substituted(found: list[tuple[str, str]], receiver: str = "") -> list[tuple[str, str]]:
    for old, new in SUBSTITUTIONS:
        new = new.format(receiver=receiver)
        hits = sum(code.count(old) for _, code in found)
        assert hits == 1, f"docs/podcast.md: {old!r} appears {hits} times; update SUBSTITUTIONS"
        found = [(kind, code.replace(old, new)) for kind, code in found]
    return found


def test_walkthrough_has_the_expected_steps():
    text = PAGE.read_text()
    assert [kind for kind, _ in steps(text)] == ["shell"] * 4 + ["python", "shell"]


def test_podcast_walkthrough_runs(serve_app, tmp_path):
    receiver = Receiver()
    found = substituted(steps(PAGE.read_text()), receiver.base + "/podcast")
    (tmp_path / "scripts").symlink_to(ROOT / "scripts")
    bin_dir = str(Path(sys.executable).parent)  # python and longserve from this venv
    env = {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ["PATH"],
        "LONGSERVE_URL": serve_app.url,
        "PYTHONPATH": str(ROOT),
    }
    env.pop("LONGSERVE_API_KEY", None)

    runs = []
    for kind, code in found:
        argv = ["python", "-c", code] if kind == "python" else ["bash", "-c", code]
        runs.append(
            subprocess.run(
                argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
            )
        )
    make, timed_out, prefer_wait, job, python, callback = runs

    assert make.returncode == 0 and make.stdout.startswith("wrote podcast.mp3: 2 min of speech"), make.stderr
    assert timed_out.returncode == cli.TIMEOUT, timed_out.stderr
    assert timed_out.stderr.startswith(
        "error: 504 timeout: Model 'transcriber' did not answer within 1 s (timeout set by Request-Timeout header)"
    )
    assert "Prefer: wait=<seconds>" in timed_out.stderr
    assert prefer_wait.returncode == 0, prefer_wait.stderr
    assert re.match(r"job job_\S+ \(transcriber\) (queued|running)\n", prefer_wait.stderr)  # it became a job
    transcript = (tmp_path / "podcast.txt").read_text()
    assert_transcript(transcript, "speech_long.ogg")  # speech_long.ogg, repeated
    assert job.returncode == 0, job.stderr
    srt = (tmp_path / "podcast.srt").read_text()
    assert srt.startswith("1\n00:00:00,000 --> ") and "00:01:" in srt  # cues past the first minute
    assert python.returncode == 0, python.stderr
    assert re.fullmatch(r"succeeded [\d.]+ / 12\d(\.\d+)?", python.stdout.splitlines()[-2]), python.stdout
    assert python.stdout.splitlines()[-1] == transcript[:60]
    assert callback.returncode == 0 and callback.stdout.startswith("job_"), callback.stderr
    ((headers, body),) = receiver.wait("/podcast", timeout_s=60)
    receiver.close()
    event = verify(WEBHOOK_SECRET, headers, body)  # docs/callbacks.md's own verify_webhook
    assert event["type"] == "job.completed" and event["data"]["id"] == callback.stdout.strip()
    assert event["data"]["result"]["text"][:60] == transcript[:60]
