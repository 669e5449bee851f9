"""The hour-long user check (issue 15): a 1-hour recording through the CLI, as a user
would send it, twice: uploaded (`longserve transcribe hour.wav`, progress bar on
stderr) and by URL from a loopback HTTP server that the config allows
(`longserve transcribe http://127.0.0.1:<port>/hour.wav`). Samples the gateway's
and the JobStore's resident memory meanwhile and scores both transcripts with
tests/transcripts.py's rule against what the audio says.

    PYTHONPATH=$PWD python scripts/hour_check.py [--minutes 60] [--port 8477] [--haproxy]

It writes a 16 kHz mono WAV (tests/data/speech_long.ogg, then 3 s of silence, over
and over: 115 MB an hour), starts the shipped serve_config.yaml with `serve run`
(its own local Ray cluster; only the port, the job and blob paths, and
`inputs.allow: ["127.0.0.1"]` changed; `--haproxy`: behind Ray's HAProxy ingress,
where an upload is flow-controlled), runs the two passes one after the other, prints
a report and stops everything it started. Run from the repo root.
"""

import argparse
import contextlib
import functools
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.upload_memory import ingress_env  # noqa: E402
from tests.processes import find, rss  # noqa: E402
from tests.transcripts import THRESHOLD, repeated_reference, share_heard, word_error_rate  # noqa: E402

CLIP = "speech_long.ogg"
RATE = 16000
PAUSE_S = 3.0
MIB = 1024 * 1024


def make_wav(path: Path, seconds: float) -> float:
    """`seconds` of the clip and a pause, repeated, as 16-bit PCM; returns one cycle's length."""
    from faster_whisper import decode_audio

    clip = decode_audio(str(ROOT / "tests" / "data" / CLIP), sampling_rate=RATE)
    cycle = (np.concatenate([clip, np.zeros(int(PAUSE_S * RATE), np.float32)]) * 32767).astype("<i2")
    left = int(seconds * RATE)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        while left > 0:  # one cycle at a time: never the hour in memory
            out.writeframes(cycle[:left].tobytes())
            left -= len(cycle)
    return len(cycle) / RATE


def write_config(folder: Path, port: int) -> Path:
    """The shipped serve_config.yaml with this run's port, paths and loopback allowed for input URLs."""
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    config["http_options"]["port"] = port
    args = config["applications"][0]["args"]
    args["jobs"]["sqlite_path"] = str(folder / "jobs.sqlite3")
    args["blobs"]["path"] = str(folder / "blobs")
    args["inputs"] = {"allow": ["127.0.0.1"]}
    path = folder / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def find_pids(root: int) -> dict[str, int]:
    """The gateway replica and the JobStore actor of the cluster under `root`, by process title."""
    return find(root, {"gateway": "ray::ServeReplica:longserve:Gateway", "job store": "ray::JobStore"})


class Sampler(threading.Thread):
    """Each process's RSS every 100 ms: the first sample, and the peak of each phase."""

    def __init__(self, pids: dict[str, int]):
        super().__init__(daemon=True)
        self.pids = pids
        self.base = {name: rss(pid) for name, pid in pids.items()}
        self.phase = "upload"
        self.peaks: dict[str, dict[str, int]] = {"upload": dict(self.base), "run": dict(self.base)}
        self.running = True

    def run(self) -> None:
        while self.running:
            peak = self.peaks[self.phase]
            for name, pid in self.pids.items():
                peak[name] = max(peak[name], rss(pid))
            time.sleep(0.1)


def transcribe(url: str, audio: str, result: Path, pids: dict[str, int]) -> dict:
    """`longserve transcribe AUDIO` with the progress bar (forwarded to stderr); the memory it took."""
    cli = [sys.executable, "-m", "longserve.client.cli", "--url", url, "transcribe", audio, "--progress"]
    sampler = Sampler(pids)
    sampler.start()
    start = time.monotonic()
    submitted = None
    proc = subprocess.Popen([*cli, "--format", "json", "-o", str(result)], stderr=subprocess.PIPE)
    assert proc.stderr is not None
    seen = b""
    while chunk := os.read(proc.stderr.fileno(), 4096):
        sys.stderr.buffer.write(chunk)
        sys.stderr.flush()
        seen = (seen + chunk)[-4096:]
        if submitted is None and b"job " in seen:  # the CLI names the job once its upload is accepted
            submitted = time.monotonic() - start
            sampler.phase = "run"
    code = proc.wait()
    total = time.monotonic() - start
    sampler.running = False
    sampler.join()
    if code:
        raise SystemExit(f"longserve transcribe {audio} exited {code}")
    return {
        "submit_s": submitted,
        "total_s": total,
        "base": sampler.base,
        "peaks": sampler.peaks,
        "result": json.loads(result.read_text()),
    }


def serve_files(folder: Path) -> http.server.ThreadingHTTPServer:
    quiet = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def wait_ready(log: Path, url: str, proc: subprocess.Popen, limit_s: float = 600) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"serve run exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=10).status_code == 200:  # every model healthy, jobs ok
                return
        except httpx.TransportError:
            pass
        time.sleep(2)
    raise SystemExit(f"the app was not up in {limit_s:.0f} s:\n{log.read_text()[-3000:]}")


def report(name: str, run: dict, audio_s: float, cycle_s: float) -> bool:
    result = run["result"]
    truth = repeated_reference(CLIP, cycle_s, result["duration"])
    heard = share_heard(result["text"], truth)
    upload = f"job accepted in {run['submit_s']:.1f} s, " if run["submit_s"] is not None else ""
    print(
        f"{name}: {upload}submit to transcript {run['total_s']:.0f} s "
        f"({audio_s / run['total_s']:.1f}x realtime); duration {result['duration']:.0f} s, "
        f"{len(result['segments'])} segments; {heard:.1%} of the content words heard "
        f"(>= {THRESHOLD:.0%} passes), word error rate {word_error_rate(result['text'], truth):.1%}"
    )
    for process in run["base"]:
        base = run["base"][process]
        up, whole = run["peaks"]["upload"][process], run["peaks"]["run"][process]
        print(
            f"  {process:<10} RSS {base / MIB:.0f} MiB before; peak while uploading {up / MIB:.0f} MiB "
            f"(+{(up - base) / MIB:.1f}), while transcribing {whole / MIB:.0f} MiB (+{(whole - base) / MIB:.1f})"
        )
    return heard >= THRESHOLD and abs(result["duration"] - audio_s) < 1


def stop(proc: subprocess.Popen) -> None:
    """Ctrl-C to `serve run` (it shuts Serve and its own Ray cluster down); then its process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers of this run only: serve run leads its own group


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--port", type=int, default=8477, help="the gateway's port")
    parser.add_argument(
        "--haproxy", action="store_true", help="serve behind Ray's HAProxy ingress (RAY_SERVE_ENABLE_HA_PROXY=1)"
    )
    parser.add_argument("--passes", default="upload,url", help="which of upload,url to run (default: both)")
    parser.add_argument("--keep", type=Path, help="keep the WAV, config, logs and transcripts in this folder")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="longserve-hour-"))
    folder.mkdir(parents=True, exist_ok=True)
    audio = folder / "hour.wav"
    audio_s = args.minutes * 60
    cycle_s = make_wav(audio, audio_s)
    print(f"wrote {audio}: {args.minutes:g} min, {audio.stat().st_size / 1e6:.0f} MB", flush=True)

    config = write_config(folder, args.port)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": "local"}  # a cluster of its own
    haproxy_files = Path(tempfile.mkdtemp(prefix="lsh-", dir="/tmp"))  # short: HAProxy caps its socket path at 97
    if args.haproxy:
        env.update(ingress_env("haproxy", haproxy_files))
    subprocess.run([sys.executable, "-m", "longserve.server.check", str(config)], check=True, env=env)
    serve_bin = Path(sys.executable).with_name("serve")
    log = folder / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(serve_bin), "run", str(config)], cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True
        )
    files = None
    url = f"http://127.0.0.1:{args.port}"
    try:
        start = time.monotonic()
        wait_ready(log, url, proc)
        print(f"serve run {config} up in {time.monotonic() - start:.0f} s", flush=True)
        pids = find_pids(proc.pid)
        assert set(pids) == {"gateway", "job store"}, pids
        runs = {}
        if "upload" in args.passes:
            runs["uploaded"] = transcribe(url, str(audio), folder / "uploaded.json", pids)
        if "url" in args.passes:
            files = serve_files(folder)
            source = f"http://127.0.0.1:{files.server_address[1]}/{audio.name}"
            runs["by input_url"] = transcribe(url, source, folder / "by_url.json", pids)
    finally:
        if files is not None:
            files.shutdown()
        stop(proc)
        shutil.rmtree(haproxy_files, ignore_errors=True)
    load = os.getloadavg()
    size = audio.stat().st_size / MIB
    ingress = "HAProxy ingress" if args.haproxy else "Python proxy"
    print(f"\n{args.minutes:g} min WAV ({size:.0f} MiB), {ingress}, load average {load[0]:.1f} {load[1]:.1f}")
    ok = all([report(name, run, audio_s, cycle_s) for name, run in runs.items()])
    if args.keep is None:
        shutil.rmtree(folder)
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
