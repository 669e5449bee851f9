"""The docs say what the code does: the README's 504 example is what the code
produces, every config key is documented, every link resolves, and
docs/reliability.md is the render of its figures.

(Other pages are pinned where their content is used: tests/test_walkthrough.py
runs docs/podcast.md, tests/test_cli.py reads the exit codes in docs/client.md,
tests/webhooks.py verifies every test callback with the snippet in docs/callbacks.md.)"""

import importlib.util
import json
import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from longserve.server.config import AppConfig
from longserve.server.timeouts import TimeoutInForce, timeout_error

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_BYTES = 12_000


def test_readme_504_body_matches_the_code():
    sample = re.search(r'```json\n(\{"error": \{\n  "type": "timeout".*?)\n```', README.read_text(), re.S).group(1)
    documented = json.loads(sample)["error"]
    source = "models.transcriber.timeout in serve_config.yaml"
    produced = timeout_error("transcriber", TimeoutInForce(30.0, source), "running", 600.0).body
    documented.pop("request_id")
    assert documented == produced


def test_readme_stays_the_front_door():
    """Topics go to docs/; the README only introduces them."""
    assert len(README.read_bytes()) <= README_MAX_BYTES


def config_keys(model: type[BaseModel], prefix: str = "", seen: typing.Optional[set] = None) -> list[str]:
    """Every setting of a config model, dotted (`jobs.lease_s`, `models.<name>.batching.max_batch_size`):
    the leaves, and a nested model met again (`models.<name>.auto_timeout`, documented as "same keys")."""
    seen = set() if seen is None else seen
    keys = []
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        annotation = field.annotation
        args = typing.get_args(annotation)
        nested = [a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)]
        if typing.get_origin(annotation) is dict and nested:
            key += ".<name>"  # `models`: a model's name, then its settings
        if not nested or nested[0] in seen:
            keys.append(key)
        else:
            seen.add(nested[0])
            keys += config_keys(nested[0], key + ".", seen)
    return keys


def test_every_config_key_is_documented():
    page = (DOCS / "configuration.md").read_text()
    keys = config_keys(AppConfig)
    assert "jobs.lease_s" in keys and "models.<name>.batching.max_batch_size" in keys  # the walk reaches nested models
    missing = [key for key in keys if f"`{key}`" not in page]
    assert not missing, f"docs/configuration.md does not document {missing}"


PAGES = [README, *sorted(DOCS.glob("*.md"))]


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {
        re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        for title in re.findall(r"^#+ (.+)$", text, re.M)
    }


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", text):
        if "://" in target or target.endswith("testing.md"):  # docs/testing.md is written alongside
            continue
        linked = (page.parent / target) if target else page
        assert linked.exists(), f"{page.name}: link to {target} does not resolve"
        if anchor:
            assert anchor in anchors(linked), f"{page.name}: no heading for {target}#{anchor}"


def test_reliability_page_is_the_render_of_its_figures():
    spec = importlib.util.spec_from_file_location("reliability_report", ROOT / "scripts" / "reliability_report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    rendered = report.render(report.read(DOCS / "reliability-figures.jsonl"))
    assert (DOCS / "reliability.md").read_text() == rendered, (
        "docs/reliability.md is not the render of docs/reliability-figures.jsonl: run scripts/reliability_report.py"
    )
