"""Response bodies of the models API, shared by the server and the SDK.

The jobs API's bodies (JobView, JobPage) live beside the job record in
longserve.server.jobs.record."""

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field


class Backlog(BaseModel):
    queued: int = 0
    running: int = 0


class ModelView(BaseModel):
    """`GET /v1/models/{model}`: the effective config and what is happening now."""

    model_config = ConfigDict(populate_by_name=True)

    name: str
    class_path: str = Field(alias="class")
    timeout_s: Optional[float] = None  # null: no timeout
    timeout_source: str
    auto_timeout: Optional[dict[str, Any]] = None
    max_timeout_s: Optional[float] = None
    batching: Optional[dict[str, Any]] = None
    max_ongoing_requests: int
    max_queued_requests: int
    num_replicas: Optional[int] = None
    autoscaling_config: Optional[dict[str, Any]] = None
    ray_actor_options: dict[str, Any] = Field(default_factory=dict)
    accepts_raw_body: bool
    job_timeout_s: Optional[float] = None
    max_concurrent_jobs: int
    jobs: Backlog
    latency: Optional[dict[str, Any]] = None  # windowed percentiles; null with monitoring off


class ModelList(BaseModel):
    models: list[ModelView]
