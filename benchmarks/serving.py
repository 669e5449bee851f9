"""A local Ray cluster and Serve on a free loopback port, for one benchmark run."""

import logging
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deploy(prefix: str, app, access_log: bool = True) -> None:
    """Run `app` (an AppConfig, built with longserve's build_app, or any Serve Application) at `prefix`."""
    from ray import serve

    from longserve.server.app import build_app
    from longserve.server.config import AppConfig

    target = build_app(app) if isinstance(app, AppConfig) else app
    serve.run(
        target, name=prefix.strip("/") or "bench", route_prefix=prefix, logging_config={"enable_access_log": access_log}
    )


@contextmanager
def serving(apps: dict, env: Optional[dict] = None, access_log: bool = True) -> Iterator[str]:
    """Run each {route_prefix: AppConfig or Application}; yield the base URL; stop everything.

    `env`: Ray Serve settings (RAY_SERVE_* variables) for this cluster's processes."""
    import ray
    from ray import serve

    # Replicas import benchmarks.*; workers inherit this environment.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    os.environ.update(env or {})
    port = free_port()
    ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"enable_access_log": access_log})
        for prefix, app in apps.items():
            deploy(prefix, app, access_log)
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
