"""Request bodies of the OpenAI facade, as OpenAI defines them."""

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Strict(BaseModel):
    # An option longserve cannot honour is refused by name, not silently dropped.
    model_config = ConfigDict(extra="forbid")


class EmbeddingsRequest(Strict):
    input: Union[str, list[str], list[int], list[list[int]]]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[int] = Field(None, ge=1)
    user: Optional[str] = None  # accepted, unused

    def texts(self) -> Optional[list[str]]:
        """The input as texts; None for token arrays, which longserve does not take."""
        texts: list = [self.input] if isinstance(self.input, str) else self.input
        return texts if all(isinstance(text, str) for text in texts) else None


class BatchLine(Strict):
    """One line of a batch's input file."""

    custom_id: str = Field(min_length=1, max_length=512)
    method: Literal["POST"]
    url: Literal["/v1/embeddings"]
    body: EmbeddingsRequest


class BatchRequest(Strict):
    input_file_id: str
    endpoint: Literal["/v1/embeddings"]
    # OpenAI's "24h", or a shorter window in s, m or h (a longserve extension): "90s", "30m", "2h".
    completion_window: str = Field(pattern=r"^[1-9][0-9]{0,5}[smh]$")
    metadata: Optional[dict[str, str]] = None

    @field_validator("completion_window")
    @classmethod
    def _at_most_a_day(cls, value: str) -> str:
        if window_s(value) > 24 * 3600:
            raise ValueError("at most 24h")
        return value


def window_s(window: str) -> int:
    """Seconds of a completion_window such as "24h", "30m", "90s"."""
    return int(window[:-1]) * {"s": 1, "m": 60, "h": 3600}[window[-1]]
