"""A model that does no work, so a benchmark measures only the serving path."""

from typing import Any

from pydantic import BaseModel

from longserve import Context, Model


class EchoInput(BaseModel):
    value: Any = None


class Echo(Model):
    Input = EchoInput

    def predict(self, inputs: EchoInput, ctx: Context) -> dict:
        return {"value": inputs.value}
