"""A test-only model for job inputs and results at size: it reports the size
and sha256 of its raw input, whether it got the input as a file, and pads
its result on request (to make a result large enough to be stored as a blob)."""

import hashlib
import time
from pathlib import Path
from typing import Union

from pydantic import BaseModel

from longserve import Context, Model


class DigestInput(BaseModel):
    data: Union[bytes, Path]
    pad: int = 0  # characters of padding in the result
    hold: float = 0  # seconds to run (checking for cancellation) before reading


class Digest(Model):
    Input = DigestInput
    raw_body_field = "data"

    @classmethod
    def parse_file(cls, path: Path, params: dict[str, str]) -> DigestInput:
        return DigestInput.model_validate({**params, "data": path})

    def predict(self, inputs: DigestInput, ctx: Context) -> dict:
        deadline = time.monotonic() + inputs.hold
        while time.monotonic() < deadline:
            ctx.check_cancelled()
            time.sleep(0.02)
        digest, size = hashlib.sha256(), 0
        if isinstance(inputs.data, Path):
            with inputs.data.open("rb") as f:
                while chunk := f.read(1024 * 1024):
                    digest.update(chunk)
                    size += len(chunk)
        else:
            digest.update(inputs.data)
            size = len(inputs.data)
        return {
            "size": size,
            "sha256": digest.hexdigest(),
            "via_file": isinstance(inputs.data, Path),
            "pad": "x" * inputs.pad,
        }
