"""Thread-safe records of what a test server saw: requests and client disconnects.

Written from the server's event-loop thread, read from the test thread.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from tests.support.servers import Receive, Scope, Send

__all__ = ["Disconnect", "RecordedRequest", "Recorder"]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: Any  # parsed JSON, or None if the body was empty or not JSON
    raw_body: bytes
    at: float  # time.monotonic() when the body had been read

    @property
    def model(self) -> str | None:
        model = self.body.get("model") if isinstance(self.body, dict) else None
        return model if isinstance(model, str) else None


@dataclass(frozen=True)
class Disconnect:
    """The client went away before the response was finished."""

    path: str
    model: str | None
    at: float  # time.monotonic() when it was noticed
    events_sent: int  # SSE events (or body writes) sent before the client went away
    how: str  # "http.disconnect" (seen by receive()) or "send-failed"


class Recorder:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._disconnects: list[Disconnect] = []

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request seen since the last :meth:`reset`, in arrival order."""
        with self._cond:
            return list(self._requests)

    @property
    def disconnects(self) -> list[Disconnect]:
        """A snapshot of every early client disconnect since the last :meth:`reset`."""
        with self._cond:
            return list(self._disconnects)

    def attempts(self, model: str) -> int:
        """How many chat-completion requests asked for exactly this ``model``."""
        return sum(r.path.endswith("/chat/completions") and r.model == model for r in self.requests)

    def wait_for_disconnect(self, timeout: float) -> float | None:
        """Monotonic time of the first disconnect recorded, waiting up to ``timeout`` s."""
        with self._cond:
            self._cond.wait_for(lambda: bool(self._disconnects), timeout)
            return self._disconnects[0].at if self._disconnects else None

    def wait_for_requests(self, count: int, timeout: float) -> bool:
        """Wait up to ``timeout`` s until at least ``count`` requests were recorded."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._requests) >= count, timeout)

    def reset(self) -> None:
        with self._cond:
            self._requests.clear()
            self._disconnects.clear()

    async def accept(self, scope: Scope, receive: Receive, send: Send) -> RecordedRequest | None:
        """Serve lifespan; read and record an HTTP request. None: nothing to answer."""
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return None
        if scope["type"] != "http":
            return None
        raw = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            raw += message.get("body", b"")
            if not message.get("more_body", False):
                break
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        req = RecordedRequest(scope["method"], scope["path"], headers, body, raw, time.monotonic())
        self._record(req)
        return req

    def _record(self, item: RecordedRequest | Disconnect) -> None:
        with self._cond:
            if isinstance(item, RecordedRequest):
                self._requests.append(item)
            else:
                self._disconnects.append(item)
            self._cond.notify_all()
