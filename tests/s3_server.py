"""A real S3-compatible server on loopback for the tests: moto's standalone
server in its own process (the code under test speaks S3 over HTTP to it)."""

import os
import socket
import subprocess
import sys
import time

import httpx

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "longserve-test",
    "AWS_SECRET_ACCESS_KEY": "longserve-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class S3Server:
    def __init__(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None
        os.environ.update(CREDENTIALS)  # for this process and the Ray workers it starts
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(self.url + "/moto-api/", timeout=1)
                return
            except httpx.TransportError:
                assert self.process.poll() is None, "moto server exited"
                assert time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.1)

    def stop(self) -> None:
        """Stopped, the store is unreachable (and moto forgets its buckets)."""
        self.process.terminate()
        self.process.wait(timeout=10)

    def bucket(self, name: str) -> str:
        httpx.put(f"{self.url}/{name}").raise_for_status()
        return name
