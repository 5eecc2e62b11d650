"""One timer per request that ends a request's wait on its upstream, or the request itself.

It enforces the first-token, idle and total timeouts and turns a client disconnect into a
cancellation, without rescheduling a timer for every chunk: the hot path only records when it
starts and stops waiting, and the timer, when it fires, checks whether the wait really is over
and re-arms itself if not. Time spent sending to the client never counts as upstream idleness.

The same timer says when a streamed response has been quiet for ``keepalive`` seconds (no
chunk since, nor an earlier keep-alive), so that its session can send a keep-alive frame.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable


class Watchdog:
    """Cancels ``task`` with a ``reason`` when a limit passes or :meth:`trip` is called.

    The cancelled code catches ``CancelledError`` and calls :meth:`claim` to learn why.
    """

    __slots__ = (
        "_closed",
        "_handle",
        "_limit",
        "_loop",
        "_quiet_at",
        "_since",
        "_task",
        "_total_at",
        "_waiting",
        "idle",
        "keepalive",
        "on_quiet",
        "phase",
        "reason",
    )

    def __init__(self, *, idle: float | None, total: float | None) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task(self._loop)  # with no loop it looks it up again (getpid)
        assert task is not None
        self._task = task
        now = self._loop.time()
        self._total_at = now + total if total else math.inf
        self.idle = idle or math.inf
        self._limit = math.inf  # set by restart_first_token() when an attempt starts
        self._since = now
        self._waiting = True
        self.phase = "first_token"
        self.reason: str | None = None
        self._closed = False
        # keep_quiet() sets these: on_quiet() is called after ``keepalive`` seconds with no
        # chunk and no earlier call (_quiet_at: when the last one was).
        self.keepalive = math.inf
        self.on_quiet: Callable[[], None] | None = None
        self._quiet_at = now
        # Armed by the first restart_first_token(), for the sooner of its window and the
        # total: one timer for a request, not one for the total and another for the window.
        self._handle: asyncio.TimerHandle | None = None

    def _arm(self, when: float) -> None:
        self._handle = self._loop.call_at(when, self._fire) if when < math.inf else None

    def _fire(self) -> None:
        self._handle = None
        if self.reason is not None:
            return
        now = self._loop.time()
        if now >= self._total_at:
            self.trip("total")
        elif self._waiting and now - self._since >= self._limit:
            self.trip(self.phase)
        else:
            on_quiet = self.on_quiet
            if on_quiet is not None and now - self._quiet_since() >= self.keepalive:
                self._quiet_at = now
                on_quiet()
            start = self._since if self._waiting else now
            self._arm(self._sooner(min(start + self._limit, self._total_at)))

    def _quiet_since(self) -> float:
        """When the client last got something: a keep-alive or, once the stream flows, a
        chunk (waiting() follows each one sent). Before the first token, attempts and their
        retries start again but the client still has nothing."""
        if self.phase == "idle" and self._since > self._quiet_at:
            return self._since
        return self._quiet_at

    def _sooner(self, when: float) -> float:
        """``when``, or the next keep-alive if that comes first."""
        quiet = self._quiet_since() + self.keepalive
        return quiet if quiet < when else when

    def keep_quiet(self, every: float, on_quiet: Callable[[], None]) -> None:
        """Call ``on_quiet`` whenever ``every`` seconds pass with nothing for the client."""
        self.keepalive = every
        self.on_quiet = on_quiet
        handle = self._handle
        if handle is not None and handle.when() > self._quiet_since() + every:  # armed already
            handle.cancel()
            self._arm(self._sooner(handle.when()))

    def restart_first_token(self, first_token: float | None) -> None:
        """A new attempt: the first-token window starts again (the total does not)."""
        self._limit = first_token or math.inf
        self.phase = "first_token"
        self.waiting()
        deadline = self._since + self._limit
        if self._total_at < deadline:
            deadline = self._total_at
        quiet = self._quiet_at + self.keepalive  # no chunk yet: only keep-alives count
        if quiet < deadline:
            deadline = quiet
        if self._handle is None or self._handle.when() > deadline:
            if self._handle is not None:
                self._handle.cancel()
            self._arm(deadline)

    def waiting(self) -> None:
        """We start waiting for the upstream's next chunk."""
        self._since = self._loop.time()
        self._waiting = True

    def pause(self) -> None:
        """Not waiting on the upstream (backing off before a retry, queued for a connection);
        the total still runs."""
        self._waiting = False

    def queued(self, waiting_for_a_connection: bool) -> None:
        """A provider's ``on_queue``: a wait for a pooled connection is not the upstream's."""
        if waiting_for_a_connection:
            self.pause()
        else:
            self.waiting()

    def received(self) -> None:
        """A chunk arrived: from now on only the idle limit applies between chunks."""
        self._waiting = False
        if self.phase == "first_token":
            self.phase = "idle"
            self._limit = self.idle
            # The timer may be armed for the first-token deadline, far beyond the next idle
            # one: bring it forward (once per attempt, not per chunk).
            soonest = min(self._loop.time() + self.idle, self._total_at)
            if self._handle is None or self._handle.when() > soonest:
                if self._handle is not None:
                    self._handle.cancel()
                self._arm(soonest)

    def trip(self, reason: str) -> None:
        """Cancel the request's task now, for ``reason`` (e.g. ``"disconnect"``)."""
        if self.reason is None and not self._closed:
            self.reason = reason
            self._task.cancel()

    def client_left(self) -> None:
        """The client went away: the request stops (``"disconnect"``)."""
        self.trip("disconnect")

    def claim(self) -> str:
        """After a ``CancelledError``: why. The task is un-cancelled so it can answer.

        A cancellation that is not the watchdog's comes from the server shutting down (uvicorn
        cancels the requests still running when its graceful-shutdown time is over).
        """
        self._task.uncancel()
        reason = self.reason or "shutdown"
        # A first-token timeout is handled by retrying: later trips must still get through.
        self.reason = None if reason == "first_token" else reason
        return reason

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._closed = True  # no cancellation once the request is done
        # on_quiet is the session's bound method: the cycle it makes (session -> watchdog ->
        # session) would leave each stream's objects to the cyclic GC, not to refcounting.
        self.on_quiet = None
