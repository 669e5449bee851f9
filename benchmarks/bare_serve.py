"""The baseline Ray Serve app: a FastAPI ingress that forwards the JSON body
to a model deployment and returns its answer. No timeouts, no validation,
no streaming, no jobs, no metrics: what longserve adds is what this lacks.
It serves the same model classes (their `predict_batch`)."""

from typing import Any, Optional

from fastapi import FastAPI, Request
from ray import serve
from ray.serve import Application

from longserve.server.model_server import load_model_class
from longserve.model import Context

app = FastAPI()


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
@serve.ingress(app)
class BareIngress:
    def __init__(self, model):
        self.model = model

    @app.post("/predict")
    async def predict(self, request: Request) -> Any:
        return await self.model.remote(await request.json())


@serve.deployment(ray_actor_options={"num_cpus": 0})
class BareModel:
    def __init__(self, class_path: str, batching: Optional[tuple[int, float]]):
        model_class = load_model_class(class_path)
        self.input = model_class.Input
        self.model = model_class()
        self.model.load("cpu")
        self.batching = batching is not None
        if batching:
            self._batched.set_max_batch_size(batching[0])
            self._batched.set_batch_wait_timeout_s(batching[1])

    async def __call__(self, body: dict) -> Any:
        inputs = self.input.model_validate(body)
        if self.batching:
            return await self._batched(inputs)
        return self.model.predict(inputs, Context())

    @serve.batch
    async def _batched(self, batch: list) -> list:
        return self.model.predict_batch(batch)


def bare_app(
    class_path: str, batching: Optional[tuple[int, float]] = None, max_ongoing_requests: int = 32
) -> Application:
    model = BareModel.options(max_ongoing_requests=max_ongoing_requests).bind(class_path, batching)
    return BareIngress.bind(model)
