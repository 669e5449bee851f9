"""Backpressure for request bodies behind Ray Serve's HAProxy ingress.

With `RAY_SERVE_ENABLE_HA_PROXY=1` HAProxy sends each request to the gateway
replica's own HTTP server (uvicorn), which stops reading the socket while a body
it has read waits unconsumed: real flow control, back to the client. But Ray
Serve 2.60 copies every message of that body as it arrives into an unbounded
queue for the app (`ASGIDIReceiveProxy._fetch_until_disconnect`), so an upload
faster than the gateway writes it to the blob store piles up in the gateway's
memory (a 256 MiB upload on loopback: +0.88x the body). `bound_body_queue`
makes that queue hold at most `MAX_MESSAGES` messages (each at most ~64 KiB,
uvicorn's high-water mark, plus one socket read): the copying waits while it is
full, uvicorn stops reading, TCP pushes back. Disconnects are still seen, once the
app has read what came before them, as any ASGI app would see them.

Ray's Python proxy (the default ingress) has a second unbounded queue in its own
process, which no code of ours runs in: there the body still piles up in the
gateway (docs/benchmarks.md#memory-of-a-large-job-upload).

Patched only on the Ray version it was written against, and only when the class
still has the shape it patches; otherwise Ray's behaviour stays (logged once).
"""

import asyncio
import logging

import ray

log = logging.getLogger(__name__)

MAX_MESSAGES = 64  # at most a few MiB of body waiting in the gateway per request
PATCHED_VERSIONS = ("2.60.",)


async def _fetch_until_disconnect(self):  # type: ignore[no-untyped-def]
    """Ray 2.60's method, except that a message waits for room in the queue."""
    while True:
        msg = await self._receive()
        if asyncio.get_running_loop() == self._user_event_loop:
            await self.queue.put(msg)
        else:  # the app runs on its own loop (RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD, the default)
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_put(self, msg), self._user_event_loop))
        if msg["type"] == "http.disconnect":
            self._disconnect_message = msg
            return None
        if msg["type"] == "websocket.disconnect":
            self._disconnect_message = msg
            return msg["code"]


async def _put(proxy, msg) -> None:  # type: ignore[no-untyped-def]
    await proxy.queue.put(msg)


def _bounded_queue(self) -> asyncio.Queue:  # type: ignore[no-untyped-def]
    if self._queue is None:
        self._queue = asyncio.Queue(maxsize=MAX_MESSAGES)
    return self._queue


def bound_body_queue() -> bool:
    """Patch Ray Serve's direct-ingress receive queue to a bounded one (in this
    process: call it in the gateway replica). True when patched."""
    try:
        from ray.serve._private.direct_ingress_http_util import ASGIDIReceiveProxy
    except ImportError:
        return False
    if getattr(ASGIDIReceiveProxy, "_longserve_bounded", False):
        return True
    expected = ("_fetch_until_disconnect", "queue", "put_message", "fetch_until_disconnect_task")
    if not ray.__version__.startswith(PATCHED_VERSIONS) or not all(hasattr(ASGIDIReceiveProxy, a) for a in expected):
        log.warning(
            "Ray %s: request bodies behind the HAProxy ingress are not flow-controlled in the gateway "
            "(longserve's patch is for Ray %s)",
            ray.__version__,
            "/".join(v + "x" for v in PATCHED_VERSIONS),
        )
        return False
    ASGIDIReceiveProxy._fetch_until_disconnect = _fetch_until_disconnect  # type: ignore[method-assign]
    ASGIDIReceiveProxy.queue = property(_bounded_queue)  # type: ignore[method-assign,assignment]
    ASGIDIReceiveProxy._longserve_bounded = True  # type: ignore[attr-defined]
    return True
