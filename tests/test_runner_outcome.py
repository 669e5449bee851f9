"""The runner stores the model's outcome, not the job store's hiccup.

A unit test of JobRunner._call_model with stand-ins for the store and the
model handle (no Ray): the store failing to save an outcome (its redis
briefly down) must not turn a model's success into a `model_error` failure.
Found by the reliability suite's redis-restart scenario (docs/reliability.md).
"""

import asyncio

from ray.exceptions import RayTaskError

from longserve.server.calls import Event
from longserve.server.config import AppConfig
from longserve.server.jobs.record import Job, JobRequest
from longserve.server.jobs.runner import JobRunner


class Remote:
    def __init__(self, fn):
        self.remote = fn


class FlakyStore:
    """finish() fails `failures` times as a backend error inside the actor would, then stores."""

    def __init__(self, failures: int):
        self.failures, self.calls = failures, []

        async def finish(job_id, runner, attempt, status, result=None, error=None, result_blob=None):
            self.calls.append((status, result, error))
            if len(self.calls) <= self.failures:
                raise RayTaskError(
                    "finish", "Traceback: redis.exceptions.ConnectionError", ConnectionError("redis down")
                )
            return True

        self.finish = Remote(finish)


class Stream:
    def __init__(self, events):
        self.events = events

    def __aiter__(self):
        return self._gen()

    async def _gen(self):
        for event in self.events:
            yield event

    def cancel(self):
        pass


class Monitor:
    def record(self, *args):
        pass


def runner(store) -> JobRunner:
    cls = JobRunner.func_or_class
    self = cls.__new__(cls)
    self.config = AppConfig.model_validate(
        {"jobs": {"lease_s": 2}, "models": {"m": {"class": "tests.slow_models:Sleeper", "timeout": False}}}
    )
    self.store, self.id, self.monitor = store, "runner-test", Monitor()
    model = Remote(
        lambda inputs, progress, partials=False: Stream([(Event.STARTED, "cpu"), (Event.RESULT, {"ok": True})])
    )
    self.handles = {"m": type("Handle", (), {"run": model})()}

    class Parser:
        def parse(self, *args):
            return None

    self.parser = Parser()
    return self


def test_a_store_failure_while_storing_the_result_is_not_a_model_error():
    store = FlakyStore(failures=2)
    job = Job(
        id="job_x",
        seq=1,
        model="m",
        request=JobRequest(media_type="application/json"),
        ttl_s=60,
        attempts=1,
        started_at=1.0,
        status="running",
    )
    asyncio.run(runner(store)._call_model(job, b"{}", {}))
    # Retried until the store took it; never recorded as the model's failure.
    assert [status for status, _, _ in store.calls] == ["succeeded"] * 3
    assert store.calls[-1][1] == {"ok": True}
