"""The observer interface: what an observer (metrics, traces, a ledger) learns of each request,
from a real gateway. Never a key: only which key."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.observe import Call, Observers, QuietObserver
from providers.errors import ProviderError
from tests.conftest import fault_provider, post_chat, settings
from tests.support.fault_upstream import FaultUpstream
from tests.support.servers import serve_in_thread

KEYS = ["first-key-0123456789", "second-key-0123456789"]


class Recording:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.changed = threading.Condition()

    def _add(self, kind: str, value: Any) -> None:
        with self.changed:
            self.events.append((kind, value))
            self.changed.notify_all()

    def attempt_started(self, call: Call, deployment: str) -> None:
        self._add("attempt_started", deployment)

    def attempt_finished(self, call: Call, deployment: str, error: ProviderError | None) -> None:
        self._add("attempt_finished", (deployment, None if error is None else error.code))

    def first_token(self, call: Call) -> None:
        self._add("first_token", call.ttft)

    def finished(self, call: Call) -> None:
        self._add("finished", dataclasses.replace(call))

    def take(self, finished: int = 0) -> list[tuple[str, Any]]:
        """The events so far, once ``finished`` requests have been reported finished: the
        server reports it after the response's last byte, so a client may be faster."""
        with self.changed:
            self.changed.wait_for(
                lambda: sum(kind == "finished" for kind, _ in self.events) >= finished, 5
            )
            events, self.events = self.events, []
        return events


@pytest.fixture(scope="module")
def observed(fault_upstream: tuple[str, FaultUpstream]) -> Iterator[tuple[str, Recording]]:
    recording = Recording()
    config = settings(
        api_keys=KEYS,
        providers={
            "fault": fault_provider(fault_upstream[0], models=["status:503"], max_retries=1),
            "echo": {"type": "echo"},
        },
    )
    with serve_in_thread(create_app(config, observers=(recording,))) as url:
        yield url, recording


def test_an_answered_request_reports_its_attempt_first_token_and_finish(
    observed: tuple[str, Recording],
) -> None:
    url, recording = observed
    recording.take()
    response = post_chat(
        url,
        {"model": "echo/echo", "messages": [{"role": "user", "content": "a b c"}], "stream": True},
        headers={"authorization": f"Bearer {KEYS[1]}"},
    )
    assert response.status_code == 200
    events = recording.take(finished=1)
    assert [kind for kind, _ in events] == [
        "attempt_started",
        "attempt_finished",
        "first_token",
        "finished",
    ]
    assert events[0][1] == "echo/echo" and events[1][1] == ("echo/echo", None)
    call: Call = events[-1][1]
    assert (call.key_id, call.surface, call.model, call.deployment) == (
        "static-1",
        "chat",
        "echo/echo",
        "echo/echo",
    )
    assert call.status == 200 and call.attempts == 1 and call.error_code is None
    assert call.ttft is not None and call.ttft > 0 and call.finish_reason == "stop"
    assert call.usage is not None and (call.usage.input_tokens, call.usage.output_tokens) == (3, 3)
    assert call.request_id == response.headers["x-request-id"]
    assert not any(key in repr(call) for key in KEYS)


def test_a_failed_request_reports_each_attempt_with_its_cause(
    observed: tuple[str, Recording],
) -> None:
    url, recording = observed
    recording.take()
    response = post_chat(
        url,
        {"model": "fault/status:503", "messages": [{"role": "user", "content": "x"}]},
        headers={"authorization": f"Bearer {KEYS[0]}"},
    )
    assert response.status_code == 502
    events = recording.take(finished=1)
    assert [kind for kind, _ in events] == ["attempt_started", "attempt_finished"] * 2 + [
        "finished"
    ]
    assert events[1][1] == ("fault/status:503", "upstream_error")
    call: Call = events[-1][1]
    assert call.key_id == "static-0" and call.status == 502 and call.attempts == 2
    assert call.error_code == "upstream_error" and call.cause and "HTTP 503" in call.cause


def test_requests_that_never_reach_a_provider_are_reported_too(
    observed: tuple[str, Recording],
) -> None:
    url, recording = observed
    recording.take()
    assert httpx.get(url + "/v1/models", timeout=5).status_code == 401
    assert httpx.get(url + "/health", timeout=5).status_code == 200
    calls = [call for kind, call in recording.take(finished=2) if kind == "finished"]
    assert [(c.path, c.status, c.key_id, c.surface) for c in calls] == [
        ("/v1/models", 401, None, None),
        ("/health", 200, None, None),
    ]


def test_observers_skip_the_reports_a_quiet_observer_leaves_alone() -> None:
    """A QuietObserver subclass is told only what it overrides; any other observer, all."""
    seen: list[str] = []

    class OnlyFinished(QuietObserver):
        def finished(self, call: Call) -> None:
            seen.append("quiet:finished")

    class Everything:
        def attempt_started(self, call: Call, deployment: str) -> None:
            seen.append("all:attempt_started")

        def attempt_finished(self, call: Call, deployment: str, error: object) -> None:
            seen.append("all:attempt_finished")

        def first_token(self, call: Call) -> None:
            seen.append("all:first_token")

        def finished(self, call: Call) -> None:
            seen.append("all:finished")

    observers = Observers([OnlyFinished(), Everything()])
    call = Call("r", "POST", "/v1/chat/completions", "-", 0.0)
    observers.attempt_started(call, "p/m")
    observers.attempt_finished(call, "p/m", None)
    observers.first_token(call)
    observers.finished(call)
    assert seen == [
        "all:attempt_started",
        "all:attempt_finished",
        "all:first_token",
        "quiet:finished",
        "all:finished",
    ]
