"""Turning a request body into a model's Input: shared by sync predict and by
the job runner, which parses a job's stored request again on every attempt."""

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from longserve.errors import ApiError
from longserve.model import Model


def media_type_of(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


def check_media_type(cls: type[Model], model: str, media_type: str) -> None:
    if not is_json(media_type) and cls.raw_body_field is None:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"model '{model}' takes a JSON body (Content-Type: application/json); got '{media_type or 'none'}'",
        )


def parse_input(cls: type[Model], model: str, media_type: str, body: bytes, params: dict[str, str]) -> BaseModel:
    check_media_type(cls, model, media_type)
    try:
        if is_json(media_type):
            return cls.Input.model_validate_json(body)
        if not body:
            raise ApiError(422, "invalid_request", f"empty body; model '{model}' expects {cls.raw_body_field} data")
        return cls.parse_raw(body, params)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_input=False)) from None
