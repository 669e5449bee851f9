"""A local Ray cluster and Serve on a free loopback port, for one benchmark run."""

import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def serving(apps: dict) -> Iterator[str]:
    """Run each {route_prefix: AppConfig}; yield the base URL; stop everything."""
    import ray
    from ray import serve

    from longserve.apps.main import build_app

    # Replicas import benchmarks.echo_model; workers inherit this environment.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for prefix, config in apps.items():
            serve.run(build_app(config), name=prefix.strip("/") or "bench", route_prefix=prefix)
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
