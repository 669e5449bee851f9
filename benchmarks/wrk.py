"""Load from wrk (a C client, https://github.com/wg/wrk; Debian package `wrk`),
so the load generator does not take the servers' CPU the way a Python client
does. A Lua script sends the POST body and counts every answer's status; the
result is one dict per point: req/s (2xx only), p50/p99 ms (wrk's latency of
every answer), the statuses and wrk's own errors (client timeouts among them).

    python -m benchmarks.wrk http://127.0.0.1:8000/v1/models/embedder/predict -c 64 -d 10 \
        --body '{"texts": ["A cat sits on the mat."]}'
"""

import argparse
import json
import math
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

TIMEOUT_S = 30  # wrk's default (2 s) would turn a slow answer into an error

SCRIPT = r"""
wrk.method = "%(method)s"
%(body_lines)s
%(headers)s
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end
statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      total[tostring(status)] = (total[tostring(status)] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(total) do
    table.insert(parts, string.format('"%%s": %%d', status, n))
  end
  local e = summary.errors
  io.write(string.format(
    'WRK {"duration_us": %%d, "requests": %%d, "p50_us": %%d, "p99_us": %%d, "max_us": %%d, ' ..
    '"statuses": {%%s}, "errors": {"connect": %%d, "read": %%d, "write": %%d, "timeout": %%d}}\n',
    summary.duration, summary.requests, latency:percentile(50), latency:percentile(99), latency.max,
    table.concat(parts, ", "), e.connect, e.read, e.write, e.timeout))
end
"""


def lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def available() -> bool:
    return shutil.which("wrk") is not None


def run(
    url: str,
    body: dict | str | None,
    connections: int,
    seconds: float,
    threads: Optional[int] = None,
    headers: Optional[dict[str, str]] = None,
    timeout_s: int = TIMEOUT_S,
    method: str = "POST",
) -> dict:
    """One closed-loop point: `connections` clients for `seconds` against `url`
    (`body` None: no body, as a GET sends)."""
    if not available():
        raise RuntimeError("wrk is not on PATH (apt-get install wrk)")
    body_lines = ""
    if body is not None:
        text = body if isinstance(body, str) else json.dumps(body)
        body_lines = f'wrk.body = {lua_string(text)}\nwrk.headers["Content-Type"] = "application/json"'
    header_lines = "\n".join(f"wrk.headers[{lua_string(k)}] = {lua_string(v)}" for k, v in (headers or {}).items())
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(SCRIPT % {"method": method, "body_lines": body_lines, "headers": header_lines})
    try:
        threads = threads or max(1, min(2, connections))
        result = subprocess.run(
            [
                "wrk",
                "-t",
                str(threads),
                "-c",
                str(connections),
                "-d",
                f"{math.ceil(seconds)}s",  # wrk takes whole seconds only
                "--timeout",
                f"{timeout_s}s",
                "-s",
                script.name,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + timeout_s + 30,
        )
    finally:
        Path(script.name).unlink(missing_ok=True)
    line = next((x for x in result.stdout.splitlines() if x.startswith("WRK ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({result.returncode}): {result.stdout[-2000:]}{result.stderr[-2000:]}")
    raw = json.loads(line[4:])
    seconds_run = raw["duration_us"] / 1e6
    statuses = {int(k): v for k, v in raw["statuses"].items()}
    ok = sum(n for s, n in statuses.items() if 200 <= s < 300)
    return {
        "req/s": ok / seconds_run,
        "answers/s": raw["requests"] / seconds_run,
        "p50 ms": raw["p50_us"] / 1000,
        "p99 ms": raw["p99_us"] / 1000,
        "max ms": raw["max_us"] / 1000,
        "statuses": statuses,
        "2xx": ok,
        "client timeouts": raw["errors"]["timeout"],
        "socket errors": raw["errors"]["connect"] + raw["errors"]["read"] + raw["errors"]["write"],
        "errors": sum(n for s, n in statuses.items() if s >= 400) + raw["errors"]["timeout"],
    }


def describe(stats: dict) -> str:
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(stats["statuses"].items()))
    return (
        f"{stats['req/s']:.0f} req/s (2xx), p50 {stats['p50 ms']:.0f} ms, p99 {stats['p99 ms']:.0f} ms, "
        f"statuses {{{statuses}}}, client timeouts {stats['client timeouts']}, "
        f"socket errors {stats['socket errors']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("-c", "--connections", type=int, default=16)
    parser.add_argument("-d", "--seconds", type=float, default=10)
    parser.add_argument("--body", default='{"value": 1}')
    args = parser.parse_args()
    print(describe(run(args.url, args.body, args.connections, args.seconds)))


if __name__ == "__main__":
    main()
