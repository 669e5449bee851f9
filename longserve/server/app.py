"""The application that `serve run serve_config.yaml` builds.

    import_path: longserve.server.app:build_app

Ray Serve validates the config's `args` against AppConfig before calling us,
so a bad timeout fails `serve run` with the field, the value and the forms.
"""

from typing import cast

from ray.serve import Application, Deployment

from longserve.server.autoscaling import model_serve_options
from longserve.server.config import AppConfig
from longserve.server.http.gateway import Gateway
from longserve.server.jobs.job_io import JobIOSettings
from longserve.server.jobs.runner import JobRunner
from longserve.server.model_server import ModelServer

# Ray's @serve.deployment is untyped (it returns a Deployment; mypy sees the class).
MODEL, RUNNER, GATEWAY = (cast(Deployment, d) for d in (ModelServer, JobRunner, Gateway))


def build_app(args: AppConfig) -> Application:
    models = {
        name: MODEL.options(name=name, **model_serve_options(name, model, args.jobs)).bind(
            name, model, JobIOSettings.of(args)
        )
        for name, model in args.models.items()
    }
    runner = RUNNER.options(num_replicas=args.jobs.runners, ray_actor_options={"num_cpus": 0}).bind(args, models)
    return GATEWAY.options(**args.gateway.model_dump()).bind(args, models, runner)
