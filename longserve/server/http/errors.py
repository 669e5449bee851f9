"""One JSON shape for every error the API returns:

    {"error": {"type": "...", "message": "...", "request_id": "...", ...}}
"""

import logging
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("ray.serve")


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")  # plus fields such as timeout_s, stage, hint, job_id

    type: str
    message: str
    request_id: str


class ErrorBody(BaseModel):
    error: ErrorDetail


# Every route documents this shape for its 4xx and 5xx answers.
ERROR_RESPONSES = {"4XX": {"model": ErrorBody, "description": "Client error"},
                   "5XX": {"model": ErrorBody, "description": "Server error (504: the timeout in force expired)"}}


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


def first_line(exc: BaseException) -> str:
    """The line of an exception worth showing a client (a RayTaskError's last)."""
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def request_id(request: Request) -> str:
    # Ray Serve's proxy puts the client's X-Request-ID (or a new one) on every
    # request and echoes it on the response.
    return request.headers.get("x-request-id", "")


def error_response(request: Request, status: int, body: dict, headers: Optional[dict] = None) -> JSONResponse:
    body = {**body, "request_id": request_id(request)}
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc.status, exc.body, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return error_response(request, 422, {"type": "invalid_request", "message": message, "details": errors})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(request, exc.status_code, {"type": kind, "message": str(exc.detail)}, exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The detail may hold internals (paths, addresses): it goes to the log,
        # under the request id the client gets, not into the answer.
        logger.error("internal error (request_id=%s)", request_id(request), exc_info=exc)
        return error_response(request, 500, {"type": "internal", "message": (
            "internal error; the server log has the details under this request_id")})
