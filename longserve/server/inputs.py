"""Turning a request body into a model's Input: shared by sync predict and by
the job runner, which parses a job's stored request again on every attempt."""

import re
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ValidationError

from longserve.model import InvalidInput, Model
from longserve.server.config import AppConfig
from longserve.server.errors import InputRejected, InvalidRequest, UnsupportedMediaType


def is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


def check_media_type(cls: type[Model], model: str, media_type: str) -> None:
    if not is_json(media_type) and cls.raw_body_field is None:
        raise UnsupportedMediaType(
            f"model '{model}' takes a JSON body (Content-Type: application/json); got '{media_type or 'none'}'"
        )


class InputParser:
    """Body -> a model's Input, within the configured limits (JSON depth, the
    model's own `check_input`). Bad input raises InvalidRequest,
    UnsupportedMediaType or InputRejected."""

    def __init__(self, config: AppConfig, classes: dict[str, type[Model]]):
        self.classes = classes
        self.options = {name: model.options for name, model in config.models.items()}
        self.max_json_depth = config.max_json_depth

    @classmethod
    def for_model(cls, name: str, model: type[Model], options: Model.Options, max_json_depth: int) -> "InputParser":
        """A parser of one model's input (on its replica, which has no AppConfig)."""
        parser = cls.__new__(cls)
        parser.classes, parser.options, parser.max_json_depth = {name: model}, {name: options}, max_json_depth
        return parser

    def parse_file(self, model: str, media_type: str, path: Path, params: dict[str, str]) -> BaseModel:
        """A raw body kept in a file (a job's input) -> the model's Input, via `Model.parse_file`."""
        cls = self.classes[model]
        check_media_type(cls, model, media_type)
        if path.stat().st_size == 0:
            raise InvalidRequest(f"empty body; model '{model}' expects {cls.raw_body_field} data")
        return self._validated(model, lambda: cls.parse_file(path, params))

    def parse(self, model: str, media_type: str, body: bytes, params: dict[str, str]) -> BaseModel:
        cls = self.classes[model]
        check_media_type(cls, model, media_type)
        if is_json(media_type):
            # Fewer brackets than the limit cannot nest deeper: skip the scan (most bodies).
            openers = body.count(b"[") + body.count(b"{")
            depth = json_depth(body) if openers > self.max_json_depth else 0
            if depth > self.max_json_depth:
                raise InvalidRequest(
                    f"JSON nested {depth} levels deep; "
                    f"at most {self.max_json_depth} (max_json_depth in serve_config.yaml)"
                )
            return self._validated(model, lambda: cls.Input.model_validate_json(body))
        if not body:
            raise InvalidRequest(f"empty body; model '{model}' expects {cls.raw_body_field} data")
        return self._validated(model, lambda: cls.parse_raw(body, params))

    def _validated(self, model: str, make: Callable[[], BaseModel]) -> BaseModel:
        """`make()`'s Input, within the model's own limits; its failures as domain errors."""
        try:
            inputs = make()
            self.classes[model].check_input(inputs, self.options[model])
            return inputs
        except ValidationError as exc:
            raise InvalidRequest.from_errors(exc.errors(include_url=False, include_input=False)) from None
        except InvalidInput as exc:
            raise InputRejected(str(exc), model=model) from None


# A JSON string, quotes and escapes included (the unrolled-loop form is fast in `re`).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def json_depth(body: bytes) -> int:
    """How deeply a JSON document nests arrays and objects, without parsing it:
    strings are cut out, then brackets counted (vectorized, so 100 MB takes well under a second)."""
    import numpy as np

    chars = np.frombuffer(_JSON_STRING.sub(b"", body), dtype=np.uint8)
    steps = np.isin(chars, (ord("["), ord("{"))).astype(np.int32) - np.isin(chars, (ord("]"), ord("}")))
    return int(steps.cumsum().max(initial=0))
