"""The README's 504 example is what the code produces."""

import json
import re
from pathlib import Path

from longserve.server.timeouts import TimeoutInForce, timeout_error

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_504_body_matches_the_code():
    sample = re.search(r'```json\n(\{"error": \{\n  "type": "timeout".*?)\n```', README.read_text(), re.S).group(1)
    documented = json.loads(sample)["error"]
    source = "models.transcriber.timeout in serve_config.yaml"
    produced = timeout_error("transcriber", TimeoutInForce(30.0, source), "running", 600.0).body
    documented.pop("request_id")
    assert documented == produced
