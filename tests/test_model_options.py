"""A model's `options:` are checked against its `Options` class when the config
is loaded: a typo or a wrong type names the field; the model gets them typed."""

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from longserve.models.embedder import Embedder
from longserve.models.transcriber import MAX_AUDIO_S, Transcriber
from longserve.server.config import AppConfig
from tests.conftest import app_args

ROOT = Path(__file__).resolve().parent.parent
EMBEDDER = {"class": "longserve.models.embedder:Embedder"}
SLEEPER = {"class": "tests.slow_models:Sleeper"}


def shipped_args() -> dict:
    return yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"][0]["args"]


def errors_of(models: dict) -> list[tuple[str, str]]:
    """(field, message) of each error AppConfig reports for `models`."""
    with pytest.raises(ValidationError) as info:
        AppConfig.model_validate({"models": models})
    return [(".".join(map(str, e["loc"])), e["msg"]) for e in info.value.errors()]


def test_a_misspelt_option_is_refused_naming_the_field():
    errors = errors_of({"embedder": {**EMBEDDER, "options": {"batch_sise": 8}}})
    assert errors == [("models.embedder.options.batch_sise", "Extra inputs are not permitted")]


@pytest.mark.parametrize("field, value", [("batch_size", "many"), ("batch_size", 0), ("max_texts", [1])])
def test_a_wrong_option_value_is_refused_naming_the_field(field, value):
    ((where, _),) = errors_of({"embedder": {**EMBEDDER, "options": {field: value}}})
    assert where == f"models.embedder.options.{field}"


def test_a_model_without_options_accepts_none():
    errors = errors_of({"m": {**SLEEPER, "options": {"seconds": 1}}})
    assert errors == [("models.m.options.seconds", "Extra inputs are not permitted")]


def test_a_class_that_does_not_load_is_refused_on_the_class_field():
    ((where, message),) = errors_of({"m": {"class": "tests.slow_models:Nope", "options": {"x": 1}}})
    assert where == "models.m.class" and "tests.slow_models:Nope" in message


def test_the_shipped_and_test_configs_load_with_typed_options(tmp_path):
    shipped = AppConfig.model_validate(shipped_args())
    assert isinstance(shipped.models["transcriber"].options, Transcriber.Options)
    assert shipped.models["transcriber"].options.beam_size == 1
    assert shipped.models["embedder"].options == Embedder.Options()
    tests = AppConfig.model_validate(app_args(tmp_path / "jobs.sqlite3", "http://127.0.0.1:9/alerts"))
    assert tests.models["transcriber"].options.max_audio_s == 600


def test_defaults_are_the_documented_ones():
    assert Embedder.Options().model_dump() == {
        "model_path": None,
        "batch_size": 64,
        "max_texts": 256,
        "max_text_chars": 10_000,
    }
    assert Transcriber.Options().model_dump() == {
        "model_path": None,
        "compute_type": None,
        "beam_size": 1,
        "cpu_threads": 0,
        "max_audio_s": MAX_AUDIO_S,
        "checkpoint_every_s": 60.0,
    }


def test_a_model_built_by_hand_gets_typed_options_and_refuses_typos():
    assert Transcriber(beam_size="2").options.beam_size == 2
    with pytest.raises(ValidationError, match="beam_sise"):
        Transcriber(beam_sise=2)
