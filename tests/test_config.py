"""Timeout settings are validated when the config is loaded."""

import math

import pytest
from pydantic import ValidationError

from longserve.server.config import AppConfig

MODEL = {"class": "tests.slow_models:Sleeper"}


def load(**top) -> AppConfig:
    top.setdefault("models", {"m": dict(MODEL)})
    return AppConfig.model_validate(top)


@pytest.mark.parametrize(
    "value, seconds", [(30, 30.0), (2.5, 2.5), (False, None), (-1, None), (-1.0, None), ("auto", "auto")]
)
def test_accepted_timeout_forms(value, seconds):
    assert load(timeout=value).models["m"].timeout == seconds
    assert load(models={"m": {**MODEL, "timeout": value}}).models["m"].timeout == seconds


@pytest.mark.parametrize("value", [0, -5, "abc", math.nan, math.inf, True, None, "30", [1]])
@pytest.mark.parametrize("where", ["global", "model", "max_timeout"])
def test_rejected_timeout_forms_name_field_value_and_forms(value, where):
    with pytest.raises(ValidationError) as info:
        if where == "global":
            load(timeout=value)
        elif where == "model":
            load(models={"transcriber": {**MODEL, "timeout": value}})
        else:
            load(max_timeout=value)
    (error,) = info.value.errors()
    field = {"global": "timeout", "model": "models.transcriber.timeout", "max_timeout": "max_timeout"}[where]
    assert ".".join(map(str, error["loc"])) == field
    assert repr(value) in error["msg"]
    assert "positive number of seconds" in error["msg"] and "false / -1" in error["msg"]


def test_default_is_30_s_and_models_inherit_the_global_timeout():
    config = load(models={"a": dict(MODEL), "b": {**MODEL, "timeout": 5}})
    assert config.models["a"].timeout == 30.0
    assert config.models["a"].timeout_source == "default (30 s)"
    assert config.models["b"].timeout_source == "models.b.timeout in serve_config.yaml"

    config = load(timeout=False, models={"a": dict(MODEL)})
    assert config.models["a"].timeout is None
    assert config.models["a"].timeout_source == "timeout in serve_config.yaml"


def test_unknown_keys_are_errors_not_ignored():
    with pytest.raises(ValidationError, match="timout"):
        load(models={"m": {**MODEL, "timout": 5}})


def test_queue_limits_reach_ray_serve_options():
    options = (
        load(models={"m": {**MODEL, "max_ongoing_requests": 2, "max_queued_requests": 7}}).models["m"].serve_options()
    )
    assert options["max_ongoing_requests"] == 2 and options["max_queued_requests"] == 7
    assert options["num_replicas"] == 1 and "timeout" not in options and "class_path" not in options


def test_auto_is_a_timeout_but_not_a_cap():
    with pytest.raises(ValidationError, match="max_timeout"):
        load(max_timeout="auto")


def test_auto_timeout_settings_are_checked():
    with pytest.raises(ValidationError, match=r"min \(10\) is above max \(5\)"):
        load(auto_timeout={"min": 10, "max": 5})
    config = load(
        timeout="auto",
        auto_timeout={"factor": 3},
        models={"a": dict(MODEL), "b": {**MODEL, "auto_timeout": {"factor": 4}}},
    )
    assert config.models["a"].auto_timeout.factor == 3 and config.models["b"].auto_timeout.factor == 4
