"""Words for the visitor about a failed call to the gateway: the one place where SDK errors are
translated, so every page says the same thing about the same failure."""

from __future__ import annotations

from collections.abc import Mapping

import openai


def describe_error(error: openai.OpenAIError, *, model: str) -> str:
    """What went wrong, without the key, the traceback or the SDK's class names."""
    match error:
        case openai.AuthenticationError():
            return "the gateway refused the key — enter a valid API key"
        case openai.PermissionDeniedError():
            return f"this API key may not use {model!r}"
        case openai.NotFoundError():
            return f"unknown model {model!r} — pick one from the list (↻ refreshes it)"
        case openai.RateLimitError():
            return "too many requests — try again in a moment"
        case openai.APITimeoutError():
            return "the gateway did not answer in time"
        case openai.APIConnectionError():
            return "cannot reach the gateway"
        case openai.APIStatusError():
            return f"the gateway answered {error.status_code}: {_body_message(error)}"
        case openai.APIError():
            # A `data: {"error": …}` frame: the stream failed after it had started.
            return f"the stream failed: {_body_message(error)}"
        case _:
            return str(error)


def _body_message(error: openai.APIError) -> str:
    body = error.body
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        return str(body["message"])
    return error.message
