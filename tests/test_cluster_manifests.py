"""The KubeRay manifests in cluster/, checked offline (no cluster, no Ray started).

- every manifest parses; the RayService is ray.io/v1 with the pieces a GPU
  cluster needs (GPU worker group, toleration, in-tree autoscaling, GCS fault
  tolerance on Redis, secrets from the `longserve-secrets` Secret);
- its serveConfigV2 validates with Ray's own ServeDeploySchema, each app's
  `args` with longserve's AppConfig, and every import path resolves: the app
  builder, each model class, the autoscaling policy (Ray serializes it, as it
  does when the config is deployed);
- no drift: serveConfigV2 and serve_config.yaml are two files (operators edit
  each in place), and they must agree on everything but placement settings
  and the security posture (auth.required, callbacks.require_signing).
"""

import copy
import importlib
import re
from pathlib import Path

import pytest
import ray
import yaml
from ray.serve.config import AutoscalingConfig
from ray.serve.schema import ServeDeploySchema

from longserve.server.check import IMPORT_PATH
from longserve.server.autoscaling import POLICY_PATH, model_serve_options
from longserve.server.config import AppConfig
from longserve.server.model_server import load_model_class

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "cluster"
RAYSERVICE = CLUSTER / "rayservice.yaml"
SECRET = "longserve-secrets"
SECRET_ENV = {
    "LONGSERVE_REDIS_PASSWORD",
    "LONGSERVE_API_KEYS",
    "LONGSERVE_WEBHOOK_SECRET",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}

# What a cluster may set differently from the local serve_config.yaml: where
# things run and how many of them. Everything else (timeouts, limits,
# batching, model options, monitoring, job semantics) must be the same.
PLACEMENT_MODEL_KEYS = {"ray_actor_options", "num_replicas", "autoscaling_config", "max_concurrent_jobs"}
PLACEMENT_GATEWAY_KEYS = {"num_replicas", "ray_actor_options"}
PLACEMENT_JOBS_KEYS = {"backend", "sqlite_path", "redis_url", "runners"}
PLACEMENT_SERVE_KEYS = {"proxy_location"}
PLACEMENT_SECTIONS = {"blobs"}  # where the bytes are: a local directory, on a cluster a bucket
PLACEMENT_HTTP_KEYS = {"host"}
# Locally off, on the cluster on: fail the deploy without keys or a webhook secret.
POSTURE_KEYS = {"auth": "required", "callbacks": "require_signing"}


def manifests() -> list[Path]:
    return sorted(p for p in CLUSTER.rglob("*") if p.suffix in (".yaml", ".yml"))


def rayservice() -> dict:
    return yaml.safe_load(RAYSERVICE.read_text())


def serve_config_v2() -> dict:
    text = rayservice()["spec"]["serveConfigV2"]
    assert isinstance(text, str), "ray.io/v1 serveConfigV2 is a YAML string"
    return yaml.safe_load(text)


def local_config() -> dict:
    return yaml.safe_load((ROOT / "serve_config.yaml").read_text())


def longserve_apps(config: dict) -> list[dict]:
    return [a for a in config["applications"] if a["import_path"] == IMPORT_PATH]


def pod_templates(spec: dict) -> list[tuple[str, dict]]:
    cluster = spec["rayClusterConfig"]
    groups = [("head", cluster["headGroupSpec"])] + [(g["groupName"], g) for g in cluster["workerGroupSpecs"]]
    return [(name, group["template"]["spec"]) for name, group in groups]


@pytest.mark.parametrize("path", manifests(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_manifest_parses(path):
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents
    for doc in documents:
        if "kind" in doc:  # Kubernetes objects (the rules file has kind too)
            assert doc.get("apiVersion") and doc.get("metadata", {}).get("name"), path


def test_rayservice_serve_config_validates_with_ray_and_longserve():
    assert {"apiVersion": "ray.io/v1", "kind": "RayService"}.items() <= rayservice().items()
    schema = ServeDeploySchema.model_validate(serve_config_v2())
    assert schema.http_options.request_timeout_s is None  # Ray's bare 408 never fires first
    apps = [a for a in schema.applications if a.import_path == IMPORT_PATH]
    assert len(apps) == 1
    config = AppConfig.model_validate(apps[0].args)
    assert config.jobs.backend == "redis"
    assert config.models


def test_every_import_path_resolves():
    module, _, attr = IMPORT_PATH.partition(":")
    build_app = getattr(importlib.import_module(module), attr)
    for app in longserve_apps(serve_config_v2()):
        config = AppConfig.model_validate(app["args"])
        for name, model in config.models.items():
            load_model_class(model.class_path)  # a longserve.Model subclass
            options = model_serve_options(name, model, config.jobs)
            if model.autoscaling_config is not None:
                # Ray imports and cloudpickles the policy, as `serve deploy` does.
                autoscaling = AutoscalingConfig(**options["autoscaling_config"])
                assert autoscaling.policy.policy_function == POLICY_PATH
                assert callable(autoscaling.policy.get_policy())
        build_app(config)  # builds the application graph (no cluster needed)


def test_models_are_gpu_pinned_and_autoscale_within_the_gpu_group():
    spec = rayservice()["spec"]
    gpu_groups = [
        g
        for g in spec["rayClusterConfig"]["workerGroupSpecs"]
        if any("nvidia.com/gpu" in c["resources"]["limits"] for c in g["template"]["spec"]["containers"])
    ]
    assert len(gpu_groups) == 1
    group = gpu_groups[0]
    gpus = sum(int(c["resources"]["limits"]["nvidia.com/gpu"]) for c in group["template"]["spec"]["containers"])
    tolerations = group["template"]["spec"]["tolerations"]
    assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in tolerations)
    config = AppConfig.model_validate(longserve_apps(serve_config_v2())[0]["args"])
    total_max = 0
    for name, model in config.models.items():
        assert model.ray_actor_options.get("num_gpus") == 1, name
        auto = model.autoscaling_config
        assert auto is not None and model.num_replicas is None, f"{name}: autoscaling, not fixed replicas"
        assert 0 <= auto["min_replicas"] <= auto["max_replicas"]
        assert auto["target_ongoing_requests"] <= model.max_ongoing_requests, name
        total_max += auto["max_replicas"]
    # Every model at max_replicas fits in the GPU group at maxReplicas.
    assert total_max <= group["maxReplicas"] * gpus
    # Scale-from-zero somewhere: queued jobs bring that model back.
    assert any(m.autoscaling_config["min_replicas"] == 0 for m in config.models.values())
    # The gateway stays on CPU.
    assert not config.gateway.ray_actor_options.get("num_gpus")


def test_cluster_autoscaling_gcs_ft_and_secrets():
    spec = rayservice()["spec"]
    cluster = spec["rayClusterConfig"]
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["enableInTreeAutoscaling"] is True and cluster["autoscalerOptions"]
    # Ray token auth (KubeRay >= 1.5.1 generates the token Secret): no open dashboard or GCS.
    assert cluster["authOptions"] == {"mode": "token"}
    ft = cluster["gcsFaultToleranceOptions"]
    assert ft["redisAddress"] == "redis:6379"
    assert ft["redisPassword"]["valueFrom"]["secretKeyRef"]["name"] == SECRET
    # The job store uses the same Redis, with no password written in the repo.
    jobs = AppConfig.model_validate(longserve_apps(serve_config_v2())[0]["args"]).jobs
    assert jobs.redis_url.startswith("redis://redis:6379/") and "@" not in jobs.redis_url
    # Job inputs and results in a bucket every pod reaches, never on the head node's disk;
    # the credentials come from the Secret (SECRET_ENV below), none is in the config.
    blobs = AppConfig.model_validate(longserve_apps(serve_config_v2())[0]["args"]).blobs
    assert blobs.backend == "s3" and blobs.bucket
    images = set()
    for name, template in pod_templates(spec):
        for container in template["containers"]:
            images.add(container["image"])
            env = {e["name"]: e for e in container.get("env", [])}
            assert SECRET_ENV <= env.keys(), name
            for var in SECRET_ENV:
                assert env[var]["valueFrom"]["secretKeyRef"]["name"] == SECRET, (name, var)
    assert len(images) == 1  # one image everywhere: the Dockerfile's


def test_redis_syncs_every_write_before_answering():
    # An acknowledged job must survive a Redis crash: appendfsync always, not everysec.
    deployment = next(
        d for d in yaml.safe_load_all((CLUSTER / "redis.yaml").read_text()) if d and d.get("kind") == "Deployment"
    )
    command = " ".join(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "--appendonly yes" in command and "--appendfsync always" in command


def test_dockerfile_uses_the_ray_gpu_image_of_the_pinned_ray():
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+(\S+)", dockerfile, re.M).group(1)
    assert base == f"rayproject/ray:{ray.__version__}-py311-gpu"
    assert "pip install" in dockerfile and "longserve" in dockerfile


def test_dockerfile_builds_as_ray_with_the_tested_torch():
    dockerfile = (ROOT / "Dockerfile").read_text()
    # The base image runs as `ray`: the source dir must be ray's before `pip install .`
    # writes build/ there (WORKDIR alone creates it owned by root on some builders).
    workdir = re.search(r"^WORKDIR\s+(\S+)", dockerfile, re.M)
    assert re.search(rf"^RUN mkdir -p {re.escape(workdir.group(1))}$", dockerfile[: workdir.start()], re.M)
    assert not re.search(r"^USER\s+root", dockerfile, re.M)
    # The torch the tests run (Makefile's TORCH), held while longserve's dependencies install.
    tested = re.search(r"^TORCH \?= torch==(\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert re.search(rf"^ARG TORCH={re.escape(tested)}$", dockerfile, re.M)
    assert (
        '"torch==${TORCH}"' in dockerfile
        and "pip install --no-cache-dir -c /tmp/torch-constraint.txt '.[server]'" in dockerfile
    )


def _literal_secrets(node, where=""):
    """(path, value) of every secret-looking key or env var given a literal value."""
    secretish = re.compile(r"(?i)password|secret|api_?keys?|token")
    if isinstance(node, dict):
        if "name" in node and "value" in node and secretish.search(str(node["name"])):
            yield f"{where}/env {node['name']}", node["value"]
        for key, value in node.items():
            if secretish.search(str(key)) and key != "secretKeyRef" and isinstance(value, (str, int)):
                yield f"{where}/{key}", value
            yield from _literal_secrets(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _literal_secrets(item, f"{where}[{i}]")


def test_no_secret_values_in_manifests():
    for path in manifests():
        for doc in yaml.safe_load_all(path.read_text()):
            assert list(_literal_secrets(doc)) == [], path
    # The embedded Serve config names no secret either (redis_url has no password).
    assert list(_literal_secrets(serve_config_v2())) == []


def _without_placement(config: dict) -> dict:
    config = copy.deepcopy(config)
    for key in PLACEMENT_SERVE_KEYS:
        config.pop(key, None)
    for key in PLACEMENT_HTTP_KEYS:
        config.get("http_options", {}).pop(key, None)
    apps = []
    for app in config.pop("applications"):
        args = AppConfig.model_validate(app.pop("args")).model_dump(by_alias=True)
        for key in PLACEMENT_GATEWAY_KEYS:
            args["gateway"].pop(key)
        for key in PLACEMENT_JOBS_KEYS:
            args["jobs"].pop(key)
        for key in PLACEMENT_SECTIONS:
            args.pop(key)
        for section, key in POSTURE_KEYS.items():
            args[section].pop(key)
        for model in args["models"].values():
            for key in PLACEMENT_MODEL_KEYS:
                model.pop(key)
        apps.append({**app, "args": args})
    return {**config, "applications": apps}


def test_rayservice_and_serve_config_agree_but_for_placement():
    cluster, local = _without_placement(serve_config_v2()), _without_placement(local_config())
    assert cluster == local


def test_the_cluster_requires_api_keys_and_signed_callbacks():
    for app in longserve_apps(serve_config_v2()):
        args = AppConfig.model_validate(app["args"])
        assert args.auth.required and args.callbacks.require_signing


def test_the_drift_check_catches_a_changed_timeout():
    changed = serve_config_v2()
    longserve_apps(changed)[0]["args"]["models"]["transcriber"]["timeout"] = 121
    assert _without_placement(changed) != _without_placement(local_config())
