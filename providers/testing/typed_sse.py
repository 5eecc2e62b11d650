"""Reading the SSE bodies of the gateway's typed-event surfaces (Anthropic's Messages, OpenAI's
Responses): every event names its ``type`` twice, in ``event:`` and in its JSON ``data``, and
neither stream ends with ``[DONE]``."""

from __future__ import annotations

import json
from typing import Any


def expect(condition: bool, message: str) -> None:
    """An ``assert`` that survives ``python -O``: the kit's rules are its whole point."""
    if not condition:
        raise AssertionError(message)


def parse_typed_sse(body: str | bytes) -> list[dict[str, Any]]:
    """The events of ``body`` (LF or CRLF lines), in order. A frame of comments only (a
    keep-alive) is skipped; any other frame must carry ``data:`` that is a JSON object, not
    ``[DONE]``, and an ``event:`` name, when it has one, equal to that object's ``type`` (a
    peer got this wrong: bifrost#4556)."""
    text = body.decode() if isinstance(body, bytes) else body
    events: list[dict[str, Any]] = []
    for n, frame in enumerate(text.replace("\r\n", "\n").split("\n\n")):
        lines = [line for line in frame.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        name, data = None, []
        for line in lines:
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        expect(bool(data), f"SSE frame {n} has no data: {frame[:80]!r}")
        payload = "\n".join(data)
        expect(payload != "[DONE]", f"SSE frame {n}: this stream has no [DONE]")
        try:
            event = json.loads(payload)
        except ValueError:
            raise AssertionError(f"SSE frame {n}: data is not JSON: {payload[:80]!r}") from None
        expect(isinstance(event, dict), f"SSE frame {n}: data is not a JSON object")
        expect(
            name is None or name == event.get("type"),
            f"SSE frame {n}: event name {name!r} is not its type {event.get('type')!r}",
        )
        events.append(event)
    return events
