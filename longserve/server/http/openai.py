"""The OpenAI-compatible routes under /openai/v1, on the gateway itself: the
same models, timeouts (the SDKs' own deadline included), limits and keys as
the native /v1 routes; answers and errors in OpenAI's shapes (docs/openai.md).

`OpenAIRoutes` is a mixin of the Gateway deployment: its methods use the
gateway's state (config, auth, the sync call path), and Ray Serve binds
them like the gateway's own routes.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from email import policy
from email.parser import BytesParser
from typing import TYPE_CHECKING, Any, Literal, Optional, Union

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.sse import ServerSentEvent
from pydantic import BaseModel, Field, ValidationError

from longserve.model import Model
from longserve.models.embedder import EmbedInput
from longserve.models.transcriber import TranscribeInput
from longserve.server.config import AppConfig
from longserve.server.errors import InvalidRequest
from longserve.server.http.auth import Auth, Caller
from longserve.server.http.errors import ApiError, answer_of
from longserve.server.http.streams import ERROR, PARTIAL, PING, CallStream, OnPartial, Output, event_stream
from longserve.server.inputs import InputParser
from longserve.server.openai import formats
from longserve.server.openai.bodies import EmbeddingsRequest, Strict

PREFIX = "/openai/v1"
router = APIRouter(prefix=PREFIX, tags=["openai"])
# Which models serve which OpenAI endpoint: those whose Input is (or extends) the shipped model's.
KINDS = {"embeddings": EmbedInput, "audio": TranscribeInput}


class AudioRequest(Strict):
    model: str
    language: Optional[str] = None
    prompt: Optional[str] = None
    response_format: formats.ResponseFormat = "json"
    temperature: Optional[float] = Field(None, ge=0, le=1)
    timestamp_granularities: list[Literal["segment", "word"]] = Field([], alias="timestamp_granularities[]")
    stream: bool = False


class GatewayParts:
    """What the OpenAI mixins use of the Gateway, declared for type checkers."""

    if TYPE_CHECKING:
        config: AppConfig
        auth: Auth
        parser: InputParser
        store: Any  # the JobStore actor
        classes: dict[str, type[Model]]

        async def _caller(self, request: Request, scope: str) -> Caller: ...

        async def _read_body(self, request: Request, caller: Caller) -> bytes: ...

        async def _sync(
            self,
            model: str,
            request: Request,
            arrival: float,
            read: Callable[[], Awaitable[BaseModel]],
            caller: Caller = ...,
            on_partial: Optional[OnPartial] = ...,
        ) -> Any: ...

        def _openai_model(self, name: str, kind: Optional[str] = None) -> str: ...  # OpenAIRoutes'


class OpenAIRoutes(GatewayParts):
    @router.get("/models")
    async def openai_models(self, request: Request) -> dict:
        await self._openai_caller(request)
        return {"object": "list", "data": [model_card(name) for name in self._openai_names()]}

    @router.get("/models/{model:path}")
    async def openai_model(self, model: str, request: Request) -> dict:
        await self._openai_caller(request)
        self._openai_model(model)
        return model_card(model)

    @router.post("/embeddings")
    async def openai_embeddings(self, request: Request) -> Any:
        arrival = asyncio.get_running_loop().time()
        caller = await self._openai_caller(request)
        body = parse_body(EmbeddingsRequest, await self._read_body(request, caller))
        model = self._openai_model(body.model, "embeddings")
        texts = body.texts()
        if texts is None:
            raise ApiError(400, "invalid_request", "token arrays are not supported: send the text", param="input")

        async def read() -> BaseModel:
            return self.parser.parse(model, "application/json", json.dumps({"texts": texts}).encode(), {})

        result = await self._sync(model, request, arrival, read, caller)
        if body.dimensions is not None and body.dimensions != result["dim"]:
            raise ApiError(
                400,
                "unsupported_option",
                f"model '{body.model}' makes {result['dim']}-dimensional vectors and cannot shorten "
                f"them; omit dimensions or send {result['dim']}",
                param="dimensions",
            )
        return formats.embedding_list(result, body.model, body.encoding_format)

    @router.post("/audio/transcriptions")
    async def openai_transcriptions(self, request: Request) -> Any:
        return await self._openai_audio(request, "transcribe")

    @router.post("/audio/translations")
    async def openai_translations(self, request: Request) -> Any:
        return await self._openai_audio(request, "translate")

    # -- helpers --------------------------------------------------------------

    async def _openai_audio(self, request: Request, task: str) -> Any:
        arrival = asyncio.get_running_loop().time()
        caller = await self._openai_caller(request)
        fields, (_, audio) = parse_form(request.headers.get("content-type", ""), await self._read_body(request, caller))
        if task == "translate" and "language" in fields:
            raise ApiError(
                400, "unsupported_option", "translations take no language: the output is English", param="language"
            )
        options = parse_body(AudioRequest, fields)
        model = self._openai_model(options.model, "audio")
        check_audio_options(options)
        words = "word" in options.timestamp_granularities
        params = {
            "task": task,
            "language": options.language,
            "prompt": options.prompt,
            "temperature": options.temperature,
            "word_timestamps": words,
            "segment_details": options.response_format == "verbose_json",
        }
        # As the native route's query parameters: the model's Input checks them again.
        params = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items() if v is not None}

        async def read() -> BaseModel:
            return self.parser.parse(model, "application/octet-stream", audio, params)

        if options.stream:  # one delta per segment the model emits (server/http/streams.py)
            stream = CallStream(lambda on_partial: self._sync(model, request, arrival, read, caller, on_partial))
            first = await stream.first()
            return event_stream(transcript_events(request, stream.outputs(first)))
        result = await self._sync(model, request, arrival, read, caller)
        answer = formats.transcription(result, options.response_format, task, set(options.timestamp_granularities))
        if isinstance(answer, str):
            return PlainTextResponse(answer, media_type=formats.MEDIA_TYPES[options.response_format])
        return JSONResponse(answer)

    async def _openai_caller(self, request: Request) -> Caller:
        if not self.config.openai.enabled:
            raise ApiError(404, "not_found", "the OpenAI-compatible API is off (openai.enabled in serve_config.yaml)")
        return await self._caller(request, "predict")

    def _openai_names(self) -> list[str]:
        return [*self.config.models, *self.config.openai.aliases]

    def _openai_model(self, name: str, kind: Optional[str] = None) -> str:
        """The served model that answers for `name` (a model's name or an alias)."""
        model = self.config.openai.aliases.get(name, name)
        if model not in self.config.models:
            raise ApiError(
                404,
                "not_found",
                f"no model named '{name}'; served models: {', '.join(self._openai_names())}",
                model=name,
                param="model",
            )
        if kind is not None and not issubclass(self.classes[model].Input, KINDS[kind]):
            able = [
                n
                for n in self._openai_names()
                if issubclass(self.classes[self.config.openai.aliases.get(n, n)].Input, KINDS[kind])
            ]
            raise ApiError(
                400,
                "unsupported_model",
                f"model '{name}' does not serve {kind}; models that do: {', '.join(able) or 'none'}",
                model=name,
                param="model",
            )
        return model


def transcript_events(request: Request, outputs: AsyncIterator[Output]) -> AsyncIterator[ServerSentEvent]:
    """A transcription's outputs as OpenAI streams them: one `transcript.text.delta` per
    segment the model emitted (a dict with its "text"), then `transcript.text.done`; or
    an error in OpenAI's shape, which the SDKs raise. The deltas join to the text."""

    async def events() -> AsyncIterator[ServerSentEvent]:
        sent = ""
        async for kind, value in outputs:
            if kind == PING:
                yield ServerSentEvent(comment="ping")
            elif kind == ERROR:
                yield ServerSentEvent(data=answer_of(request, value)[1])
            elif kind == PARTIAL:
                delta = formats.segment_delta(value, first=not sent)
                sent += delta
                yield ServerSentEvent(data=formats.text_delta(delta))
            else:
                for event in formats.text_end(value["text"], sent):
                    yield ServerSentEvent(data=event)

    return events()


def model_card(name: str) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": "longserve"}


def parse_body(cls: type[BaseModel], body: Union[bytes, dict]) -> Any:
    try:
        return cls.model_validate(body) if isinstance(body, dict) else cls.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidRequest.from_errors(exc.errors(include_url=False, include_input=False)) from None


def parse_form(content_type: str, body: bytes) -> tuple[dict[str, Any], tuple[str, bytes]]:
    """A multipart/form-data body -> (its text fields, the `file` part's (filename, bytes)).
    A field sent more than once (timestamp_granularities[]) becomes a list."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send multipart/form-data with the data as `file`; got '{content_type or 'none'}'",
        )
    # The standard library's MIME parser reads form-data (RFC 7578 is MIME); the body is within max_body_mb.
    message = BytesParser(policy=policy.HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields: dict[str, Any] = {}
    data, filename = b"", ""
    for part in message.iter_parts() if message.is_multipart() else ():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        payload = payload if isinstance(payload, bytes) else b""
        if name == "file":
            data, filename = payload, part.get_filename() or "file"
        elif isinstance(name, str):
            value = payload.decode("utf-8", errors="replace")
            if name.endswith("[]"):
                fields.setdefault(name, []).append(value)
            else:
                fields[name] = value
    if not data:
        raise ApiError(400, "invalid_request", "no data: send it as the multipart field `file`", param="file")
    return fields, (filename, data)


def check_audio_options(options: AudioRequest) -> None:
    """OpenAI's own rules between the options, answered as OpenAI does."""
    if options.timestamp_granularities and options.response_format != "verbose_json":
        raise ApiError(
            400,
            "unsupported_option",
            "timestamp_granularities[] needs response_format verbose_json",
            param="timestamp_granularities",
        )
    if options.stream and options.response_format not in ("json", "text"):
        raise ApiError(400, "unsupported_option", "stream=true needs response_format json or text", param="stream")
