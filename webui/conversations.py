"""The Studio's conversations as plain data, and how they are shown and sent.

The Studio keeps every conversation of a visitor in one JSON-able dict (a ``gr.State`` on the
server, mirrored in the browser's ``localStorage`` so it survives a reload). Messages are kept
in this module's own shape, not in the chat component's, so that the component's rendering
(thinking blocks, headers, footers) can change without touching what is stored:

* user: ``{"role": "user", "key", "text", "images": [server paths]}``
* assistant: ``{"role": "assistant", "key", "text", "reasoning", "thought", "tools":
  [{"name", "arguments"}], "model", "footer", "status": "pending" | "done", "feedback"}``
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from openai.types.chat import ChatCompletionMessageParam

from webui.content import uploaded_image, user_message
from webui.progress import Progress, duration

Store = dict[str, Any]
Message = dict[str, Any]

LABEL_CHARS = 40
STOPPED = "stopped"


def new_store() -> Store:
    return {"conversations": [], "active": ""}


def valid_store(value: object) -> Store:
    """The store from the browser, or a fresh one when it is missing or malformed (a store
    written by an older version, or edited by hand)."""
    if not isinstance(value, Mapping):
        return new_store()
    conversations = value.get("conversations")
    if not isinstance(conversations, list) or not all(
        isinstance(c, Mapping)
        and isinstance(c.get("key"), str)
        and isinstance(c.get("messages"), list)
        for c in conversations
    ):
        return new_store()
    store: Store = {"conversations": [dict(c) for c in conversations], "active": ""}
    active = value.get("active")
    if isinstance(active, str) and find(store, active) is not None:
        store["active"] = active
    settle(store)  # the tab closed mid-reply
    return store


def settle(store: Store) -> None:
    """Mark every reply still pending as stopped: none is streaming when this is called."""
    for conversation in store["conversations"]:
        for message in conversation["messages"]:
            if message.get("status") == "pending":
                message["status"] = "done"
                message["footer"] = message.get("footer") or STOPPED


def find(store: Store, key: str) -> dict[str, Any] | None:
    return next((c for c in store["conversations"] if c["key"] == key), None)


def active(store: Store) -> dict[str, Any] | None:
    return find(store, store["active"]) if store["active"] else None


def items(store: Store, *, busy: bool = False) -> list[dict[str, Any]]:
    """The conversation list's items; while a reply streams, the others cannot be chosen."""
    return [
        {"key": c["key"], "label": c["label"], "disabled": busy and c["key"] != store["active"]}
        for c in store["conversations"]
    ]


def start(store: Store) -> dict[str, Any]:
    """The active conversation, created (newest first) when there is none."""
    conversation = active(store)
    if conversation is None:
        conversation = {"key": uuid.uuid4().hex, "label": "New conversation", "messages": []}
        store["conversations"].insert(0, conversation)
        store["active"] = conversation["key"]
    return conversation


def rename(store: Store, key: str, label: str) -> bool:
    conversation = find(store, key)
    label = " ".join(label.split())[:200]
    if conversation is None or not label:
        return False
    conversation["label"] = label
    return True


def delete(store: Store, key: str) -> None:
    store["conversations"] = [c for c in store["conversations"] if c["key"] != key]
    if store["active"] == key:
        store["active"] = ""


def add_user(conversation: dict[str, Any], text: str, images: Iterable[str]) -> Message:
    message: Message = {
        "role": "user",
        "key": uuid.uuid4().hex,
        "text": text,
        "images": list(images),
    }
    if not any(m["role"] == "user" for m in conversation["messages"]):
        label = " ".join(text.split()) or "Image"
        conversation["label"] = label[:LABEL_CHARS] + ("…" if len(label) > LABEL_CHARS else "")
    conversation["messages"].append(message)
    return message


def add_reply(conversation: dict[str, Any], model: str) -> Message:
    message: Message = {
        "role": "assistant",
        "key": uuid.uuid4().hex,
        "text": "",
        "reasoning": "",
        "thought": None,
        "tools": [],
        "model": model,
        "footer": "",
        "status": "pending",
        "feedback": None,
    }
    conversation["messages"].append(message)
    return message


def take(message: Message, progress: Progress) -> None:
    """Copy what the stream brought so far into the stored reply."""
    message["model"] = progress.model
    message["text"] = progress.text
    message["reasoning"] = progress.reasoning
    if progress.reasoning:
        seconds = progress.thought_seconds() or 0.0
        message["thought"] = None if progress.thinking else f"Thought for {duration(seconds)}"
    message["tools"] = [
        {"name": call.name, "arguments": call.arguments} for call in progress.tool_calls.values()
    ]
    if not progress.streaming:
        message["status"] = "done"
        message["footer"] = progress.footer()


def to_openai(
    conversation: Mapping[str, Any], *, system_prompt: str = ""
) -> list[ChatCompletionMessageParam]:
    """What the model is sent: the text and images of every turn, but not thoughts, tool
    blocks or replies that failed before their first word."""
    messages: list[ChatCompletionMessageParam] = []
    if system_prompt.strip():
        messages.append({"role": "system", "content": system_prompt})
    for message in conversation["messages"]:
        if message["role"] == "user":
            messages.append(user_message(message.get("text", ""), message.get("images", [])))
        elif message.get("text"):
            messages.append({"role": "assistant", "content": message["text"]})
    return messages


def render(conversation: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The conversation as ``pro.Chatbot`` messages; an empty list shows the welcome screen."""
    if conversation is None:
        return []
    return [_render(message) for message in conversation["messages"]]


def _render(message: Message) -> dict[str, Any]:
    if message["role"] == "user":
        content: list[dict[str, Any]] = []
        images = [str(f) for p in message.get("images", []) if (f := uploaded_image(p))]
        if images:
            content.append({"type": "file", "content": images})
        if message.get("images") and not images:
            content.append({"type": "text", "content": "*(an image no longer on the server)*"})
        content.append({"type": "text", "content": message.get("text", "")})
        return {"role": "user", "key": message["key"], "content": content}
    pending = message.get("status") == "pending"
    content = []
    if message.get("reasoning"):
        thinking = message.get("thought") is None and pending
        content.append(
            {
                "type": "tool",
                "copyable": False,
                "editable": False,
                "content": message["reasoning"],
                "options": {
                    "title": "Thinking…" if thinking else message.get("thought") or "Thought",
                    "status": "pending" if thinking else "done",
                },
            }
        )
    for tool in message.get("tools", []):
        content.append(
            {
                "type": "tool",
                "copyable": True,
                "editable": False,
                "content": f"```json\n{_pretty(tool.get('arguments', ''))}\n```",
                "options": {"title": f"🛠 {tool.get('name') or 'tool call'}", "status": "done"},
            }
        )
    if message.get("text") or not content:
        content.append({"type": "text", "content": message.get("text", "")})
    return {
        "role": "assistant",
        "key": message["key"],
        "header": message.get("model", ""),
        "footer": message.get("footer", ""),
        "status": "pending" if pending else "done",
        "loading": pending and not message.get("text") and not message.get("reasoning"),
        "meta": {"feedback": message.get("feedback")},
        "content": content,
    }


def _pretty(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments), indent=2, ensure_ascii=False)
    except ValueError:
        return arguments


def edited_text(value: object) -> str:
    """The text of a message as the chat component hands it back after an edit."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        if value.get("type", "text") != "text":
            return ""
        return edited_text(value.get("content"))
    if isinstance(value, list):
        return "".join(edited_text(part) for part in value)
    return ""
