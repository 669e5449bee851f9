"""A full queue answers 503 with Retry-After at once, in the error shape."""

from concurrent.futures import ThreadPoolExecutor, as_completed
from itertools import islice

from tests.conftest import error_of
from tests.test_timeouts import SLEEP, began, tagged, wait_idle


def test_full_queue_is_503_with_retry_after(client, serve_app):
    wait_idle(client)
    with ThreadPoolExecutor(6) as pool:
        body, tag = tagged(3.0)
        running = pool.submit(client.post, SLEEP, json=body, headers={"Request-Timeout": "5"})
        began(serve_app, tag)
        # One running: of these five, max_queued_requests=2 wait and 3 are refused, whichever they are.
        rest = [
            pool.submit(client.post, SLEEP, json={"seconds": 0.5}, headers={"Request-Timeout": "5"}) for _ in range(5)
        ]
        first_three = [f.result() for f in islice(as_completed(rest), 3)]
        # Refused at once: answered while the running request still runs, not after a slot freed.
        refused_while_running = not running.done()
        statuses = sorted(f.result().status_code for f in rest)

    assert running.result().status_code == 200
    assert statuses == [200, 200, 503, 503, 503]
    assert [r.status_code for r in first_three] == [503, 503, 503] and refused_while_running
    for response in first_three:
        assert int(response.headers["Retry-After"]) >= 1
        error = error_of(response)
        assert error["type"] == "overloaded" and error["model"] == "sleeper"
        assert "max_queued_requests" in error["message"]
