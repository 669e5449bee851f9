"""A full queue answers 503 with Retry-After at once, in the error shape."""

import time
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import error_of
from tests.test_timeouts import SLEEP, wait_idle


def test_full_queue_is_503_with_retry_after(client):
    wait_idle(client)
    # One running + max_queued_requests=2 waiting; the rest must be refused.
    with ThreadPoolExecutor(6) as pool:
        accepted = [pool.submit(client.post, SLEEP, json={"seconds": 1.0}, headers={"Request-Timeout": "5"})]
        time.sleep(0.3)
        accepted += [pool.submit(client.post, SLEEP, json={"seconds": 1.0}, headers={"Request-Timeout": "5"})
                     for _ in range(2)]
        time.sleep(0.2)
        refused = [pool.submit(client.post, SLEEP, json={"seconds": 0.4}) for _ in range(3)]
        refused = [f.result() for f in refused]
        # Refused at once, not queued behind the accepted work (~3 s of it): that is still running.
        last_accepted_still_running = not accepted[-1].done()
        accepted = [f.result() for f in accepted]

    assert [r.status_code for r in accepted] == [200, 200, 200]
    assert [r.status_code for r in refused] == [503, 503, 503]
    for response in refused:
        assert int(response.headers["Retry-After"]) >= 1
        error = error_of(response)
        assert error["type"] == "overloaded" and error["model"] == "sleeper"
        assert "max_queued_requests" in error["message"]
    assert last_accepted_still_running
