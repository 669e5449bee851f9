"""One JSON shape for every error the API returns:

    {"error": {"type": "...", "message": "...", "request_id": "...", ...}}

Routes raise ApiError (status chosen on the spot); code below the HTTP layer
raises the domain errors of server/errors.py, whose statuses are in STATUS.
"""

import logging
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from longserve.server import errors
from longserve.server.openai.errors import is_openai_path, openai_error, openai_status

logger = logging.getLogger("ray.serve")


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")  # plus fields such as timeout_s, stage, hint, job_id

    type: str
    message: str
    request_id: str


class ErrorBody(BaseModel):
    error: ErrorDetail


# Every route documents this shape for its 4xx and 5xx answers.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorBody, "description": "Client error"},
    "5XX": {"model": ErrorBody, "description": "Server error (504: the timeout in force expired)"},
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        headers: Optional[dict[str, str]] = None,
        **fields: Any,
    ):
        super().__init__(message)
        self.status = status
        self.body = {"type": type, "message": message, **fields}
        self.headers = headers or {}


# The HTTP status of each domain error; a subclass not listed takes its base's.
STATUS: dict[type[errors.ServeError], int] = {
    errors.ServeError: 500,
    errors.InvalidRequest: 422,
    errors.UnsupportedMediaType: 415,
    errors.InvalidHeader: 400,
    errors.InvalidCallbackUrl: 422,
    errors.InvalidInputUrl: 422,
    errors.InputRejected: 422,
    errors.InputUnavailable: 502,  # a job's input could not be fetched or read (it ends the job, not a request)
    errors.TimedOut: 504,
    errors.Overloaded: 503,
    errors.ReplicaDied: 503,
    errors.ModelFailed: 500,
}


def status_of(exc: Exception) -> int:
    """The status an exception is answered with."""
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, RequestValidationError):
        return 422
    if isinstance(exc, errors.ServeError):
        return next(STATUS[cls] for cls in type(exc).__mro__ if cls in STATUS)
    return 500


def request_id(request: Request) -> str:
    # Ray Serve's proxy puts the client's X-Request-ID (or a new one) on every
    # request and echoes it on the response.
    return request.headers.get("x-request-id", "")


def error_answer(request: Request, status: int, body: dict, headers: Optional[dict] = None) -> tuple[int, dict, dict]:
    """(status, JSON content, headers) of an error answer: the request id added, in
    OpenAI's shape on the OpenAI routes."""
    body = {**body, "request_id": request_id(request)}
    headers = {**(headers or {}), **retry_advice(status, headers or {})}
    if is_openai_path(request.url.path):
        status = openai_status(status)
        body = openai_error(status, body)
    return status, {"error": body}, headers


def error_response(request: Request, status: int, body: dict, headers: Optional[dict] = None) -> JSONResponse:
    status, content, headers = error_answer(request, status, body, headers)
    return JSONResponse(content, status_code=status, headers=headers)


def answer_of(request: Request, exc: Exception) -> tuple[int, dict, dict]:
    """(status, JSON content, headers) of the answer to `exc`: what the handlers
    below send, and what a stream's `error` event carries once its 200 is sent."""
    if isinstance(exc, ApiError):
        return error_answer(request, exc.status, exc.body, exc.headers)
    if isinstance(exc, RequestValidationError):
        exc = errors.InvalidRequest.from_errors(exc.errors())
    if isinstance(exc, errors.ServeError):
        headers = None if exc.retry_after is None else {"Retry-After": str(exc.retry_after)}
        return error_answer(request, status_of(exc), exc.body, headers)
    if isinstance(exc, StarletteHTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers) if exc.headers else None
        return error_answer(request, exc.status_code, {"type": kind, "message": str(exc.detail)}, headers)
    # The detail may hold internals (paths, addresses): it goes to the log,
    # under the request id the client gets, not into the answer.
    logger.error("internal error (request_id=%s)", request_id(request), exc_info=exc)
    return error_answer(
        request,
        500,
        {"type": "internal", "message": "internal error; the server log has the details under this request_id"},
    )


def retry_advice(status: int, headers: dict) -> dict[str, str]:
    """x-should-retry, which the OpenAI SDKs obey over their own rules: a 504
    means the timeout in force expired, and the same request would again (it
    is not transient); a full queue (503 with Retry-After) is."""
    if status == 504:
        return {"x-should-retry": "false"}
    if status == 503 and "Retry-After" in headers:
        return {"x-should-retry": "true"}
    return {}


def install_error_handlers(app: FastAPI) -> None:
    async def _answer(request: Request, exc: Exception) -> JSONResponse:
        status, content, headers = answer_of(request, exc)
        return JSONResponse(content, status_code=status, headers=headers)

    for kind in (ApiError, errors.ServeError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, _answer)
