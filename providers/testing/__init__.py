"""A conformance kit for provider TYPEs, built-in or plugin: what a provider's tests need.

- :class:`StandInUpstream` — a scriptable HTTP/1.1 server on 127.0.0.1 that records what it
  receives and can pause, truncate, hang or hang up (:class:`Reply`, :class:`Pause`).
- :func:`check_stream` — the normalized stream's grammar over a list of chunks.
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
from providers.testing.upstream import Pause, Received, Reply, StandInUpstream

__all__ = [
    "ChoiceSummary",
    "Pause",
    "Received",
    "Reply",
    "StandInUpstream",
    "StreamSummary",
    "ToolCall",
    "chat_request",
    "check_aclose",
    "check_cancellation",
    "check_provider",
    "check_spec",
    "check_stream",
    "collect",
    "expect_provider_error",
    "open_provider",
]
