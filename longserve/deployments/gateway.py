"""The HTTP ingress: validates requests, enforces the timeout in force, and
turns every failure into the one JSON error shape."""

import asyncio
import logging
import math
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from longserve.config import AppConfig
from longserve.deployments.model_server import INVALID, RESULT, STARTED, load_model_class
from longserve.errors import ApiError, install_error_handlers, request_id
from longserve.model import Model
from longserve.timeouts import HEADER as TIMEOUT_HEADER
from longserve.timeouts import TimeoutInForce, timeout_error, timeout_in_force

logger = logging.getLogger("ray.serve")

RETRY_AFTER_S = 1

app = FastAPI(
    title="longserve",
    description="Model serving with timeouts you control and understand.",
    version="0.1.0",
)
install_error_handlers(app)


# Defined before the class: @serve.ingress freezes the FastAPI app (routes
# and the globals they use) by pickling it at decoration time.
def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


@serve.deployment
@serve.ingress(app)
class Gateway:
    def __init__(self, config: AppConfig, models: dict[str, DeploymentHandle]):
        self.config = config
        self.handles = {name: handle.options(stream=True) for name, handle in models.items()}
        self.classes: dict[str, type[Model]] = {
            name: load_model_class(model.class_path) for name, model in config.models.items()
        }
        self.max_body_bytes = int(config.max_body_mb * 1024 * 1024)

    @app.post("/v1/models/{model}/predict")
    async def predict(self, model: str, request: Request) -> Any:
        # The clock starts when the request reaches us; reading the body counts.
        arrival = asyncio.get_running_loop().time()
        self._model_config(model)
        timeout = timeout_in_force(self.config, model, request.headers.get(TIMEOUT_HEADER))
        inputs = await self._read_input(model, request)
        remaining = None if timeout.seconds is None else timeout.seconds - (asyncio.get_running_loop().time() - arrival)
        return await self._call(model, inputs, timeout, remaining, request_id(request))

    @app.get("/v1/models")
    async def list_models(self) -> dict:
        return {"models": [self._describe(name) for name in self.config.models]}

    @app.get("/v1/models/{model}")
    async def get_model(self, model: str) -> dict:
        self._model_config(model)
        return self._describe(model)

    @app.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(self) -> Any:
        deployments = serve.status().applications[serve.get_replica_context().app_name].deployments
        states = {name: str(deployments[name].status.value) for name in self.config.models}
        ready = all(state in ("HEALTHY", "UPSCALING", "DOWNSCALING") for state in states.values())
        if not ready:
            raise ApiError(503, "not_ready", "models are still loading or unhealthy", models=states)
        return {"status": "ready", "models": states}

    # -- helpers --------------------------------------------------------------

    def _model_config(self, model: str):
        if model not in self.config.models:
            known = ", ".join(sorted(self.config.models))
            raise ApiError(404, "not_found", f"no model named '{model}'; served models: {known}", model=model)
        return self.config.models[model]

    def _describe(self, name: str) -> dict:
        model = self.config.models[name]
        return {
            "name": name,
            "class": model.class_path,
            "timeout_s": model.timeout,
            "timeout_source": model.timeout_source,
            "max_timeout_s": self.config.max_timeout,
            "batching": model.batching.model_dump() if model.batching else None,
            "max_ongoing_requests": model.max_ongoing_requests,
            "max_queued_requests": model.max_queued_requests,
            "num_replicas": model.num_replicas,
            "autoscaling_config": model.autoscaling_config,
            "ray_actor_options": model.ray_actor_options,
            "accepts_raw_body": self.classes[name].raw_body_field is not None,
        }

    async def _read_input(self, model: str, request: Request) -> BaseModel:
        cls = self.classes[model]
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        is_json = media_type == "application/json" or media_type.endswith("+json")
        if not is_json and cls.raw_body_field is None:
            raise ApiError(
                415,
                "unsupported_media_type",
                f"model '{model}' takes a JSON body (Content-Type: application/json); got '{media_type or 'none'}'",
            )
        body = await self._read_body(request)
        try:
            if is_json:
                return cls.Input.model_validate_json(body)
            if not body:
                raise ApiError(422, "invalid_request", f"empty body; model '{model}' expects {cls.raw_body_field} data")
            return cls.parse_raw(body, dict(request.query_params))
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False, include_input=False)) from None

    async def _read_body(self, request: Request) -> bytes:
        # Refuse before holding the body: by its declared length, else as it streams in.
        limit = self.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise self._too_large(int(declared))
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise self._too_large(size)
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, size: int) -> ApiError:
        return ApiError(
            413,
            "payload_too_large",
            f"body of {size} bytes (or more) is over the limit of {self.max_body_bytes} bytes "
            f"(max_body_mb={self.config.max_body_mb:g} in serve_config.yaml)",
            limit_bytes=self.max_body_bytes,
        )

    async def _call(
        self, model: str, inputs: BaseModel, timeout: TimeoutInForce, remaining: Optional[float], rid: str
    ) -> Any:
        response = self.handles[model].run.remote(inputs)
        stage, finished = "queued", False
        try:
            async with asyncio.timeout(None if remaining is None else max(remaining, 0)):
                async for kind, value in response:
                    if kind == STARTED:
                        stage = "running"
                    elif kind == RESULT:
                        finished = True
                        return value
                    elif kind == INVALID:
                        finished = True
                        raise ApiError(422, "invalid_input", value, model=model)
            raise ApiError(500, "internal", f"model '{model}' ended without a result", model=model)
        except TimeoutError:
            error = timeout_error(model, timeout, stage, self.config.max_timeout)
            logger.error(
                "timeout: model=%s timeout_s=%s timeout_source=%r stage=%s request_id=%s; %s",
                model, timeout.seconds, timeout.source, stage, rid, error.body["hint"],
            )
            raise error from None
        except BackPressureError as exc:
            finished = True
            raise self._overloaded(model, exc) from None
        except RayTaskError as exc:
            finished = True
            cause = exc.as_instanceof_cause()
            if isinstance(cause, BackPressureError):
                raise self._overloaded(model, cause) from None
            logger.error("model %s failed (request_id=%s): %s", model, rid, exc)
            raise ApiError(500, "model_error", f"model '{model}' failed: {_first_line(exc)}", model=model) from None
        except RayActorError as exc:
            raise ApiError(
                503, "unavailable", f"model '{model}' replica died: {_first_line(exc)}", {"Retry-After": "1"}, model=model
            ) from None
        finally:
            if not finished:
                response.cancel()

    def _overloaded(self, model: str, exc: BackPressureError) -> ApiError:
        retry_after = math.ceil(exc.retry_after_s) if exc.retry_after_s else RETRY_AFTER_S
        limits = self.config.models[model]
        return ApiError(
            503,
            "overloaded",
            f"model '{model}' is at capacity: {limits.max_ongoing_requests} running per replica and "
            f"{limits.max_queued_requests} queued (max_queued_requests in serve_config.yaml). "
            f"Retry after {retry_after} s, or submit the work as an async job.",
            {"Retry-After": str(retry_after)},
            model=model,
            retry_after_s=retry_after,
        )
