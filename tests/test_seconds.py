"""Seconds are parsed in one place; each caller keeps its forms and its words."""

import math

import pytest

from longserve.server.errors import InvalidHeader
from longserve.server.http.errors import ApiError
from longserve.server.http.jobs import parse_prefer
from longserve.server.seconds import parse_seconds
from longserve.server.timeouts import parse_header


@pytest.mark.parametrize("value, seconds", [(30, 30.0), (2.5, 2.5), ("2.5", 2.5), (" 7 ", 7.0), ("1e3", 1000.0)])
def test_numbers_and_text_holding_one_are_seconds(value, seconds):
    assert parse_seconds(value) == seconds


@pytest.mark.parametrize("value", [0, -1, "0", "abc", "", math.nan, math.inf, "inf", "nan", True, False, None, [1]])
def test_anything_else_is_a_value_error(value):
    with pytest.raises(ValueError):
        parse_seconds(value)


def test_no_limit_words_and_non_positive_values_are_the_callers_choice():
    assert parse_seconds(" None ", no_limit={"none"}) is None
    assert parse_seconds("-3", positive=False) == -3.0
    with pytest.raises(ValueError):
        parse_seconds("-inf", positive=False)


@pytest.mark.parametrize("value, seconds", [("none", None), ("FALSE", None), ("-1", None), ("2.5", 2.5)])
def test_request_timeout_header_forms(value, seconds):
    assert parse_header(value) == seconds


@pytest.mark.parametrize("value", ["0", "-2", "abc", "inf", "nan", "-1.0", ""])
def test_a_bad_request_timeout_header_is_a_400_naming_the_header(value):
    with pytest.raises(InvalidHeader) as info:
        parse_header(value)
    assert info.value.body == {
        "type": "invalid_header",
        "header": "Request-Timeout",
        "message": f"Request-Timeout: {value!r} is not a timeout; send a positive number of seconds, "
        "or 'none' for no timeout",
    }


@pytest.mark.parametrize("header, wait", [('wait="5"', 5.0), ("wait=-3", 0.0), ("wait=0", 0.0), ("wait=600", 60.0)])
def test_prefer_wait_is_clamped_to_zero_and_the_cap(header, wait):
    assert parse_prefer(f"respond-async, {header}", 60.0) == (True, wait)


@pytest.mark.parametrize("value", ["inf", "nan", "abc", ""])
def test_a_prefer_wait_that_is_not_a_finite_number_is_a_400(value):
    with pytest.raises(ApiError) as info:
        parse_prefer(f"wait={value}", 60.0)
    assert info.value.status == 400
    assert info.value.body == {
        "type": "invalid_header",
        "header": "Prefer",
        "message": f"Prefer: wait={value!r} is not a number of seconds",
    }
