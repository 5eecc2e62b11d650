"""The chat UI over HTTP: gradio_client against ``/chat`` of a real gateway with the UI mounted.

Replies come from the echo provider (slowed down, so there are many partials) or from the fault
upstream behind an openai provider, which records what it was sent and when its client left.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from gradio_client import Client, handle_file
from PIL import Image

import ui
from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import fault_provider
from tests.support.clients import async_sdk
from tests.support.fault_upstream import FaultUpstream
from tests.support.servers import GATEWAY, free_port, serve_in_thread, spawn
from webui.chat import mark_stopped
from webui.content import chat_history_messages
from webui.gateway import Gateway
from webui.progress import UPDATE_INTERVAL, Progress, follow

KEY = "sk-visitor-key-0123456789"
UI_KEY = "sk-server-side-ui-key-9876543210"  # valid at the keyed gateway; must never leak


def text(message: str) -> dict[str, Any]:
    """The Chat page's input: the multimodal textbox sends text and files together."""
    return {"text": message, "files": []}


def words(n: int, tag: str = "w") -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def reply_text(output: Any) -> str:
    """The reply's text from one /chat output (a string, or messages of which one is the text)."""
    if isinstance(output, str):
        return output
    return "".join(m["content"] for m in output if not m.get("metadata", {}).get("title"))


def footer(output: Any) -> dict[str, Any]:
    """The metadata of the line that tells how the stream went."""
    [meta] = [m["metadata"] for m in output if m.get("metadata", {}).get("title")]
    return dict(meta)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


@contextlib.contextmanager
def gateway_with_ui(
    *, require_key: bool = False, api_key: str | None = None, **settings: Any
) -> Iterator[str]:
    """A gateway with the UI mounted at /ui, as ``llm-gateway`` serves it."""
    port = free_port()
    app = create_app(Settings(**settings), open_prefixes=("/ui",))
    ui.mount(app, gateway_url=f"http://127.0.0.1:{port}", api_key=api_key, require_key=require_key)
    with serve_in_thread(app, port=port) as url:
        yield url


@contextlib.contextmanager
def clients_for(url: str, count: int) -> Iterator[list[Client]]:
    """``count`` gradio_client sessions of the UI at ``url``."""
    # Side by side: each client fetches the config, and close() waits up to 1 s for the
    # session's heartbeat thread.
    with ThreadPoolExecutor(max_workers=count) as pool:
        clients = list(pool.map(lambda _: Client(url, verbose=False), range(count)))
        try:
            yield clients
        finally:
            list(pool.map(Client.close, clients))


@contextlib.contextmanager
def client_for(url: str) -> Iterator[Client]:
    with clients_for(f"{url}/ui/", 1) as [client]:
        yield client


@pytest.fixture(scope="module")
def open_gateway(fault_upstream: tuple[str, FaultUpstream]) -> Iterator[str]:
    """No API keys: echo, the fault upstream, and a provider whose upstream is down."""
    upstream_url, _ = fault_upstream
    providers = {
        "echo": {"type": "echo", "chunk_delay_ms": 20},
        "fault": fault_provider(
            upstream_url,
            models=["slow:200", "error-frame:3", "echo-request", "ok", "reasoning", "tools"],
            max_retries=0,
        ),
        "down": {
            "type": "openai",
            "base_url": f"http://127.0.0.1:{free_port()}/v1",
            "models": ["m"],
            "max_retries": 0,
        },
    }
    with gateway_with_ui(providers=providers) as url:
        yield url


@pytest.fixture(scope="module")
def keyed_gateway() -> Iterator[str]:
    """GATEWAY_API_KEYS set: the mounted UI asks each visitor for a key."""
    providers = {"echo": {"type": "echo", "chunk_delay_ms": 5}}
    with gateway_with_ui(require_key=True, api_keys=[KEY, UI_KEY], providers=providers) as url:
        yield url


@pytest.fixture(scope="module")
def client(open_gateway: str) -> Iterator[Client]:
    with client_for(open_gateway) as c:
        yield c


def test_root_redirects_to_the_ui(open_gateway: str) -> None:
    response = httpx.get(f"{open_gateway}/", follow_redirects=True, timeout=10)
    assert response.status_code == 200
    assert str(response.url) == f"{open_gateway}/ui/"


def test_reply_streams_as_growing_partials_and_ends_with_how_it_went(client: Client) -> None:
    message = words(40)
    job = client.submit(message=text(message), model="echo/echo", api_name="/chat")
    final = job.result(timeout=30)
    texts = [reply_text(o) for o in job.outputs()]
    assert len({t for t in texts if t}) >= 5, "expected many partials from a slow stream"
    assert all(message.startswith(t) for t in texts)
    assert reply_text(final) == message
    meta = footer(final)
    assert meta["title"] == "echo/echo"
    assert meta["status"] == "done"
    assert "TTFT" in meta["log"] and "tok/s" in meta["log"] and "+40 tokens" in meta["log"]


def test_reasoning_shows_as_a_thought_above_the_answer(client: Client) -> None:
    final = client.predict(message=text("why is that"), model="fault/reasoning", api_name="/chat")
    thought, answer, stats = final
    assert thought["metadata"]["title"].startswith("Thought for ")
    assert thought["metadata"]["status"] == "done"  # collapsed once the answer has started
    assert thought["content"] == "Thinking it over."
    assert answer["content"] == "why is that" and not answer.get("metadata", {}).get("title")
    assert stats["metadata"]["title"] == "fault/reasoning"
    assert "finished" in stats["metadata"]["log"]


def test_tool_calls_show_as_collapsible_blocks(client: Client) -> None:
    final = client.predict(message=text("weather in Paris"), model="fault/tools", api_name="/chat")
    [call] = [m for m in final if m["metadata"]["title"].startswith("🛠")]
    assert call["metadata"]["title"] == "🛠 get_weather"
    assert '"input": "weather in Paris"' in call["content"]
    assert "tool calls" in final[-1]["metadata"]["log"]


def test_an_image_goes_to_the_model_as_an_image_part(
    client: Client, upstream: FaultUpstream, tmp_path: Path
) -> None:
    picture = tmp_path / "dot.png"
    Image.new("RGB", (4, 4), (0, 0, 255)).save(picture, format="PNG")
    message = {"text": "what is this", "files": [handle_file(str(picture))]}
    final = client.predict(message=message, model="fault/ok", api_name="/chat")
    assert reply_text(final) == "what is this"
    [request] = [r for r in upstream.requests if r.model == "ok"]
    sent = request.body["messages"][-1]  # after the turns of this session's earlier tests
    assert sent["role"] == "user"
    parts = {part["type"]: part for part in sent["content"]}
    assert parts["text"] == {"type": "text", "text": "what is this"}
    assert parts["image_url"]["image_url"]["url"].startswith("data:image/png;base64,")


def test_a_file_outside_the_upload_folder_is_never_sent(tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(secret, format="PNG")
    history = [{"role": "user", "content": [{"type": "file", "file": {"path": str(secret)}}]}]
    messages = chat_history_messages({"text": "hi", "files": ["/etc/hostname"]}, history)
    assert messages == [{"role": "user", "content": "hi"}]


def test_empty_model_means_the_gateways_first_model(client: Client) -> None:
    final = client.predict(message=text("hi there"), api_name="/chat")
    assert reply_text(final) == "hi there"
    assert footer(final)["title"] == "echo/echo"


def test_a_reply_cut_at_max_tokens_says_so(client: Client) -> None:
    final = client.predict(
        message=text(words(20)), model="echo/echo", max_tokens=5, api_name="/chat"
    )
    assert reply_text(final).split() == words(5).split()
    assert "cut at max tokens" in footer(final)["log"]


def test_stop_marks_the_streaming_reply_as_stopped() -> None:
    streaming = {"title": "echo/echo", "status": "pending"}
    chat: list[dict[str, Any]] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "he"},
        {"role": "assistant", "content": "", "metadata": streaming},
    ]
    mark_stopped(chat)
    assert chat[2]["metadata"] == {"title": "⚠ stopped · echo/echo", "status": "done"}
    assert mark_stopped(chat)[2]["metadata"]["title"] == "⚠ stopped · echo/echo"  # once


def test_cancel_closes_the_upstream_stream_within_a_second(
    client: Client, upstream: FaultUpstream
) -> None:
    job = client.submit(message=text(words(30)), model="fault/slow:200", api_name="/chat")
    wait_until(lambda: any(reply_text(o) for o in job.outputs()), 15, "the first token")
    cancelled_at = time.monotonic()
    job.cancel()
    seen_at = upstream.wait_for_disconnect(timeout=5)
    assert seen_at is not None, "the upstream never saw its client go away"
    assert seen_at - cancelled_at < 1.0


def test_twenty_chats_stream_at_the_same_time(open_gateway: str) -> None:
    with clients_for(f"{open_gateway}/ui/", 20) as clients:
        messages = [words(40, tag=f"c{i}-") for i in range(20)]
        jobs = [
            c.submit(message=text(m), model="echo/echo", api_name="/chat")
            for c, m in zip(clients, messages, strict=True)
        ]
        first_text: dict[int, float] = {}
        finished: dict[int, float] = {}
        deadline = time.monotonic() + 60
        while len(finished) < len(jobs) and time.monotonic() < deadline:
            for i, job in enumerate(jobs):
                if i not in first_text and any(reply_text(o) for o in job.outputs()):
                    first_text[i] = time.monotonic()
                if i not in finished and job.done():
                    finished[i] = time.monotonic()
            time.sleep(0.005)
        assert len(finished) == len(jobs)
        # Served one after another, the last chat would start after the first had ended.
        assert max(first_text.values()) < min(finished.values())
        for job, message in zip(jobs, messages, strict=True):
            assert reply_text(job.result(timeout=1)) == message


def test_two_sessions_never_see_each_others_messages(open_gateway: str) -> None:
    with clients_for(f"{open_gateway}/ui/", 2) as [alice, bob]:
        alice.predict(message=text("alice-secret-1"), model="fault/ok", api_name="/chat")
        bob.predict(message=text("bob-secret-1"), model="fault/ok", api_name="/chat")
        # echo-request answers with the request body the gateway passed on: the history sent.
        seen_by_alice = reply_text(
            alice.predict(message=text("alice-2"), model="fault/echo-request", api_name="/chat")
        )
        seen_by_bob = reply_text(
            bob.predict(message=text("bob-2"), model="fault/echo-request", api_name="/chat")
        )
    assert "alice-secret-1" in seen_by_alice and "bob" not in seen_by_alice
    assert "bob-secret-1" in seen_by_bob and "alice" not in seen_by_bob


@pytest.mark.parametrize(
    ("model", "expected_error", "partial"),
    [
        ("nope/nope", "unknown model 'nope/nope'", ""),
        ("down/m", "answered 502: the upstream of provider 'down' is unreachable", ""),
        ("fault/error-frame:3", "upstream exploded", "a b c"),
    ],
)
def test_gateway_errors_show_as_readable_messages(
    client: Client, model: str, expected_error: str, partial: str
) -> None:
    final = client.predict(message=text("a b c d e f"), model=model, api_name="/chat")
    title = footer(final)["title"]
    assert title.startswith("⚠ error: ")
    assert expected_error in title, title
    assert reply_text(final).startswith(partial)


def test_unreachable_gateway_shows_as_a_readable_message() -> None:
    app = FastAPI()
    ui.mount(app, gateway_url=f"http://127.0.0.1:{free_port()}", api_key=None, require_key=False)
    with serve_in_thread(app) as url, client_for(url) as c:
        final = c.predict(message=text("hello"), model="echo/echo", api_name="/chat")
    assert footer(final)["title"] == "⚠ error: cannot reach the gateway"


def test_keyed_ui_chats_only_with_the_visitors_own_key(keyed_gateway: str) -> None:
    with client_for(keyed_gateway) as c:
        assert footer([c.predict(message=text("hello"), api_name="/chat")]) == {
            "title": ui.KEY_MISSING
        }
        refused = c.predict(message=text("hello"), api_key="sk-wrong", api_name="/chat")
        assert "enter a valid API key" in footer(refused)["title"]
        accepted = c.predict(message=text("hello you"), api_key=KEY, api_name="/chat")
        assert reply_text(accepted) == "hello you"
        assert footer(accepted)["title"] == "echo/echo"


def _pages(url: str) -> dict[str, str]:
    paths = ["/ui/", "/ui/config", "/ui/gradio_api/info", "/ui/gradio_api/openapi.json"]
    return {p: httpx.get(url + p, timeout=10).text for p in paths}


def test_the_server_side_key_never_reaches_the_page_or_config(keyed_gateway: str) -> None:
    app = FastAPI()  # the UI alone, as `python ui.py --api-key` serves it
    ui.mount(app, gateway_url=keyed_gateway, api_key=UI_KEY, require_key=False)
    with serve_in_thread(app) as url, client_for(url) as c:
        final = c.predict(message=text("secret-free reply"), api_name="/chat")
        pages = _pages(url)
    assert reply_text(final) == "secret-free reply"  # so the key was used, server-side
    assert "/ui/config" in pages and all(pages.values())
    for path, page in pages.items():
        assert UI_KEY not in page, path


def test_the_ui_serves_no_file_outside_its_own(open_gateway: str, tmp_path: Path) -> None:
    canary = tmp_path / "canary.txt"
    canary.write_text("canary-7d0f3e")
    targets = [str(canary), "canary.txt", "/etc/hostname", str(Path(ui.__file__).resolve())]
    for target in targets:
        for route in ("/ui/gradio_api/file=", "/ui/file=", "/ui/gradio_api/file/"):
            response = httpx.get(open_gateway + route + target, timeout=10)
            assert response.status_code in (403, 404), (route, target, response.status_code)
            assert "canary-7d0f3e" not in response.text


def test_history_in_both_shapes_becomes_the_same_conversation() -> None:
    def turn(user: Any, assistant: Any) -> list[dict[str, Any]]:
        stats = {"role": "assistant", "content": "", "metadata": {"title": "echo/echo"}}
        return [
            {"role": "user", "content": user},
            {"role": "assistant", "content": assistant},
            stats,
        ]

    from_api = turn("hi", "hello")
    from_browser = turn([{"type": "text", "text": "hi"}], [{"type": "text", "text": "hello"}])
    with_file = [{"role": "user", "content": [{"path": "/tmp/x.png", "mime_type": "image/png"}]}]
    expected = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "next"},
    ]
    for history in (from_api, from_browser, with_file + from_browser):
        assert chat_history_messages("next", history, system_prompt="be brief") == expected


def test_updates_are_coalesced_and_the_last_one_is_the_whole_reply() -> None:
    message = words(400)  # the echo provider on its defaults streams 400 chunks at once

    async def collect(base_url: str) -> tuple[list[str], float]:
        client = async_sdk(base_url)
        progress = Progress(model="echo/echo")
        reader = progress.read(client, messages=[{"role": "user", "content": message}])
        started = time.monotonic()
        async with client:
            texts = [progress.text async for _ in follow([(progress, reader)])]
        return texts, time.monotonic() - started

    with serve_in_thread(create_app(Settings())) as url:
        texts, elapsed = asyncio.run(collect(url))
    assert texts[-1] == message
    # The first yield (before any token), one per interval at most, and the final one.
    assert len(texts) <= 3 + elapsed / UPDATE_INTERVAL
    assert len(texts) < 400


def test_python_ui_py_runs_the_ui_alone_against_a_gateway(keyed_gateway: str) -> None:
    port = free_port()
    cmd = [sys.executable, ui.__file__, "--gateway-url", keyed_gateway, "--port", str(port)]
    env = {"GATEWAY_API_KEY": UI_KEY}
    with spawn(cmd, env=env, ready_url=f"http://127.0.0.1:{port}/", timeout=60) as server:
        with clients_for(f"{server.base_url}/", 1) as [c]:
            final = c.predict(message=text("standing alone"), api_name="/chat")
        page = httpx.get(f"{server.base_url}/config", timeout=10).text
    assert reply_text(final) == "standing alone"
    assert UI_KEY not in page


def test_llm_gateway_mounts_the_ui_which_asks_visitors_for_a_key() -> None:
    port = free_port()
    cmd = [GATEWAY, "--port", str(port)]
    env = {
        "GATEWAY_API_KEYS": f'["{KEY}"]',
        "GATEWAY_PROVIDERS__ECHO__TYPE": "echo",
    }
    ready = f"http://127.0.0.1:{port}/health"
    with spawn(cmd, env=env, ready_url=ready, timeout=60) as server:
        root = httpx.get(f"{server.base_url}/", timeout=10)
        pages = _pages(server.base_url)
        with clients_for(f"{server.base_url}/ui/", 1) as [c]:
            anonymous = c.predict(message=text("hello"), api_name="/chat")
            keyed = c.predict(message=text("hello gateway"), api_key=KEY, api_name="/chat")
    assert root.status_code == 307 and root.headers["location"] == "/ui/"
    assert all(KEY not in text for text in pages.values())
    assert footer([anonymous]) == {"title": ui.KEY_MISSING}
    assert reply_text(keyed) == "hello gateway"


def test_llm_gateway_no_ui_serves_the_api_only() -> None:
    port = free_port()
    cmd = [GATEWAY, "--no-ui", "--port", str(port)]
    env = {"GATEWAY_PROVIDERS__ECHO__TYPE": "echo"}
    with spawn(cmd, env=env, ready_url=f"http://127.0.0.1:{port}/health") as server:
        assert httpx.get(f"{server.base_url}/ui/", timeout=10).status_code == 404


def test_a_keyed_gateway_gets_the_visitors_key_and_never_the_servers() -> None:
    keyed = Gateway("http://127.0.0.1:9", api_key=UI_KEY, require_key=True)
    assert keyed.key_for("") is None and keyed.missing_key("  ")
    assert keyed.key_for(f"  {KEY} ") == KEY
    assert keyed.client(KEY).api_key == KEY
    assert keyed.client("").api_key == "unused"  # the gateway answers 401, which the page says
    open_ui = Gateway("http://127.0.0.1:9/v1", api_key=UI_KEY, require_key=False)
    assert open_ui.key_for("typed by a visitor") == UI_KEY and not open_ui.missing_key("")
    assert open_ui.base_url == "http://127.0.0.1:9/v1"


def test_a_typed_key_refreshes_every_model_list_even_during_the_page_load() -> None:
    """Every model dropdown refreshes on load, on ↻ and when a visitor types a key; a key typed
    while the load-time refresh is still pending must run after it (Gradio's default, "once",
    drops it, and the list stays empty: seen on a slow CI machine)."""
    demo = ui.build_ui("http://127.0.0.1:9", None, require_key=True)
    config = demo.get_config_file()
    kinds = {c["id"]: c["type"] for c in config["components"]}
    refreshers = [
        d
        for d in config["dependencies"]
        if d["outputs"] and all(kinds[o] == "dropdown" for o in d["outputs"])
    ]
    assert len(refreshers) >= 6  # chat 1, studio 1, arena 4
    for dependency in refreshers:
        triggers = {(kinds.get(target), event) for target, event in dependency["targets"]}
        assert {("textbox", "submit"), ("textbox", "blur"), ("button", "click")} <= triggers
        assert any(event == "load" for _, event in triggers)
        assert dependency["trigger_mode"] == "always_last"


def test_the_mounted_ui_polls_its_queue_calmly() -> None:
    """Gradio's queue shares the gateway's event loop: its 1 ms idle poll (a thousand
    wake-ups a second, ~5 % of a core with nobody on the page) is 10 ms here."""
    app = FastAPI()
    demo = ui.mount(app, gateway_url="http://127.0.0.1:9", api_key=None, require_key=False)
    assert demo._queue.sleep_when_free == ui.QUEUE_POLL_SECONDS == 0.01
    assert demo._queue.progress_update_sleep_when_free == ui.PROGRESS_POLL_SECONDS
