"""Check a Serve config file before anything starts:

    python -m longserve.server.check serve_config.yaml

`serve run` reports a bad `args` value only in the controller's log and keeps
running; this exits 1 at once with the field, the value and the accepted
forms. It also refuses an `http_options.request_timeout_s` that could answer
Ray's bare 408 before longserve's explained 504.
"""

import sys
from pathlib import Path
from typing import Optional

import yaml
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from longserve.server.config import AUTO, AppConfig, ModelConfig

IMPORT_PATH = "longserve.server.app:build_app"


def check(path: str) -> tuple[list[str], list[AppConfig]]:
    """Errors (empty when the file is good) and the longserve app configs."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        return [f"{path}: cannot read: {exc}"], []
    try:
        schema = ServeDeploySchema.model_validate(raw)
    except ValidationError as exc:
        return [f"{path}: not a valid Ray Serve config:\n{exc}"], []

    errors, apps = [], []
    for app in schema.applications:
        if app.import_path != IMPORT_PATH:
            continue
        try:
            apps.append(AppConfig.model_validate(app.args or {}))
        except ValidationError as exc:
            errors.append(f"{path}: application '{app.name}' args:\n{_readable(exc)}")

    ray_timeout = schema.http_options.request_timeout_s if schema.http_options else None
    if ray_timeout is not None:
        for config in apps:
            longest = _longest_timeout(config)
            if longest is None or ray_timeout <= longest:
                errors.append(
                    f"{path}: http_options.request_timeout_s={ray_timeout:g} would answer a bare 408 before "
                    f"longserve's timeout ({'none' if longest is None else f'{longest:g} s'}) explains itself "
                    "with a 504. Remove it, or set it above max_timeout and every model's timeout."
                )
    if not apps and not errors:
        errors.append(f"{path}: no application imports {IMPORT_PATH}")
    return errors, apps


def _longest_timeout(config: AppConfig) -> Optional[float]:
    """The longest a request may run, or None when one may run forever."""
    limits = [config.max_timeout] + [_longest_run(model) for model in config.models.values()]
    return None if any(limit is None for limit in limits) else max(limit for limit in limits if limit is not None)


def _longest_run(model: ModelConfig) -> Optional[float]:
    if isinstance(model.timeout, str):  # auto: at most its max
        return model.auto_timeout.max if model.auto_timeout is not None else None
    return model.timeout


def _readable(exc: ValidationError) -> str:
    return "\n".join(f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else "serve_config.yaml"
    errors, apps = check(path)
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    for config in apps:
        timeouts = ", ".join(
            f"{name} {'none' if m.timeout is None else m.timeout if m.timeout == AUTO else f'{m.timeout:g} s'}"
            for name, m in config.models.items()
        )
        print(f"{path}: OK; timeouts: {timeouts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
