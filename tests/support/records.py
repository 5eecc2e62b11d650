"""Thread-safe records of what a test server saw: requests and client disconnects.

Written from the server's event-loop thread, read from the test thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

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

    def _record(self, item: RecordedRequest | Disconnect) -> None:
        with self._cond:
            if isinstance(item, RecordedRequest):
                self._requests.append(item)
            else:
                self._disconnects.append(item)
            self._cond.notify_all()
