"""longserve's error body in OpenAI's shape:

    {"error": {"message", "type", "param", "code", ...longserve's own fields}}

`code` is longserve's error type (timeout, overloaded, ...); `type` is
OpenAI's category, which its SDKs and users branch on. longserve's fields
(timeout_s, timeout_source, stage, hint, request_id, ...) stay beside them.
"""

from typing import Any, Optional

# OpenAI's error categories by status; the rest are server errors.
TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def is_openai_path(path: str) -> bool:
    return "/openai/v1/" in path + "/"


def openai_status(status: int) -> int:
    """OpenAI answers bad input with 400, where longserve's native routes say 422."""
    return 400 if status == 422 else status


def openai_error(status: int, body: dict[str, Any]) -> dict[str, Any]:
    fields = {k: v for k, v in body.items() if k not in ("type", "message")}
    code = body.get("type")
    if status == 404 and "model" in fields:
        code = "model_not_found"
    return {
        "message": body.get("message", ""),
        "type": TYPES.get(status, "server_error"),
        "param": param_of(body),
        "code": code,
        **fields,
    }


def param_of(body: dict[str, Any]) -> Optional[str]:
    """The request field an error is about, when there is one."""
    if "param" in body:
        return body["param"]
    if "header" in body:
        return body["header"]
    details = body.get("details") or []
    if details and details[0].get("loc"):
        names = [str(part) for part in details[0]["loc"] if part not in ("body", "query", "header")]
        return ".".join(names) or None
    if body.get("type") == "not_found" and "model" in body:
        return "model"
    return None
