"""A conformance kit for provider TYPEs, built-in or plugin: what a provider's tests need.

- :class:`StandInUpstream` — a scriptable HTTP/1.1 server on 127.0.0.1 that records what it
  receives and can pause, truncate, hang or hang up (:class:`Reply`, :class:`Pause`).
- :func:`check_stream` — the normalized stream's grammar over a list of chunks.
- :func:`check_responses_stream` (with :func:`parse_responses_sse`) — the grammar of the gateway's
  ``/v1/responses`` event stream, for tests of a provider behind that surface.
- :func:`check_messages_stream` (with :func:`parse_messages_sse`) — the grammar of an
  Anthropic Messages event stream, as the gateway's ``/v1/messages`` must keep it.
- :func:`check_provider`, :func:`check_aclose`, :func:`check_cancellation`,
  :func:`expect_provider_error` — a provider streaming, closing and being cancelled as the
  gateway expects; :func:`open_provider` makes one from its spec as the gateway does.

It imports nothing of the gateway but :mod:`providers`. See ``docs/plugins.md``.
"""

from providers.testing.conformance import (
    chat_request,
    check_aclose,
    check_cancellation,
    check_provider,
    check_spec,
    collect,
    expect_provider_error,
    open_provider,
)
from providers.testing.grammar import (
    ChoiceSummary,
    StreamSummary,
    ToolCall,
    check_stream,
)
from providers.testing.messages_grammar import (
    MessagesSummary,
    ThinkingBlock,
    ToolUse,
    check_messages_stream,
    parse_messages_sse,
)
from providers.testing.responses_grammar import (
    ResponsesSummary,
    ResponsesToolCall,
    check_responses_stream,
    parse_responses_sse,
)
from providers.testing.upstream import Pause, Received, Reply, StandInUpstream

__all__ = [
    "ChoiceSummary",
    "MessagesSummary",
    "Pause",
    "Received",
    "Reply",
    "ResponsesSummary",
    "ResponsesToolCall",
    "StandInUpstream",
    "StreamSummary",
    "ThinkingBlock",
    "ToolCall",
    "ToolUse",
    "chat_request",
    "check_aclose",
    "check_cancellation",
    "check_messages_stream",
    "check_provider",
    "check_responses_stream",
    "check_spec",
    "check_stream",
    "collect",
    "expect_provider_error",
    "open_provider",
    "parse_messages_sse",
    "parse_responses_sse",
]
