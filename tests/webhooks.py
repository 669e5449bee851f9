"""A webhook receiver on loopback for callback tests, and the verification a
real receiver does: the snippet in docs/callbacks.md, written from the Standard Webhooks
spec rather than from the server's code, so a signing bug cannot hide behind
a shared helper."""

import re
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional


def documented_verifier():
    """`verify_webhook` exactly as docs/callbacks.md shows receivers, so the
    documented snippet is what checks every callback in the tests."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "callbacks.md").read_text()
    code = re.search(r"```python\n(import base64, hashlib, hmac, json, time\n.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(code, namespace)
    return namespace["verify_webhook"]


verify = documented_verifier()


class Receiver:
    """Records every POST by path; `script(path, [(status, headers), ...])`
    makes the first calls to that path answer with those statuses."""

    def __init__(self):
        self.received: dict[str, list[tuple[dict, bytes]]] = defaultdict(list)
        self.scripts: dict[str, list[tuple[int, dict]]] = defaultdict(list)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.received[self.path].append(({k.lower(): v for k, v in self.headers.items()}, body))
                    status, headers = receiver.scripts[self.path].pop(0) if receiver.scripts[self.path] else (204, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.handler = Handler
        self.up(0)
        self.base = f"http://127.0.0.1:{self.server.server_port}"

    def up(self, port: Optional[int] = None) -> None:
        """Listen (again, on the same port unless given one)."""
        self.server = ThreadingHTTPServer(
            ("127.0.0.1", self.server.server_port if port is None else port), self.handler
        )
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        """Stop listening: callbacks meet a refused connection until `up`."""
        self.server.shutdown()
        self.server.server_close()

    def script(self, path: str, responses: list[tuple[int, dict]]) -> str:
        self.scripts[path] = list(responses)
        return self.base + path

    def wait(self, path: str, count: int = 1, timeout_s: float = 20) -> list[tuple[dict, bytes]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received[path]) >= count:
                    return list(self.received[path])
            time.sleep(0.05)
        raise AssertionError(f"{path}: {len(self.received[path])} POSTs after {timeout_s} s, wanted {count}")

    def close(self):
        self.down()
