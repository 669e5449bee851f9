"""The gateway's admission queue (server/http/admission.py) on its own: slots,
FIFO hand-over, the bound that answers 503, and waiters that give up."""

import asyncio

import pytest

from longserve.server.config import ModelConfig
from longserve.server.errors import Overloaded
from longserve.server.http.admission import Admission, capacity_of, queue_bound_of

ECHO = "benchmarks.echo_model:Echo"


def config(**extra) -> ModelConfig:
    return ModelConfig.model_validate({"class": ECHO, "max_ongoing_requests": 2, "max_queued_requests": 2, **extra})


def test_capacity_is_slots_times_replicas_shared_by_gateways():
    assert capacity_of(config()) == 2
    assert capacity_of(config(num_replicas=3)) == 6
    assert capacity_of(config(num_replicas=3), gateways=4) == 2  # rounded up
    assert capacity_of(config(autoscaling_config={"min_replicas": 0, "max_replicas": 5})) == 10
    assert queue_bound_of(config(), gateways=2) == 1
    assert queue_bound_of(config(max_queued_requests=-1)) == -1


def test_fifo_hand_over_and_the_bound():
    async def main():
        gate = Admission("echo", config())
        order: list[int] = []
        release = asyncio.Event()

        async def request(i: int):
            async with gate.slot():
                order.append(i)
                await release.wait()

        tasks = [asyncio.create_task(request(i)) for i in range(4)]
        await asyncio.sleep(0.01)
        assert (gate.running, gate.queued, order) == (2, 2, [0, 1])
        with pytest.raises(Overloaded) as refused:  # 2 running, 2 queued: the fifth is refused at once
            await gate.acquire()
        assert refused.value.retry_after >= 1 and "max_queued_requests" in refused.value.message
        release.set()
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2, 3] and (gate.running, gate.queued) == (0, 0)

    asyncio.run(main())


def test_a_waiter_that_gives_up_leaves_the_queue_and_its_place():
    async def main():
        gate = Admission("echo", config(max_ongoing_requests=1))
        await gate.acquire()
        with pytest.raises(TimeoutError):  # the deadline passes while queued: the gateway's 504, stage queued
            async with asyncio.timeout(0.01):
                await gate.acquire()
        assert gate.queued == 0
        waiter = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        gate.release()  # handed straight to the waiter
        waiter.cancel()  # ... which gives up in the same tick: the slot is passed on, not lost
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert (gate.running, gate.queued) == (0, 0)
        await gate.acquire()
        assert gate.running == 1

    asyncio.run(main())
