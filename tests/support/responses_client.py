"""Talk to a gateway's ``/v1/responses`` raw and check what comes back against everything that
defines the wire: the OpenAI spec's schemas (vendored), the openai SDK's own types, and the
grammar checker of the conformance kit.

One deliberate exception to the spec: a failed response's ``error.code`` may be
``context_length_exceeded`` or ``insufficient_quota``. The spec's ``ResponseErrorCode`` enum
(and the SDK's ``Literal``) lack them, but OpenAI sends them and Codex acts on them (it stops
instead of retrying: PROVIDERS.md §5.2), so the gateway does too; such an event is validated
with the code replaced by ``server_error``, everything else as it is.
"""

from __future__ import annotations

import copy
from typing import Any

import httpx
import orjson
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from providers.testing import ResponsesSummary, check_responses_stream, parse_responses_sse
from tests.support.openapi_spec import validate

__all__ = [
    "EVENT_SCHEMAS",
    "OFF_SPEC_CODES",
    "post_responses",
    "stream_events",
    "validate_event",
    "validate_response",
    "validated_stream",
]

OFF_SPEC_CODES = frozenset({"context_length_exceeded", "insufficient_quota"})
# Every event type the gateway sends -> its schema in the spec.
EVENT_SCHEMAS = {
    "response.created": "ResponseCreatedEvent",
    "response.in_progress": "ResponseInProgressEvent",
    "response.completed": "ResponseCompletedEvent",
    "response.incomplete": "ResponseIncompleteEvent",
    "response.failed": "ResponseFailedEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.output_text.done": "ResponseTextDoneEvent",
    "response.refusal.delta": "ResponseRefusalDeltaEvent",
    "response.refusal.done": "ResponseRefusalDoneEvent",
    "response.reasoning_summary_part.added": "ResponseReasoningSummaryPartAddedEvent",
    "response.reasoning_summary_part.done": "ResponseReasoningSummaryPartDoneEvent",
    "response.reasoning_summary_text.delta": "ResponseReasoningSummaryTextDeltaEvent",
    "response.reasoning_summary_text.done": "ResponseReasoningSummaryTextDoneEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
    "response.custom_tool_call_input.delta": "ResponseCustomToolCallInputDeltaEvent",
    "response.custom_tool_call_input.done": "ResponseCustomToolCallInputDoneEvent",
}
_SDK_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def _on_spec(response: dict[str, Any]) -> dict[str, Any]:
    error = response.get("error")
    if isinstance(error, dict) and error.get("code") in OFF_SPEC_CODES:
        response = copy.deepcopy(response)
        response["error"]["code"] = "server_error"
    return response


def validate_response(response: dict[str, Any]) -> None:
    """``response`` is a spec ``Response`` and an SDK ``Response``."""
    on_spec = _on_spec(response)
    validate("Response", on_spec)
    Response.model_validate(on_spec)


def validate_event(event: dict[str, Any]) -> None:
    """``event`` is valid for its own schema, for the spec's union and for the SDK's union."""
    kind = event.get("type")
    assert kind in EVENT_SCHEMAS, f"an event type the gateway should not send: {kind!r}"
    if "response" in event:
        event = {**event, "response": _on_spec(event["response"])}
    validate(EVENT_SCHEMAS[kind], event)
    validate("ResponseStreamEvent", event)
    parsed = _SDK_EVENT.validate_python(event)
    assert parsed.type == kind


def post_responses(base_url: str, body: Any, **kwargs: Any) -> httpx.Response:
    """A raw ``POST /v1/responses`` (bodies the SDK would refuse to send, too)."""
    if isinstance(body, bytes | str):
        headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
        return httpx.post(
            base_url + "/v1/responses", content=body, headers=headers, timeout=30, **kwargs
        )
    return httpx.post(base_url + "/v1/responses", json=body, timeout=30, **kwargs)


def stream_events(base_url: str, body: dict[str, Any], **kwargs: Any) -> list[dict[str, Any]]:
    """The events of a streamed response (asserting a 200 SSE answer)."""
    response = post_responses(base_url, {**body, "stream": True}, **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return parse_responses_sse(response.content)


def validated_stream(
    base_url: str, body: dict[str, Any], *, json_arguments: bool = True, **kwargs: Any
) -> ResponsesSummary:
    """Stream ``body``; every event checked against the spec and the SDK, the whole stream
    against the grammar; the non-streamed answer to the same body checked too. Returns the
    stream's summary."""
    events = stream_events(base_url, body, **kwargs)
    for event in events:
        validate_event(event)
    summary = check_responses_stream(events, json_arguments=json_arguments)
    if summary.status == "completed":
        assert summary.usage is None or summary.usage["total_tokens"] >= 0
    return summary


def decoded(response: httpx.Response) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(response.content)
    return data
