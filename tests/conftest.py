"""Shared fixtures: real gateways on 127.0.0.1, the real openai SDK as client."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import Settings
from tests.support.browser import PAGE_WATCH
from tests.support.fault_upstream import FaultUpstream, serve_fault_upstream
from tests.support.plugin_install import SCRIPTED, pip_install
from tests.support.servers import serve_in_thread

GatewayFactory = Callable[..., str]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """A browser test's page is checked as part of the test (tests.support.browser): a console
    error is the test's failure, where a fixture's teardown would report an error."""
    result = yield
    watch = item.stash.get(PAGE_WATCH, None)
    if watch is not None:
        watch.check()
    return result


@pytest.fixture(scope="session")
def scripted_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin (examples/llm-gateway-scripted) pip-installed, once a session, into
    a directory of its own that a gateway gets on its PYTHONPATH."""
    target = tmp_path_factory.mktemp("scripted-site")
    pip_install(SCRIPTED, target, scratch=tmp_path_factory.mktemp("scripted-src"))
    return target


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Tests build their settings explicitly: no GATEWAY_* variable or .env leaks in."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("GATEWAY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def settings(**values: Any) -> Settings:
    """Settings from plain values (keys as str, providers as dicts), as an env file gives them."""
    return Settings(**values)


@pytest.fixture
def make_gateway() -> Iterator[GatewayFactory]:
    """Start a gateway from Settings keyword arguments; returns its base URL.

    ``http_protocol=HeaderDeadlineProtocol`` serves it with the gateway's own HTTP protocol
    (as the CLI does) instead of uvicorn's plain one."""
    with contextlib.ExitStack() as stack:

        def start(*, http_protocol: type | None = None, **settings: Any) -> str:
            app = create_app(Settings(**settings))
            if http_protocol is None:
                return stack.enter_context(serve_in_thread(app))
            return stack.enter_context(serve_in_thread(app, http=http_protocol))

        yield start


@pytest.fixture(scope="module")
def echo_gateway() -> Iterator[str]:
    """A gateway on its defaults: one echo provider, no auth."""
    with serve_in_thread(create_app(Settings())) as url:
        yield url


@pytest.fixture(scope="module")
def fault_upstream() -> Iterator[tuple[str, FaultUpstream]]:
    with serve_fault_upstream() as served:
        yield served


@pytest.fixture
def upstream(fault_upstream: tuple[str, FaultUpstream]) -> FaultUpstream:
    fault_upstream[1].reset()
    return fault_upstream[1]


def fault_provider(base_url: str, **extra: Any) -> dict[str, Any]:
    """Settings for an openai provider named ``fault`` in front of the fault upstream."""
    return {
        "type": "openai",
        "base_url": base_url,
        "api_key": "sk-upstream-canary-1234567890",
        "models": ["ok", "any"],
        **extra,
    }


def post_chat(base_url: str, body: Any, **kwargs: Any) -> httpx.Response:
    """A raw POST, for bodies the SDK would refuse to send."""
    if not isinstance(body, bytes | str):
        kwargs.setdefault("json", body)
        return httpx.post(base_url + "/v1/chat/completions", timeout=10, **kwargs)
    headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
    return httpx.post(
        base_url + "/v1/chat/completions", content=body, headers=headers, timeout=10, **kwargs
    )


def sse_data(raw: str) -> list[str]:
    """The data payloads of an SSE body, in order."""
    return [line[6:] for line in raw.split("\n") if line.startswith("data: ")]
