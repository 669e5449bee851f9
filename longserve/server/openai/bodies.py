"""Request bodies of the OpenAI facade, as OpenAI defines them."""

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field


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
    completion_window: Literal["24h"]
    metadata: Optional[dict[str, str]] = None
