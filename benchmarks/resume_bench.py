"""What a fault costs a long transcription job, now that jobs resume from a
checkpoint: model-seconds of a job whose replica is killed at ~70% and of a
job whose runner is killed mid-run, each against a clean run of the same
audio in the same run; and how soon the first partial (a decoded segment)
reaches a watcher of a podcast job on an idle server.

    python -m benchmarks.resume_bench --minutes 15            # prints a markdown section
    python -m benchmarks.resume_bench --minutes 3 --out /tmp/resume.md
    python -m benchmarks.resume_bench --first-partial 3         # only the first partial, 3 jobs

Its own Ray cluster (benchmarks/serving.py) and one app: the shipped
transcriber (Whisper base, int8, beam 1, checkpoint_every_s 60) and the
shipped jobs settings (lease_s 30, max_attempts 3) on a sqlite file.

Model-seconds = seconds of decode work the transcriber did for the job,
summed over its attempts, from the model's own reporting: each attempt that
stops by itself (done, or stopped by its fence once another attempt took the
job) logs "transcriber decoded ... in X s (model-seconds)" in its replica's
log; an attempt whose replica is killed cannot, so its share is the kill's
time minus the moment its `running` event (attempt 1: the replica begins
at once, on an idle server) reached the benchmark over the job's event stream.
Both count the audio's decoding to samples, which a resumed attempt does again.
Wall seconds grow when other work shares the CPUs; so the table also gives
the seconds of audio the attempts decoded (the same log lines; a killed
attempt: its last progress before the kill), which load does not move.
"""

import argparse
import contextlib
import glob
import json
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import httpx

from benchmarks.serving import ROOT, deploy, serving

APP = "tx"
LOG_LINE = re.compile(r"transcriber decoded ([\d.]+) s of audio from offset ([\d.]+) s of ([\d.]+) s in ([\d.]+) s")


def config(tmp: Path):
    import yaml

    from longserve.server.config import AppConfig

    shipped = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"][0]["args"]
    transcriber = {**shipped["models"]["transcriber"], "ray_actor_options": {"num_cpus": 0}}
    transcriber["options"] = {**transcriber.get("options", {}), "max_audio_s": 4 * 3600}
    jobs = {**shipped["jobs"], "sqlite_path": str(tmp / "jobs.sqlite3")}
    return AppConfig.model_validate(
        {
            "jobs": jobs,
            "blobs": {"backend": "file", "path": str(tmp / "blobs")},
            "monitoring": {"enabled": False},
            "models": {"transcriber": transcriber},
        }
    )


class Watch:
    """A job's event stream (GET /v1/jobs/{id}/events), each event stamped on arrival."""

    def __init__(self, url: str, job_id: str):
        self.events: list[tuple[float, str, dict]] = []  # (time.monotonic(), type, data)
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(url, job_id), daemon=True)
        self.thread.start()

    def _read(self, url: str, job_id: str) -> None:
        last: Optional[str] = None
        while True:  # reconnects with Last-Event-ID: the stream outlives a gateway's hiccup
            headers = {"Last-Event-ID": last} if last else {}
            try:
                with httpx.stream("GET", f"{url}/v1/jobs/{job_id}/events", headers=headers, timeout=None) as r:
                    kind, data = "message", []
                    for line in r.iter_lines():
                        if line.startswith("id:"):
                            last = line[3:].strip()
                        elif line.startswith("event:"):
                            kind = line[6:].strip()
                        elif line.startswith("data:"):
                            data.append(line[5:].strip())
                        elif line == "" and data:
                            with self.changed:
                                self.events.append((time.monotonic(), kind, json.loads("\n".join(data))))
                                self.changed.notify_all()
                            if kind in ("result", "error"):
                                return
                            kind, data = "message", []
            except httpx.HTTPError:
                time.sleep(0.5)

    def wait(self, test, timeout_s: float = 3600):
        """The first event for which test(type, data) holds, waiting for it."""
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while True:
                for event in self.events:
                    if test(event[1], event[2]):
                        return event
                if not self.changed.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError("no such event")


def model_log_lines() -> list[tuple[str, int, dict]]:
    """Every model-seconds line in this cluster's transcriber replica logs: (file, line number, figures)."""
    import ray

    logs = os.path.join(ray._private.worker._global_node.get_session_dir_path(), "logs", "serve")
    out = []
    for path in sorted(glob.glob(os.path.join(logs, f"replica_{APP}_transcriber_*.log"))):
        with open(path, errors="replace") as f:
            for n, line in enumerate(f):
                m = LOG_LINE.search(line)
                if m:
                    decoded, offset, duration, seconds = map(float, m.groups())
                    out.append((path, n, {"decoded": decoded, "offset": offset, "seconds": seconds}))
    return out


def kill_actor(part: str) -> None:
    import ray

    (actor,) = [a for a in ray.util.list_named_actors(all_namespaces=True) if part in a["name"]]
    ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)


def run_job(url: str, audio: bytes, fault: Optional[str] = None, at: float = 0.7) -> dict:
    """One job to its end: its figures. fault: None, "replica" or "runner", at a fraction of the audio."""
    before = {(p, n) for p, n, _ in model_log_lines()}
    submitted = time.monotonic()
    response = httpx.post(
        f"{url}/v1/models/transcriber/jobs", content=audio, headers={"content-type": "audio/mpeg"}, timeout=120
    )
    response.raise_for_status()
    job_id = response.json()["id"]
    watch = Watch(url, job_id)
    first_partial = watch.wait(lambda kind, _: kind == "partial")[0]
    killed_at: Optional[float] = None
    if fault is not None:
        _, _, progress = watch.wait(lambda kind, d: kind == "progress" and (d.get("fraction") or 0) >= at)
        killed_at = time.monotonic()
        kill_actor(f"{APP}#transcriber#" if fault == "replica" else f"{APP}#JobRunner#")
    end = watch.wait(lambda kind, _: kind in ("result", "error"))
    job = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=60).json()
    assert job["status"] == "succeeded", job
    deadline = time.monotonic() + 30  # the replica's log reaches the file within moments
    while True:
        lines = [f for p, n, f in model_log_lines() if (p, n) not in before]
        if len(lines) >= (job["attempts"] - (fault == "replica")) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    attempts = [line["seconds"] for line in lines]
    decoded = sum(line["decoded"] for line in lines)
    if fault == "replica":  # the killed attempt logged nothing: from its start to the kill
        began = watch.wait(lambda kind, d: kind == "status" and d.get("attempt") == 1)[0]
        attempts.insert(0, killed_at - began)
        decoded += progress["done"]  # what it had decoded by then, as it reported
    result = httpx.get(f"{url}/v1/jobs/{job_id}/result", timeout=60).json()
    return {
        "fault": fault,
        "attempts": job["attempts"],
        "resumed_from": job["resumed_from"],
        "model_s": sum(attempts),
        "per_attempt_s": [round(a, 1) for a in attempts],
        "audio_decoded_s": decoded,
        "first_partial_s": first_partial - submitted,
        "wall_s": end[0] - submitted,
        "text": result["text"],
        "duration": result["duration"],
    }


def first_partial(url: str, audio: bytes) -> float:
    """Seconds from the submit to the job's first partial event; the job is then cancelled,
    and the replica idle again (its attempt logged its end) before this returns."""
    logged = len(model_log_lines())
    submitted = time.monotonic()
    response = httpx.post(
        f"{url}/v1/models/transcriber/jobs", content=audio, headers={"content-type": "audio/mpeg"}, timeout=120
    )
    response.raise_for_status()
    job_id = response.json()["id"]
    seconds = Watch(url, job_id).wait(lambda kind, _: kind == "partial")[0] - submitted
    httpx.delete(f"{url}/v1/jobs/{job_id}", timeout=60)
    deadline = time.monotonic() + 120
    while len(model_log_lines()) <= logged and time.monotonic() < deadline:
        time.sleep(0.2)
    return seconds


def first_partials(minutes: float, jobs: int) -> None:
    from scripts.make_podcast import make

    tmp = Path(tempfile.mkdtemp(prefix="resume-bench-"))
    podcast = tmp / "podcast.mp3"
    make(podcast, minutes * 60)
    warmup = (ROOT / "tests" / "data" / "speech.ogg").read_bytes()
    with serving({}, access_log=False) as base:
        deploy(f"/{APP}", config(tmp), access_log=False)
        url = f"{base}/{APP}"
        run_job(url, warmup)  # an idle server: model loaded, runner claiming
        seconds = [first_partial(url, podcast.read_bytes()) for _ in range(jobs)]
    load = os.getloadavg()[0]
    print(
        f"first partial of a {minutes:g}-minute podcast job: {', '.join(f'{s:.2f}' for s in seconds)} s "
        f"(load average {load:.1f} at the end)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="length of the podcast")
    parser.add_argument("--out", type=Path, help="also write the markdown section here")
    parser.add_argument("--first-partial", type=int, metavar="JOBS", help="only time the first partial, JOBS times")
    args = parser.parse_args()
    if args.first_partial:
        first_partials(args.minutes, args.first_partial)
        return

    from faster_whisper import decode_audio

    from scripts.make_podcast import SOURCE, make
    from tests.transcripts import repeated_reference, word_error_rate

    tmp = Path(tempfile.mkdtemp(prefix="resume-bench-"))
    podcast = tmp / "podcast.mp3"
    make(podcast, args.minutes * 60)
    audio = podcast.read_bytes()
    warmup = (ROOT / "tests" / "data" / "speech.ogg").read_bytes()
    started = time.monotonic()
    with serving({}, access_log=False) as base:
        deploy(f"/{APP}", config(tmp), access_log=False)
        url = f"{base}/{APP}"
        run_job(url, warmup)  # the replica's model loaded, the runner claiming: an idle server
        clean = run_job(url, audio)
        replica = run_job(url, audio, "replica", 0.7)
        runner = run_job(url, audio, "runner", 0.5)
    rows = [("clean run (baseline)", clean), ("replica killed at 70%", replica), ("runner killed at 50%", runner)]
    lines = [
        "",
        "## Resume after a fault: model-seconds of a transcription job",
        "",
        f"`python -m benchmarks.resume_bench --minutes {args.minutes:g}`: a {clean['duration'] / 60:.1f}-minute "
        "podcast (tests/data/speech_long.ogg over and over, MP3), the shipped transcriber (Whisper base, int8, "
        "beam 1, checkpoint every 60 s of audio) and jobs settings (lease 30 s), one replica, its own Ray "
        f"cluster; {time.monotonic() - started:.0f} s in all. Model-seconds: the transcriber's decode time summed "
        "over the job's attempts, from its own log line per attempt (a killed replica's attempt: from its `running` "
        "event to the kill). Audio decoded: the seconds of audio the attempts decoded, from the same lines "
        "(a killed attempt: its last progress before the kill); unlike wall seconds, other load on the "
        "machine does not move it. WER: word error rate of the result against the clean run's, and against "
        "what the audio says (tests/transcripts.py's reference of the clip, repeated as the podcast repeats it).",
        "",
        "| job | attempts | resumed from (s of audio) | model-seconds | per attempt | ÷ clean | "
        "audio decoded (s) | ÷ clean | wall s | WER vs clean | WER vs the speech |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    clip_s = len(decode_audio(str(SOURCE), sampling_rate=16000)) / 16000
    truth = repeated_reference(SOURCE.name, clip_s, clean["duration"])
    for name, row in rows:
        wer = word_error_rate(row["text"], clean["text"])
        vs_speech = word_error_rate(row["text"], truth)
        lines.append(
            f"| {name} | {row['attempts']} | {row['resumed_from'] if row['resumed_from'] is not None else '—'} | "
            f"{row['model_s']:.1f} | {' + '.join(f'{a:.1f}' for a in row['per_attempt_s'])} | "
            f"{row['model_s'] / clean['model_s']:.2f} | {row['audio_decoded_s']:.0f} | "
            f"{row['audio_decoded_s'] / clean['audio_decoded_s']:.2f} | {row['wall_s']:.1f} | {wer:.1%} | "
            f"{vs_speech:.1%} |"
        )
    lines += [
        "",
        f"Time from submit to the first `partial` event of the clean job, on an idle server: "
        f"**{clean['first_partial_s']:.2f} s** (goal ≤ 3 s); the other two: {replica['first_partial_s']:.2f} s, "
        f"{runner['first_partial_s']:.2f} s. It is the upload, the audio's decoding to samples and the first "
        "30-s window's encoding and decoding (language detection included).",
        "",
    ]
    text = "\n".join(lines)
    print(text, flush=True)
    if args.out:
        args.out.write_text(text)
    with contextlib.suppress(OSError):
        podcast.unlink()


if __name__ == "__main__":
    main()
