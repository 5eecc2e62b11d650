"""The OpenAI-compatible provider's endpoints besides chat: ``/embeddings`` and the legacy
``/completions``.

They go through the provider's own transport, request head (same headers, another path) and
error mapping (:meth:`OpenAICompatProvider._mapped`, ``_status_error``, ``_event``): this
module is a part of :mod:`providers.openai_compat` kept apart for size. What the upstream
sends is checked for shape here, once: anything else is ``upstream_malformed`` (a 502).
"""

from __future__ import annotations

import array
import base64
import binascii
import sys
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Any

import orjson

from providers import http1, upstream
from providers.base import CompletionRequest, EmbeddingRequest, Embeddings, Usage
from providers.errors import UpstreamProtocolError, malformed
from providers.openai_chunks import finish_reason
from providers.sse import SSEDecoder, SSEError

if TYPE_CHECKING:
    from providers.openai_compat import OpenAICompatProvider


async def _post(
    provider: OpenAICompatProvider,
    endpoint: bytes,
    payload: dict[str, Any],
    *,
    request_id: str | None,
    on_queue: Callable[[bool], None] | None,
) -> http1.RawResponse:
    return await provider._upstream.post(
        provider._paths[endpoint], orjson.dumps(payload), request_id=request_id, on_queue=on_queue
    )


async def _read_object(provider: OpenAICompatProvider, response: http1.RawResponse) -> Any:
    """A whole JSON body (bounded), parsed; malformed if it is not a JSON object."""
    with provider._mapped(before_head=False):
        raw = await upstream.read_whole(response)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if type(data) is not dict:
        raise malformed("the upstream answered with something that is not a JSON object")
    return data


async def embed(provider: OpenAICompatProvider, request: EmbeddingRequest) -> Embeddings:
    """``POST {base}/embeddings``, floats asked for; ``dimensions``, ``user``, token arrays and
    unknown fields passed through as the client gave them."""
    payload = {**request.body, "model": request.model, "encoding_format": "float"}
    if request.inputs:
        payload["input"] = request.inputs
    response = await _post(
        provider,
        b"embeddings",
        payload,
        request_id=request.request_id,
        on_queue=request.on_queue,
    )
    try:
        if response.status != 200:
            raise await provider._status_error(response)
        return embeddings_of(await _read_object(provider, response))
    finally:
        await response.aclose()


def embeddings_of(data: dict[str, Any]) -> Embeddings:
    """An OpenAI ``CreateEmbeddingResponse`` as vectors in input order, its shape checked."""
    items = data.get("data")
    if type(items) is not list:
        raise malformed("the upstream's embeddings answer has no data list")
    by_index: dict[int, list[float]] = {}
    for position, item in enumerate(items):
        if type(item) is not dict:
            raise malformed("the upstream sent an embedding that is not an object")
        index = item.get("index", position)
        if type(index) is not int or index in by_index:
            raise malformed("the upstream sent embeddings without distinct indices")
        by_index[index] = _vector(item.get("embedding"))
    if sorted(by_index) != list(range(len(by_index))):
        raise malformed("the upstream sent embeddings whose indices are not 0..n-1")
    usage = data.get("usage")
    if usage is not None and type(usage) is not dict:
        raise malformed("the upstream sent usage that is not an object")
    prompt = usage.get("prompt_tokens") if usage else None
    return Embeddings(
        vectors=[by_index[i] for i in range(len(by_index))],
        usage=Usage(input_tokens=prompt) if type(prompt) is int and prompt >= 0 else None,
    )


def _vector(value: Any) -> list[float]:
    if type(value) is str:  # an upstream that answers base64 even when asked for floats
        try:
            packed = array.array("f", base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            raise malformed("the upstream sent an embedding that is not valid base64") from None
        if sys.byteorder != "little":
            packed.byteswap()
        return packed.tolist()
    if type(value) is not list or not value:
        raise malformed("the upstream sent an embedding that is not a list of numbers")
    try:
        array.array("d", value)  # checks every element is a number, at C speed
    except TypeError:
        raise malformed("the upstream sent an embedding that is not a list of numbers") from None
    return value


async def complete(
    provider: OpenAICompatProvider, request: CompletionRequest
) -> AsyncGenerator[dict[str, Any], None]:
    """``POST {base}/completions``: streamed with usage always asked for (like chat), or one
    whole answer; yields ``text_completion`` objects with their choices checked."""
    payload = {**request.body, "model": request.model}
    if request.stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    response = await _post(
        provider,
        b"completions",
        payload,
        request_id=request.request_id,
        on_queue=request.on_queue,
    )
    try:
        if response.status != 200:
            raise await provider._status_error(response)
        checker = CompletionChecker()
        if (response.header(b"content-type") or "").startswith("application/json"):
            whole = checker.check(await _read_object(provider, response))
            for choice in whole["choices"]:
                choice["finish_reason"] = choice["finish_reason"] or "stop"
            yield whole
            return
        decoder = SSEDecoder()
        while True:
            with provider._mapped(before_head=False):
                data = await response.read()
            try:
                events = decoder.feed(data) if data else decoder.flush()
            except SSEError as exc:
                raise malformed(str(exc)) from exc
            for event in events:
                if event == b"[DONE]":
                    return
                yield checker.check(provider._event(event))
            if not data:
                break
        checker.check_finished()
    finally:
        await response.aclose()


class CompletionChecker:
    """Checks one answer's ``text_completion`` objects; knows which choices have finished."""

    __slots__ = ("_finished", "_unfinished")

    def __init__(self) -> None:
        self._unfinished: set[int] = set()
        self._finished = False

    def check(self, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` with each choice's ``index``, ``text``, ``finish_reason`` (OpenAI's words)
        and ``logprobs`` checked and present; other fields kept as they are."""
        choices = data.get("choices") or []
        if type(choices) is not list:
            raise malformed("the upstream sent a completion whose choices are not a list")
        checked = []
        for choice in choices:
            if type(choice) is not dict:
                raise malformed("the upstream sent a choice that is not an object")
            index, text = choice.get("index", 0), choice.get("text") or ""
            reason, logprobs = choice.get("finish_reason"), choice.get("logprobs")
            if type(index) is not int or index < 0:
                raise malformed("the upstream sent a choice without a valid index")
            if type(text) is not str:
                raise malformed("the upstream sent text that is not a string")
            if reason is not None and type(reason) is not str:
                raise malformed("the upstream sent a finish_reason that is not a string")
            if logprobs is not None and type(logprobs) is not dict:
                raise malformed("the upstream sent logprobs that are not an object")
            if reason:
                self._unfinished.discard(index)
                self._finished = True
                reason = _COMPLETION_FINISH.get(finish_reason(reason), "stop")
            else:
                self._unfinished.add(index)
                reason = None
            extra = {k: v for k, v in choice.items() if k not in _CHOICE_KEYS}
            checked.append(
                {"text": text, "index": index, "logprobs": logprobs, "finish_reason": reason}
                | extra
            )
        usage = data.get("usage")
        if usage is not None and type(usage) is not dict:
            raise malformed("the upstream sent usage that is not an object")
        return {**data, "choices": checked}

    def check_finished(self) -> None:
        """At the end of the body: every choice must have finished, or the stream was cut."""
        if not self._finished or self._unfinished:
            raise UpstreamProtocolError(
                "the upstream closed the stream before it finished", code="upstream_truncated"
            )


_CHOICE_KEYS = frozenset({"text", "index", "logprobs", "finish_reason"})
# The legacy endpoint's finish reasons are stop, length and content_filter.
_COMPLETION_FINISH = {"stop": "stop", "length": "length", "content_filter": "content_filter"}
