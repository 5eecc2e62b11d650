"""``POST /v1/embeddings``: OpenAI's ``CreateEmbeddingRequest`` -> dispatch -> the vectors.

An embedding call is one upstream request with no stream: dispatch treats it as non-streaming
(no first-token timeout; the total one holds), with the same retries, fallbacks and breakers
as chat. Upstreams are always asked for floats; ``encoding_format=base64`` (the openai SDK's
default) is honoured here by packing little-endian float32, as OpenAI does.

Limits, besides the body's size: at most :data:`MAX_INPUTS` inputs (OpenAI's own limit), a
text of at most :data:`MAX_INPUT_CHARS` characters, a token array of at most
:data:`MAX_INPUT_TOKENS` ids; no empty text or array.
"""

from __future__ import annotations

import array
import base64
import math
import sys
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired, cast

import orjson
from pydantic import (
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    TypeAdapter,
    with_config,
)
from starlette.types import Send
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from gateway.asgi import send_error, send_json
from gateway.dispatch import Session
from gateway.errors import APIError
from gateway.routing import Deployment
from gateway.surfaces.shared import SHAPE_TAGS, Parsed, Surface, input_shape, parse_body
from gateway.tenancy.estimate import PER_REQUEST, text_tokens
from providers.base import EmbeddingRequest, Embeddings, SupportsEmbeddings, Usage
from providers.errors import UpstreamProtocolError

MAX_INPUTS = 2048
MAX_INPUT_CHARS = 262_144  # above any embedding model's context (32k tokens is ~128k chars)
MAX_INPUT_TOKENS = 131_072

Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_INPUT_CHARS)]
Texts = Annotated[list[Text], Field(min_length=1, max_length=MAX_INPUTS)]
TokenIds = Annotated[
    list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=MAX_INPUT_TOKENS)
]
TokenArrays = Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_INPUTS)]


Input = Annotated[
    Annotated[Text, Tag("text")]
    | Annotated[Texts, Tag("texts")]
    | Annotated[TokenIds, Tag("tokens")]
    | Annotated[TokenArrays, Tag("token_arrays")],
    Discriminator(
        input_shape,
        custom_error_type="invalid_type",
        custom_error_message="input must be a string, an array of strings, an array of token "
        "ids or an array of token-id arrays",
    ),
]


@with_config(ConfigDict(strict=True, extra="allow"))
class EmbeddingBody(TypedDict):
    """OpenAI's ``CreateEmbeddingRequest``; other fields pass through to the upstream."""

    model: Annotated[str, StringConstraints(min_length=1)]
    input: Input
    encoding_format: NotRequired[Literal["float", "base64"] | None]
    dimensions: NotRequired[Annotated[int, Field(ge=1)] | None]
    user: NotRequired[str | None]


BODY = TypeAdapter(EmbeddingBody)


@dataclass(slots=True)
class EmbeddingCall:
    """A checked request. ``texts`` is empty when the input came as token arrays, which then
    stay in ``body["input"]``; ``count`` is the number of inputs either way."""

    texts: list[str]
    body: dict[str, Any]
    count: int
    base64: bool


def parse_embedding_request(raw: bytes) -> Parsed[EmbeddingCall]:
    """Parse and check a ``POST /v1/embeddings`` body; 400 with ``param`` if it is wrong."""
    checked, body = parse_body(raw, BODY, tags=SHAPE_TAGS)
    given = checked["input"]
    body = {
        k: v
        for k, v in body.items()
        if k not in ("model", "input", "encoding_format") and v is not None
    }
    texts: list[str] = []
    if isinstance(given, str):
        texts, count = [given], 1
    elif input_shape(given) == "texts":
        texts = cast("list[str]", given)
        count = len(texts)
    else:
        body["input"] = given  # token ids go to the upstream as the client gave them
        count = 1 if input_shape(given) == "tokens" else len(given)
    request = EmbeddingCall(
        texts=texts, body=body, count=count, base64=checked.get("encoding_format") == "base64"
    )
    return Parsed(
        request,
        model=checked["model"],
        estimate_input=lambda: text_tokens(given) + PER_REQUEST,
        output_cap=0,
    )


class EmbeddingsEndpoint(Surface[EmbeddingCall]):
    """``POST /v1/embeddings`` for providers that implement :class:`SupportsEmbeddings`."""

    path = "/v1/embeddings"
    surface = "embeddings"
    capability = SupportsEmbeddings
    capability_name = "embeddings (/v1/embeddings)"

    def parse(self, raw: bytes) -> Parsed[EmbeddingCall]:
        return parse_embedding_request(raw)

    async def serve(self, session: Session, request: EmbeddingCall, send: Send) -> None:
        call = session.call

        def start(deployment: Deployment) -> AsyncGenerator[Embeddings, None]:
            return _embed(deployment, request, request_id=call.request_id, queued=session.queued)

        try:
            first = await session.open(start)
        except APIError as exc:
            await send_error(send, exc)
            return
        model = session.deployment.model_id  # the session forgets it once pumped
        error = await session.pump(first, _ignore)
        if error is not None:
            await send_error(send, error)
            return
        usage = first.usage or _estimate(request)
        call.usage = usage
        body = render(first, model=model, usage=usage, b64=request.base64)
        await send_json(send, 200, body)


def _ignore(item: Embeddings) -> bytes:
    return b""  # the one item is rendered once the stream is over


async def _embed(
    deployment: Deployment,
    request: EmbeddingCall,
    *,
    request_id: str,
    queued: Callable[[bool], None],
) -> AsyncGenerator[Embeddings, None]:
    """One attempt, as the one-item stream dispatch expects."""
    provider = deployment.provider
    assert isinstance(provider, SupportsEmbeddings)  # the chain holds capable ones only
    result = await provider.embed(
        EmbeddingRequest(
            deployment.upstream_model,
            inputs=request.texts,
            body=request.body,
            request_id=request_id,
            on_queue=queued,
        )
    )
    if len(result.vectors) != request.count:
        raise UpstreamProtocolError(
            f"the upstream for {deployment.model_id} returned {len(result.vectors)} embeddings "
            f"for {request.count} inputs",
            code="upstream_malformed",
        )
    yield result


def _estimate(request: EmbeddingCall) -> Usage:
    """An upstream that counts nothing: token arrays count exactly, text at ~4 chars a token."""
    tokens = request.body.get("input") if not request.texts else None
    if tokens is not None:
        total = len(tokens) if isinstance(tokens[0], int) else sum(len(t) for t in tokens)
    else:
        total = sum(math.ceil(len(text) / 4) for text in request.texts)
    return Usage(input_tokens=total, source="estimated")


def pack_float32(vector: list[float]) -> str:
    """OpenAI's ``base64`` encoding: the vector as little-endian float32, base64-encoded."""
    packed = array.array("f", vector)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def render(embeddings: Embeddings, *, model: str, usage: Usage, b64: bool) -> bytes:
    """OpenAI's ``CreateEmbeddingResponse``; ``model`` is the model id that answered."""
    data = [
        {"object": "embedding", "index": i, "embedding": pack_float32(v) if b64 else v}
        for i, v in enumerate(embeddings.vectors)
    ]
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": usage.input_tokens, "total_tokens": usage.total_tokens},
        }
    )
