"""No request leaves reference cycles behind in the gateway.

An object in a cycle is not freed when its last reference goes: it waits for the cyclic
collector, which then walks it. One cycle per stream (a session's bound method held by its
own watchdog) cost every stream ~15 k instructions of collector work, the price of a quarter of
its chunks. Here every kind of request goes through a real gateway while the collector keeps
what it frees (``gc.DEBUG_SAVEALL``); none of it may be the gateway's or a provider's.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from tests.conftest import fault_provider, settings
from tests.support.fault_upstream import FaultUpstream, serve_fault_upstream
from tests.support.servers import serve_in_thread
from tests.support.services import ADMIN_KEY

STATIC_KEY = "static-key-0123456789-cycles"
OURS = ("gateway", "providers")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FaultUpstream]]:
    db = Path(tmp_path_factory.mktemp("cycles")) / "gateway.db"
    with serve_fault_upstream() as (upstream_url, upstream):
        app = create_app(
            settings(
                api_keys=[STATIC_KEY],
                admin_key=ADMIN_KEY,
                database_url=f"sqlite:///{db}",
                prices={"echo/echo": {"input": 1.0, "output": 1.0}},
                providers={
                    "echo": {"type": "echo"},
                    "fault": fault_provider(
                        upstream_url,
                        models=["ok", "slow:400", "status:503", "stall:0", "stall:1", "reset:1"],
                    ),
                },
                stream_keepalive=0.1,
                first_token_timeout=0.5,
                idle_timeout=0.5,
                max_retries=1,  # a 503 is tried again: the retry path too
                breaker_threshold=0,
            )
        )
        with serve_in_thread(app) as url:
            yield url, upstream


def _requests(url: str, key: str) -> None:
    """Whole and streamed answers, from the echo provider and an OpenAI-compatible upstream;
    keep-alives, an upstream error retried, first-token and idle timeouts, a connection reset;
    the other surfaces; a bad body; a client that leaves."""
    chat = "/v1/chat/completions"
    hello = [{"role": "user", "content": "hello there"}]
    bodies: list[tuple[str, dict[str, Any]]] = [
        (chat, {"model": "echo/echo", "messages": hello}),
        (chat, {"model": "echo/echo", "messages": hello, "stream": True}),
        (chat, {"model": "fault/ok", "messages": hello, "stream": True}),
        (chat, {"model": "fault/slow:400", "messages": hello, "stream": True}),
        (chat, {"model": "fault/status:503", "messages": hello}),
        (chat, {"model": "fault/stall:1", "messages": hello, "stream": True}),
        (chat, {"model": "fault/stall:0", "messages": hello, "stream": True}),
        (chat, {"model": "fault/reset:1", "messages": hello, "stream": True}),
        ("/v1/messages", {"model": "echo/echo", "max_tokens": 50, "messages": hello}),
        (
            "/v1/messages",
            {"model": "echo/echo", "max_tokens": 50, "messages": hello, "stream": True},
        ),
        ("/v1/responses", {"model": "echo/echo", "input": "hello", "stream": True}),
        (chat, {"model": "echo/echo", "messages": "not a list"}),
    ]
    headers = {"authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
        for path, body in bodies:
            client.post(path, json=body)
        with client.stream("POST", chat, json=bodies[3][1]) as response:  # leaves mid-stream
            next(response.iter_lines())


def _ours(garbage: list[Any]) -> list[str]:
    kinds = {f"{type(o).__module__}.{type(o).__qualname__}" for o in garbage}
    return sorted(k for k in kinds if k.startswith(OURS))


@pytest.mark.parametrize("virtual", [False, True], ids=["static key", "virtual key"])
def test_no_request_leaves_a_reference_cycle(
    served: tuple[str, FaultUpstream], virtual: bool
) -> None:
    url, _ = served
    key = STATIC_KEY
    if virtual:
        created = httpx.post(
            f"{url}/admin/keys",
            json={"name": "cycles", "rpm": 10_000, "tpm": 10**8, "budget_usd": 100.0},
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
            timeout=10,
        )
        key = created.json()["key"]
    _requests(url, key)  # warm: imports, pools, caches
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        _requests(url, key)
        gc.collect()
        garbage = list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert _ours(garbage) == [], f"cyclic garbage of the gateway: {_ours(garbage)}"
