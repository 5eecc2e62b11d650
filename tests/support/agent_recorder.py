"""A stand-in for the APIs agents talk to, which records every request.

Claude Code speaks Anthropic's Messages API (``POST /v1/messages``, ``/v1/messages/count_tokens``,
``GET /v1/models``); Codex CLI speaks OpenAI's Responses API (``POST /v1/responses``); the gateway
speaks Chat Completions to an OpenAI-compatible upstream (``POST /v1/chat/completions``). This
app answers all three well enough for an agent to finish a task, tool round trip included, and
keeps every request (secrets left out). Pointed at by the CLIs directly, it shows what they
really send (``tests/fixtures/agents/``, written by ``python -m tests.support.agent_capture``);
behind the gateway, it is the upstream of the end-to-end test (``tests/test_agents_e2e.py``).

How it answers: a request that offers a shell tool (``Bash``, ``shell``, ``exec_command``,
``shell_command``) and whose last input is not a tool's result gets a call of that tool running
``command``; any other request gets a short text, which quotes the tool's output when the last
input is one. A chat request for a model whose name ends in ``broken`` gets the start of a
streamed answer and then the end of the body: no finish, no ``[DONE]`` (a mid-stream failure);
asked without streaming (Claude Code's fallback), half a JSON body.
"""

from __future__ import annotations

import itertools
import json
import threading
from typing import Any

from tests.support.servers import Message, Receive, Scope, Send

__all__ = ["SECRET_HEADERS", "SHELL_TOOLS", "AgentRecorder", "shell_arguments"]

# Headers whose values never go into a record (they carry keys or tokens).
SECRET_HEADERS = frozenset({"authorization", "x-api-key", "cookie", "proxy-authorization"})
# The names under which the CLIs offer "run a shell command", and how each takes it.
SHELL_TOOLS = ("Bash", "shell", "exec_command", "shell_command")
_ids = itertools.count(1)


def shell_arguments(tool: str, command: str) -> dict[str, Any]:
    """The arguments of ``tool`` that run ``command``: each CLI's tool has its own schema."""
    if tool == "Bash":
        return {"command": command, "description": "Run the command the task asks for"}
    if tool == "shell":
        return {"command": ["bash", "-lc", command]}
    if tool == "exec_command":
        return {"cmd": command}
    return {"command": command}  # shell_command


def _tool_names(body: dict[str, Any]) -> list[str]:
    names = []
    for tool in body.get("tools") or ():
        if isinstance(tool, dict):
            name = tool.get("name") or (tool.get("function") or {}).get("name")
            if isinstance(name, str):
                names.append(name)
    return names


def _last_tool_output(body: dict[str, Any]) -> str | None:
    """The text of the last input when it is a tool's result (either API), else None."""
    if isinstance(body.get("messages"), list) and body["messages"]:
        last = body["messages"][-1]
        content = last.get("content") if isinstance(last, dict) else None
        if isinstance(last, dict) and last.get("role") == "tool":  # chat completions
            if isinstance(content, list):
                return "".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
        results = [
            part
            for part in content or ()
            if isinstance(content, list) and isinstance(part, dict)
            if part.get("type") == "tool_result"
        ]
        if not results:
            return None
        inner = results[-1].get("content")
        if isinstance(inner, list):
            return "".join(p.get("text", "") for p in inner if isinstance(p, dict))
        return str(inner or "")
    items = body.get("input")
    last_item = items[-1] if isinstance(items, list) and items else None
    if isinstance(last_item, dict) and last_item.get("type") == "function_call_output":
        output = last_item.get("output")
        if isinstance(output, list):
            return "".join(p.get("text", "") for p in output if isinstance(p, dict))
        return str(output or "")
    return None


def _sse(event: str | None, data: dict[str, Any]) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


class AgentRecorder:
    """The ASGI app. ``exchanges`` holds one dict per request: method, path, query, headers
    (lower-cased, secrets left out), body (parsed JSON, or the text)."""

    def __init__(self, command: str = "echo recorded-marker", text: str = "Done.") -> None:
        self.command = command
        self.text = text
        self._lock = threading.Lock()
        self._exchanges: list[dict[str, Any]] = []

    @property
    def exchanges(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._exchanges)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"]
                await send({"type": kind + ".complete"})
                if kind == "lifespan.shutdown":
                    return
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            message: Message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1")
            for k, v in scope["headers"]
            if k.decode("latin-1").lower() not in SECRET_HEADERS
        }
        with self._lock:
            self._exchanges.append(
                {
                    "method": scope["method"],
                    "path": scope["path"],
                    "query": scope["query_string"].decode("latin-1"),
                    "headers": headers,
                    "body": body,
                }
            )
        path: str = scope["path"]
        request = body if isinstance(body, dict) else {}
        if scope["method"] == "GET" and path.rstrip("/").endswith("/models"):
            await _json(send, 200, _models())
        elif path.endswith("/messages/count_tokens"):
            await _json(send, 200, {"input_tokens": len(raw) // 4})
        elif path.endswith("/messages"):
            await self._messages(send, request)
        elif path.endswith("/responses"):
            await self._responses(send, request)
        elif path.endswith("/chat/completions"):
            await self._chat(send, request)
        else:
            error = {"type": "not_found_error", "message": f"no route {path}"}
            await _json(send, 404, {"type": "error", "error": error})

    def _plan(self, body: dict[str, Any]) -> tuple[str | None, str]:
        """(the shell tool to call, or None; the text to answer otherwise)."""
        output = _last_tool_output(body)
        if output is not None:
            return None, f"{self.text} The command printed: {output.strip()}"
        tool = next((name for name in _tool_names(body) if name in SHELL_TOOLS), None)
        return tool, self.text

    async def _messages(self, send: Send, body: dict[str, Any]) -> None:
        tool, text = self._plan(body)
        model = str(body.get("model", "unknown"))
        message_id = f"msg_{next(_ids):04d}"
        if tool is not None:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": f"toolu_{next(_ids):04d}",
                "name": tool,
                "input": shell_arguments(tool, self.command),
            }
            stop = "tool_use"
        else:
            block, stop = {"type": "text", "text": text}, "end_turn"
        usage = {"input_tokens": 10, "output_tokens": 5}
        whole = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [block],
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
        if not body.get("stream"):
            await _json(send, 200, whole)
            return
        start_block = {**block, "input": {}} if tool is not None else {"type": "text", "text": ""}
        delta = (
            {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            if tool is not None
            else {"type": "text_delta", "text": text}
        )
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": {**whole, "content": []}}),
            (
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": start_block},
            ),
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": 5},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        await _stream(send, b"".join(_sse(name, data) for name, data in events))

    async def _responses(self, send: Send, body: dict[str, Any]) -> None:
        tool, text = self._plan(body)
        response_id = f"resp_{next(_ids):04d}"
        item_id = f"item_{next(_ids):04d}"
        item: dict[str, Any]
        if tool is not None:
            item = {
                "type": "function_call",
                "id": item_id,
                "call_id": f"call_{next(_ids):04d}",
                "name": tool,
                "arguments": json.dumps(shell_arguments(tool, self.command)),
                "status": "completed",
            }
        else:
            part = {"type": "output_text", "text": text, "annotations": []}
            item = {
                "type": "message",
                "id": item_id,
                "role": "assistant",
                "status": "completed",
                "content": [part],
            }
        usage = {
            "input_tokens": 10,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 5,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 15,
        }
        response = {
            "id": response_id,
            "object": "response",
            "created_at": 1_700_000_000,
            "status": "completed",
            "model": body.get("model"),
            "output": [item],
            "usage": usage,
        }
        if not body.get("stream"):
            await _json(send, 200, response)
            return
        pending = {**response, "status": "in_progress", "output": [], "usage": None}
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": pending},
            {"type": "response.in_progress", "response": pending},
        ]
        if tool is not None:
            events += [
                {
                    "type": "response.output_item.added",
                    "output_index": 0,
                    "item": {**item, "arguments": "", "status": "in_progress"},
                },
                {
                    "type": "response.function_call_arguments.delta",
                    "item_id": item_id,
                    "output_index": 0,
                    "delta": item["arguments"],
                },
                {
                    "type": "response.function_call_arguments.done",
                    "item_id": item_id,
                    "output_index": 0,
                    "arguments": item["arguments"],
                },
            ]
        else:
            where = {"item_id": item_id, "output_index": 0, "content_index": 0}
            empty = {"type": "output_text", "text": "", "annotations": []}
            events += [
                {
                    "type": "response.output_item.added",
                    "output_index": 0,
                    "item": {**item, "status": "in_progress", "content": []},
                },
                {"type": "response.content_part.added", **where, "part": empty},
                {"type": "response.output_text.delta", **where, "delta": text},
                {"type": "response.output_text.done", **where, "text": text},
                {"type": "response.content_part.done", **where, "part": item["content"][0]},
            ]
        events += [
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            {"type": "response.completed", "response": response},
        ]
        data = b"".join(
            _sse(event["type"], {**event, "sequence_number": n}) for n, event in enumerate(events)
        )
        await _stream(send, data)

    async def _chat(self, send: Send, body: dict[str, Any]) -> None:
        tool, text = self._plan(body)
        model = str(body.get("model", "unknown"))
        base = {"id": f"chatcmpl-{next(_ids):04d}", "created": 1_700_000_000, "model": model}
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        message: dict[str, Any] = {"role": "assistant", "content": text if tool is None else None}
        if tool is not None:
            arguments = json.dumps(shell_arguments(tool, self.command))
            call = {"id": f"call_{next(_ids):04d}", "type": "function"}
            message["tool_calls"] = [{**call, "function": {"name": tool, "arguments": arguments}}]
        finish = "stop" if tool is None else "tool_calls"
        if not body.get("stream"):
            if model.endswith("broken"):  # the whole answer cut short: half a JSON body
                await _stream(send, b'{"id": "chatcmpl-broken", "choices": [{"index": 0, "mes')
                return
            choice = {"index": 0, "message": message, "finish_reason": finish}
            whole = {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
            await _json(send, 200, whole)
            return

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            payload = {**base, "object": "chat.completion.chunk", "choices": [choice]}
            return _sse(None, payload)

        if model.endswith("broken"):
            start = chunk({"role": "assistant", "content": "A half answer that "})
            await _stream(send, start + chunk({"content": "must never pass for a whole one"}))
            return
        if tool is None:
            data = chunk({"role": "assistant", "content": ""}) + chunk({"content": text})
        else:
            streamed = {**message["tool_calls"][0], "index": 0}
            data = chunk({"role": "assistant", "content": None, "tool_calls": [streamed]})
        data += chunk({}, finish)
        if (body.get("stream_options") or {}).get("include_usage"):
            data += _sse(
                None, {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            )
        await _stream(send, data + b"data: [DONE]\n\n")


def _models() -> dict[str, Any]:
    names = ("claude-sonnet-4-5", "claude-haiku-4-5", "gpt-5-codex")
    data = [{"type": "model", "id": name, "display_name": name} for name in names]
    return {"data": data, "has_more": False, "first_id": names[0], "last_id": names[-1]}


async def _json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _stream(send: Send, data: bytes) -> None:
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": data})
