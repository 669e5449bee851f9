"""The app's configuration: the `args` of the application in serve_config.yaml.

Ray Serve validates the builder's `args` against `AppConfig` when the app is
built, so a bad value fails `serve run` before anything is deployed.
"""

import importlib
import time
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from longserve.model import Model
from longserve.server.devices import RUNTIMES
from longserve.server.seconds import parse_seconds

DEFAULT_TIMEOUT_S = 30.0
AUTO = "auto"
SECONDS_FORMS = "a positive number of seconds (e.g. 30 or 2.5), or false / -1 for no timeout"
TIMEOUT_FORMS = SECONDS_FORMS + ", or auto (derived from observed run times)"


def load_model_class(path: str) -> type[Model]:
    """The Model subclass at `path` ("pkg.module:Class")."""
    module_name, _, class_name = path.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise TypeError(f"{path} is not a longserve.Model subclass")
    if cls.runtime not in RUNTIMES:
        raise TypeError(f"{path}.runtime is {cls.runtime!r}; one of {', '.join(RUNTIMES)}")
    if cls.Options.model_config.get("extra") != "forbid":
        raise TypeError(f"{path}.Options must refuse unknown keys: declare it as `class Options(Model.Options)`")
    return cls


def parse_setting(value: Any, forms: str = SECONDS_FORMS) -> Optional[float]:
    """A timeout setting -> seconds, or None for "no timeout" (false or -1)."""
    if value is False or value == -1:
        return None
    try:
        if isinstance(value, str):  # YAML gives numbers: a quoted "30" is a mistake worth naming
            raise ValueError(value)
        return parse_seconds(value)
    except ValueError:
        raise ValueError(f"got {value!r}; expected {forms}") from None


def parse_timeout(value: Any) -> Union[float, str, None]:
    return AUTO if value == AUTO else parse_setting(value, TIMEOUT_FORMS)


# None means "no timeout". The default is kept by the field, not here.
Seconds = Annotated[Optional[float], BeforeValidator(parse_setting)]
Timeout = Annotated[Union[float, Literal["auto"], None], BeforeValidator(parse_timeout)]


class Strict(BaseModel):
    # A misspelt key (`timout:`) must fail loudly, not be ignored.
    model_config = ConfigDict(extra="forbid")


class Deployed(Strict):
    """A section that a detached actor follows (JobStore, Stats). Stamped when
    validated, which is once per deploy (replicas unpickle it as it was), so
    the actor keeps the newest stamp it is sent and an older replica still
    running during a rolling update cannot push its settings back."""

    _deployed_ns: int = PrivateAttr(default_factory=time.time_ns)

    @property
    def deployed_ns(self) -> int:
        return self._deployed_ns


class AutoTimeoutConfig(Strict):
    """`timeout: auto` = clamp(factor x observed percentile of run time, min, max);
    `fallback` until min_samples run times are known."""

    percentile: float = Field(99.0, gt=0, le=100)
    factor: float = Field(2.0, gt=0)
    min: float = Field(1.0, gt=0)
    max: float = Field(300.0, gt=0)
    min_samples: int = Field(20, ge=1)
    fallback: float = Field(DEFAULT_TIMEOUT_S, gt=0)

    @model_validator(mode="after")
    def _min_below_max(self) -> "AutoTimeoutConfig":
        if self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is above max ({self.max:g})")
        return self


class MonitoringConfig(Deployed):
    enabled: bool = True  # metrics, latency stats, auto timeouts, alerts
    # Latency percentiles (and auto timeouts) cover this many recent seconds.
    window_s: float = Field(300.0, gt=0)
    # A run is abnormal (WARNING + longserve_slow_total) past slow_factor x
    # the observed p99 run time, or past slow_threshold_s when that is set.
    slow_factor: float = Field(3.0, gt=1)
    slow_threshold_s: Optional[float] = Field(None, gt=0)
    slow_min_samples: int = Field(20, ge=1)
    # An alert fires when, over alert_window_s and at least alert_min_requests
    # sync requests, the timeout or server-error rate passes its threshold.
    alert_window_s: float = Field(60.0, gt=0)
    alert_min_requests: int = Field(20, ge=1)
    alert_timeout_rate: float = Field(0.2, gt=0, le=1)
    alert_error_rate: float = Field(0.2, gt=0, le=1)
    alert_webhook_url: Optional[str] = None
    alert_cooldown_s: float = Field(300.0, ge=0)


class BatchingConfig(Strict):
    max_batch_size: int = Field(16, ge=1)
    batch_wait_timeout_s: float = Field(0.01, ge=0)


class DeploymentOptions(Strict):
    """Ray Serve options of one deployment, passed through to `.options()`."""

    num_replicas: Optional[int] = Field(None, ge=0)
    autoscaling_config: Optional[dict[str, Any]] = None
    max_ongoing_requests: int = Field(4, ge=1)
    # -1 is Ray's "unbounded"; a bounded queue is what makes 503s possible.
    max_queued_requests: int = Field(64, ge=-1)
    ray_actor_options: dict[str, Any] = Field(default_factory=lambda: {"num_cpus": 0.5})

    def serve_options(self) -> dict[str, Any]:
        options = self.model_dump(include=set(DeploymentOptions.model_fields), exclude_none=True)
        if self.num_replicas is None and self.autoscaling_config is None:
            options["num_replicas"] = 1
        return options


class JobsConfig(Deployed):
    backend: Literal["sqlite", "redis", "memory"] = "sqlite"
    sqlite_path: str = "~/.cache/longserve/jobs.sqlite3"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # A runner renews its lease every lease_s / 3; a runner or replica that
    # dies stops renewing, and the job is queued again once the lease ends.
    lease_s: float = Field(30.0, gt=0)
    max_attempts: int = Field(3, ge=1)
    # Finished jobs (and their results) are kept this long, then expire.
    result_ttl_s: float = Field(86400.0, gt=0)
    # An expired job stays a tombstone this long (its result answers 410
    # `expired`), then it is deleted from memory and the backend and its id
    # answers 404: without this the store would grow with every job ever run.
    forget_after_s: float = Field(86400.0, gt=0)
    # Finished jobs the JobStore keeps in memory (least recently used go first); the others are
    # read from the backend when asked for. Queued and running jobs are always in memory.
    cache_finished: int = Field(10_000, ge=0)
    # Cap on `GET /v1/jobs/{id}?wait=N` and `Prefer: wait=N`.
    max_wait_s: float = Field(60.0, gt=0)
    # JobRunner replicas; each claims jobs for every model with free slots.
    runners: int = Field(1, ge=1)
    # A job's input (an upload, or what its input_url serves) is streamed into
    # the blob store up to this size; sync predict keeps max_body_mb.
    max_input_mb: float = Field(4096.0, gt=0)
    # A result larger than this is stored as a blob; the job then shows its size and link.
    inline_result_kb: float = Field(256.0, ge=0)
    # GET /v1/jobs/{id}/events sends a comment this often while nothing happens (proxies keep the stream open).
    events_keepalive_s: float = Field(15.0, gt=0)
    # A gateway replica answers polls of a finished job from its own copy for at most this
    # long (0: never); its own retry, cancel and erase show at once (server/http/job_cache.py).
    gateway_cache_s: float = Field(1.0, ge=0)
    # Filled in by AppConfig: the values the store's metrics give the tenant label.
    _tenant_labels: frozenset[str] = PrivateAttr(frozenset({"anonymous"}))


class ModelConfig(DeploymentOptions):
    # `class` is the import path of the user's Model subclass ("pkg.mod:Class").
    class_path: str = Field(alias="class")
    # An instance of the class's Options (checked against it here), passed to the model's constructor.
    options: Any = Field(default_factory=dict, validate_default=True)
    timeout: Timeout = DEFAULT_TIMEOUT_S
    batching: Optional[BatchingConfig] = None
    auto_timeout: Optional[AutoTimeoutConfig] = None  # when timeout is auto; default: the global one
    # Bounds one async job's run; jobs are not bound by `timeout`.
    job_timeout: Seconds = None
    # How many jobs of this model run at once (all runners together); the
    # rest of the model's capacity stays free for sync requests.
    max_concurrent_jobs: Optional[int] = Field(None, ge=1)
    # Where a sync request waits while the model is full: "gateway" (a FIFO in the
    # gateway that hands a freed slot straight on; server/http/admission.py) or
    # "router" (Ray Serve's router, which polls the full replica with backoffs up to
    # 0.5 s and collapses past saturation: docs/benchmarks.md).
    queue_in: Literal["gateway", "router"] = "gateway"
    # Filled in by AppConfig: where `timeout` came from, for the 504 body.
    _timeout_source: str = PrivateAttr("")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("class_path")
    @classmethod
    def _loadable(cls, path: str) -> str:
        try:
            load_model_class(path)
        except (ImportError, AttributeError, TypeError, ValueError) as exc:
            raise ValueError(f"cannot load {path!r}: {exc}") from None
        return path

    @field_validator("options")
    @classmethod
    def _typed_options(cls, value: Any, info: ValidationInfo) -> Model.Options:
        if "class_path" not in info.data:
            return value  # the class itself is wrong, and said so
        return load_model_class(info.data["class_path"]).Options.model_validate(value)

    @property
    def timeout_source(self) -> str:
        return self._timeout_source

    def job_slots(self) -> int:
        """Jobs of this model run at once: half its capacity unless set, at least 1."""
        if self.max_concurrent_jobs is not None:
            return self.max_concurrent_jobs
        replicas = self.num_replicas or (self.autoscaling_config or {}).get("max_replicas", 1) or 1
        return max(1, replicas * self.max_ongoing_requests // 2)


class GatewayConfig(Strict):
    num_replicas: int = Field(1, ge=1)
    # The gateway only awaits; it should never be the queue that fills first.
    max_ongoing_requests: int = Field(1000, ge=1)
    ray_actor_options: dict[str, Any] = Field(default_factory=lambda: {"num_cpus": 0.1})


class AuthConfig(Strict):
    """API keys, read from an environment variable (a Kubernetes Secret on a
    cluster), never from this file. No keys: the API is open (the local default)."""

    # Entries separated by spaces or newlines: `<key>[:<scope>,<scope>][@<tenant>]`;
    # scopes predict, jobs (the default pair), admin; no tenant: the key is its own.
    api_keys_env: str = "LONGSERVE_API_KEYS"
    # true: refuse to start without keys (the cluster config), so a missing
    # Secret cannot silently open the API.
    required: bool = False


class TenantConfig(Strict):
    """One tenant's quotas and share (`tenants.<name>`; `tenants.defaults` for every tenant
    not named). Unset: unlimited. Names are those of the API keys (docs/security.md)."""

    max_active_jobs: Optional[int] = Field(None, ge=1)  # queued + running jobs at once
    requests_per_s: Optional[float] = Field(None, gt=0)  # sustained API requests per second
    burst: Optional[int] = Field(None, ge=1)  # requests at once above the rate; default max(1, requests_per_s)
    max_input_mb: Optional[float] = Field(None, gt=0)  # largest request body (within max_body_mb)
    weight: float = Field(1.0, gt=0)  # share of job claims when tenants queue jobs for one model


class CallbacksConfig(Strict):
    """Job callbacks (webhooks): signed, retried, and never sent to internal addresses."""

    # The Standard Webhooks signing secret (`whsec_<base64>`), from the environment.
    secret_env: str = "LONGSERVE_WEBHOOK_SECRET"
    # true: refuse to start without a secret (the cluster config). Without one,
    # callbacks are sent unsigned.
    require_signing: bool = False
    max_attempts: int = Field(8, ge=1, le=50)
    backoff_s: float = Field(1.0, gt=0)  # first retry delay; doubles, with jitter
    max_backoff_s: float = Field(300.0, gt=0)
    timeout_s: float = Field(10.0, gt=0)  # per delivery attempt
    # Hosts and networks callbacks may reach although they are loopback,
    # private or link-local: "127.0.0.1", "10.0.0.0/8", "hooks.internal".
    allow: list[str] = Field(default_factory=list)


class BlobsConfig(Strict):
    """`blobs:` in serve_config.yaml: where job inputs and large results are stored."""

    backend: Literal["file", "s3"] = "file"
    # file: a directory on this machine (on a cluster, a volume every node mounts).
    path: str = "~/.cache/longserve/blobs"
    # s3: any S3-compatible store; credentials come from the environment
    # (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or the pod's role).
    bucket: Optional[str] = None
    prefix: str = "longserve"
    endpoint_url: Optional[str] = None
    region: Optional[str] = None
    # Results stored as blobs are answered with a 302 to a presigned URL (s3 only).
    presign_results: bool = False
    presign_expires_s: float = Field(300.0, gt=0)

    @model_validator(mode="after")
    def _bucket_for_s3(self) -> "BlobsConfig":
        if self.backend == "s3" and not self.bucket:
            raise ValueError("blobs.bucket is required with blobs.backend: s3")
        return self


class InputsConfig(Strict):
    """Job inputs fetched by URL (`?input_url=`): where they may come from, and how long it may take."""

    # Hosts and networks input URLs may reach although they are loopback, private
    # or link-local (the callbacks' SSRF rules): "127.0.0.1", "10.0.0.0/8", "files.internal".
    allow: list[str] = Field(default_factory=list)
    timeout_s: float = Field(60.0, gt=0)  # connecting, and between two reads of the body
    # Tries of one fetch: connection errors and 408/425/429/5xx answers are tried again.
    fetch_attempts: int = Field(3, ge=1, le=10)


# OpenAI model names an OpenAI client sends as is, mapped to the shipped models;
# an alias whose model is not served is dropped (unless set explicitly).
DEFAULT_OPENAI_ALIASES = {
    "whisper-1": "transcriber",
    "text-embedding-3-small": "embedder",
    "text-embedding-ada-002": "embedder",
}


class OpenAIConfig(Strict):
    """The OpenAI-compatible routes under /openai/v1 (docs/openai.md)."""

    enabled: bool = True
    # OpenAI model name -> the served model that answers for it.
    aliases: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_OPENAI_ALIASES))
    # Where uploaded files, batch records and batch outputs live: a `blobs:` config (file or s3).
    files: Any = Field(default_factory=dict, validate_default=True)

    @field_validator("files")
    @classmethod
    def _blobs_config(cls, value: Any) -> Any:
        return BlobsConfig.model_validate({"path": "~/.cache/longserve/openai", **(value or {})})


class AppConfig(Strict):
    timeout: Timeout = DEFAULT_TIMEOUT_S
    auto_timeout: AutoTimeoutConfig = Field(default_factory=AutoTimeoutConfig)
    # Upper bound on a client's `Request-Timeout` header; false / -1: no cap.
    max_timeout: Seconds = 600.0
    max_body_mb: float = Field(100.0, gt=0)
    # Deeper JSON bodies are refused (422) before they are parsed.
    max_json_depth: int = Field(32, ge=2, le=1000)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    callbacks: CallbacksConfig = Field(default_factory=CallbacksConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    blobs: BlobsConfig = Field(default_factory=BlobsConfig)
    inputs: InputsConfig = Field(default_factory=InputsConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    openai: OpenAIConfig = Field(default_factory=OpenAIConfig)
    # Per-tenant quotas and weights; the key `defaults` applies to every tenant not named.
    tenants: dict[str, TenantConfig] = Field(default_factory=dict)
    models: dict[str, ModelConfig]

    def tenant(self, name: str) -> tuple[TenantConfig, dict[str, str]]:
        """`name`'s settings (its own over `defaults`), and for each the config key that set it."""
        merged: dict[str, Any] = {}
        where: dict[str, str] = {}
        for source in ("defaults", name):
            entry = self.tenants.get(source)
            for field in entry.model_fields_set if entry else ():
                merged[field], where[field] = getattr(entry, field), f"tenants.{source}.{field}"
        return TenantConfig(**merged), where

    @model_validator(mode="after")
    def _openai_aliases(self) -> "AppConfig":
        aliases = self.openai.aliases
        if "aliases" not in self.openai.model_fields_set:  # the defaults: keep those of served models
            self.openai.aliases = {alias: name for alias, name in aliases.items() if name in self.models}
            return self
        for alias, name in aliases.items():
            if name not in self.models:
                raise ValueError(
                    f"openai.aliases.{alias}: no model named {name!r}; served models: {', '.join(sorted(self.models))}"
                )
            if alias in self.models:
                raise ValueError(f"openai.aliases.{alias}: already the name of a served model")
        return self

    @model_validator(mode="after")
    def _tenant_labels(self) -> "AppConfig":
        # Those named in `tenants:` and anonymous; any other tenant is "other" in metrics,
        # so a label's series stay bounded by the config, not by the keys.
        self.jobs._tenant_labels = frozenset(set(self.tenants) - {"defaults"} | {"anonymous"})
        return self

    @model_validator(mode="after")
    def _resolve_model_timeouts(self) -> "AppConfig":
        for name, model in self.models.items():
            if model.auto_timeout is None:
                model.auto_timeout = self.auto_timeout
            if "timeout" in model.model_fields_set:
                model._timeout_source = f"models.{name}.timeout in serve_config.yaml"
                continue
            model.timeout = self.timeout
            if "timeout" in self.model_fields_set:
                model._timeout_source = "timeout in serve_config.yaml"
            else:
                model._timeout_source = f"default ({DEFAULT_TIMEOUT_S:g} s)"
        return self
