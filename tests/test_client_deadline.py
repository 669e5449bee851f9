"""The client's own deadline (the OpenAI SDKs' x-stainless headers) in the
timeout in force: it only lowers the timeout, with a margin. No Ray here."""

import pytest

from longserve.server.config import AppConfig
from longserve.server.errors import InvalidHeader
from longserve.server.timeouts import (
    client_deadline,
    client_margin,
    timeout_error,
    timeout_in_force,
    within_client_deadline,
)

CONFIG = AppConfig.model_validate(
    {
        "max_timeout": 60,
        "models": {
            "slow": {"class": "tests.slow_models:Sleeper", "timeout": 10},
            "open": {"class": "tests.slow_models:Sleeper", "timeout": False},
        },
    }
)


def in_force(model="slow", request_timeout=None, **client):
    return timeout_in_force(CONFIG, model, request_timeout, {}, client_deadline(client))


def test_no_client_header_keeps_the_configured_timeout():
    assert in_force() == timeout_in_force(CONFIG, "slow", None, {})
    assert in_force().seconds == 10


def test_a_shorter_client_deadline_wins_less_the_margin():
    timeout = in_force(**{"x-stainless-read-timeout": "5"})
    assert timeout.seconds == 4.0
    assert timeout.source.startswith("x-stainless-read-timeout header (5 s")
    assert "OpenAI(timeout=" in timeout.advice


def test_a_longer_client_deadline_never_raises_the_configured_timeout():
    assert in_force(**{"x-stainless-read-timeout": "600"}).seconds == 10
    # Nor a Request-Timeout the client asked for (itself capped by max_timeout).
    timeout = in_force(request_timeout="30", **{"x-stainless-read-timeout": "600"})
    assert (timeout.seconds, timeout.source) == (30, "Request-Timeout header")
    assert in_force(request_timeout="none", **{"x-stainless-read-timeout": "600"}).seconds == 60


def test_a_client_deadline_bounds_a_model_without_timeout():
    assert in_force("open", **{"x-stainless-read-timeout": "600"}).seconds == 599


def test_the_typescript_header_counts_too():
    timeout = in_force(**{"x-stainless-timeout": "2"})
    assert timeout.seconds == 1.5  # a quarter of a deadline under 4 s
    assert timeout.source.startswith("x-stainless-timeout header")


@pytest.mark.parametrize("seconds", [0.01, 0.3, 1, 3.9, 4, 100, 600])
def test_the_margin_is_a_second_or_a_quarter_of_a_short_deadline(seconds):
    margin = client_margin(seconds)
    assert 0 < margin <= 1 and margin <= seconds / 4
    assert margin == 1 or margin == pytest.approx(seconds / 4)


@pytest.mark.parametrize("value", ["abc", "0", "-1", "none", "nan", "inf"])
def test_a_malformed_client_header_is_refused_naming_it(value):
    with pytest.raises(InvalidHeader) as caught:
        in_force(**{"x-stainless-read-timeout": value})
    assert caught.value.fields["header"] == "x-stainless-read-timeout"


def test_the_504_names_the_header_and_how_to_wait_longer():
    timeout = in_force(**{"x-stainless-read-timeout": "4"})
    error = timeout_error("slow", timeout, "running", CONFIG.max_timeout)
    assert "x-stainless-read-timeout" in error.message
    assert error.fields["hint"].startswith(timeout.advice)


def test_waits_end_before_the_client_deadline():
    assert within_client_deadline({}, 60) == 60
    assert within_client_deadline({"x-stainless-read-timeout": "2"}, 60) == 1.5
    assert within_client_deadline({"x-stainless-read-timeout": "600"}, 60) == 60
