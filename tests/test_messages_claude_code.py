"""What Claude Code really sends (``tests/fixtures/agents``, captured from the real CLI) through
``/v1/messages`` and ``count_tokens``: in front of echo, and of the anthropic provider, whose
stand-in shows what reaches Anthropic of it.

Claude Code asks for its own model names (``claude-sonnet-4-6``, and ``claude-haiku-4-5`` for
background calls); here, as an operator would, plain aliases without a slash map them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from providers.testing import check_messages_stream, parse_messages_sse
from tests.conftest import settings
from tests.support.anthropic_upstream import AnthropicUpstream, serve_anthropic_upstream
from tests.support.servers import serve_in_thread

FIXTURES = Path(__file__).parent / "fixtures" / "agents"
KEY = "gw-key-claude-code"
MESSAGES = ["claude_code_messages_tool_call", "claude_code_messages_tool_result"]
MESSAGES += ["claude_code_small_model_title"]
COUNTS = ["claude_code_count_tokens", "claude_code_count_tokens_tools"]


def fixture(name: str) -> dict[str, Any]:
    captured: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return captured


def send(url: str, captured: dict[str, Any], *, model: str | None = None) -> httpx.Response:
    """The captured request again, as Claude Code sent it (its headers, its query)."""
    headers = {k: v for k, v in captured["headers"].items() if k not in ("host", "content-length")}
    headers["authorization"] = f"Bearer {KEY}"  # left out of the capture
    body = dict(captured["body"])
    if model is not None:
        body["model"] = model
    return httpx.post(
        f"{url}{captured['path']}?{captured['query']}", json=body, headers=headers, timeout=10
    )


@pytest.fixture(scope="module")
def claude() -> Iterator[tuple[str, AnthropicUpstream]]:
    with serve_anthropic_upstream() as served:
        yield served


@pytest.fixture(scope="module")
def gateway(claude: tuple[str, AnthropicUpstream]) -> Iterator[str]:
    config = settings(
        api_keys=[KEY],
        providers={
            "echo": {"type": "echo"},
            "claude": {
                "type": "anthropic",
                "base_url": claude[0],
                "api_key": "sk-ant-api03-canary-0123456789abcdefXYZ",
                "models": ["thinking", "text"],
                "adaptive_thinking_models": ["thinking"],
                "max_retries": 0,
            },
        },
        aliases={"claude-sonnet-4-6": "echo/echo", "claude-haiku-4-5": "echo/echo"},
    )
    with serve_in_thread(create_app(config)) as url:
        yield url


@pytest.mark.parametrize("name", MESSAGES)
def test_claude_codes_requests_are_served(gateway: str, name: str) -> None:
    captured = fixture(name)
    response = send(gateway, captured)
    assert response.status_code == 200, response.text
    if captured["body"].get("stream"):
        summary = check_messages_stream(parse_messages_sse(response.text))
        assert summary.stop_reason == "end_turn" and summary.text
        assert summary.message["model"] == captured["body"]["model"]
    else:
        assert response.json()["content"][0]["type"] == "text"


@pytest.mark.parametrize("name", MESSAGES)
def test_claude_codes_requests_reach_anthropic_whole(
    gateway: str, claude: tuple[str, AnthropicUpstream], name: str
) -> None:
    captured = fixture(name)
    claude[1].reset()
    response = send(gateway, captured, model="claude/thinking")
    assert response.status_code == 200, response.text
    sent = claude[1].requests[-1].body
    body = captured["body"]
    assert sent["max_tokens"] == body["max_tokens"]
    assert [t["name"] for t in sent.get("tools", [])] == [t["name"] for t in body.get("tools", [])]
    assert len(sent["messages"]) == len(body["messages"])
    system = "\n\n".join(b["text"] for b in body["system"])
    assert sent["system"][0]["text"] == system
    if body["thinking"]["type"] == "adaptive":
        assert sent["thinking"] == {"type": "adaptive"}
        assert sent["output_config"]["effort"] == body["output_config"]["effort"]
    else:
        assert "thinking" not in sent
    if "format" in body.get("output_config", {}):
        assert sent["output_config"]["format"] == body["output_config"]["format"]
    for turn in body["messages"]:  # every tool block and result, with the ids Claude Code gave
        for block in turn["content"] if isinstance(turn["content"], list) else ():
            if block["type"] == "tool_use":
                assert {"type": "tool_use", **{k: block[k] for k in ("id", "name", "input")}} in [
                    b for m in sent["messages"] for b in m["content"]
                ]
            if block["type"] == "tool_result":
                results = [b for m in sent["messages"] for b in m["content"]]
                assert any(
                    b.get("tool_use_id") == block["tool_use_id"]
                    and b.get("content") == block["content"]
                    for b in results
                )


@pytest.mark.parametrize("name", COUNTS)
def test_claude_codes_count_tokens(gateway: str, name: str) -> None:
    captured = fixture(name)
    response = send(gateway, captured)
    assert response.status_code == 200, response.text
    counted = response.json()["input_tokens"]
    text = json.dumps(captured["body"]["messages"]) + json.dumps(captured["body"]["tools"])
    assert 0 < counted <= len(text)  # fewer tokens than characters, and never nothing


def test_count_tokens_grows_with_the_tools(gateway: str) -> None:
    bare, tools = (send(gateway, fixture(n)).json()["input_tokens"] for n in COUNTS)
    assert bare < tools
