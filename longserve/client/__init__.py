"""Python SDK for a longserve gateway: `Client` (blocking) and `AsyncClient`.

    from longserve.client import Client

    with Client("http://127.0.0.1:8000") as client:
        vectors = client.predict("embedder", {"texts": ["A cat sits on the mat."]})
        job = client.submit("transcriber", content="podcast.mp3")
        job = client.wait(job, on_progress=lambda j: print(j.progress.done, "/", j.progress.total))
        transcript = client.result(job)

Results are the server's own models: `JobView`, `JobPage` (longserve.server.jobs.record),
`ModelView`, `ModelList` (longserve.api.models).
"""

from longserve.api.jobs import JobPage, JobView
from longserve.api.models import ModelList, ModelView
from longserve.client.clients import AsyncClient, Client
from longserve.client.core import (
    ConnectionFailed,
    Event,
    JobNotFinished,
    LongserveError,
    Retry,
    StreamBroken,
    WaitTimeout,
)

__all__ = [
    "AsyncClient",
    "Client",
    "ConnectionFailed",
    "Event",
    "JobNotFinished",
    "JobPage",
    "JobView",
    "LongserveError",
    "ModelList",
    "ModelView",
    "Retry",
    "StreamBroken",
    "WaitTimeout",
]
