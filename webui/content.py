"""Conversations in OpenAI's shape: text and images, from what the chat components hold.

Images the visitor uploaded sit in Gradio's upload folder on this server; they travel to the
model as ``image_url`` parts with a ``data:`` URL, since the gateway (and the upstream behind
it) cannot reach this machine's files. Only files inside that folder are ever read, so a crafted
history cannot make the UI send ``/etc/passwd`` to a model.
"""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gradio.utils import get_upload_folder
from openai.types.chat import (
    ChatCompletionContentPartParam,
    ChatCompletionMessageParam,
)

MAX_IMAGE_BYTES = 8 * 1024 * 1024
"""Larger images are left out: as a data URL one would be a third larger again, in every turn."""


def uploaded_image(path: str) -> Path | None:
    """The file, if it is an image in Gradio's upload folder that is still there."""
    try:
        file = Path(path).resolve(strict=True)
        root = Path(get_upload_folder()).resolve()
    except OSError:
        return None  # gone, e.g. a conversation kept in the browser across a server restart
    mime, _ = mimetypes.guess_type(file.name)
    if not file.is_relative_to(root) or not (mime or "").startswith("image/"):
        return None
    return file if file.is_file() else None


def image_part(path: str) -> ChatCompletionContentPartParam | None:
    """An ``image_url`` part for an uploaded image, or ``None`` when it cannot be one."""
    file = uploaded_image(path)
    if file is None or file.stat().st_size > MAX_IMAGE_BYTES:
        return None
    mime, _ = mimetypes.guess_type(file.name)
    data = base64.b64encode(file.read_bytes()).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}


def user_message(text: str, images: Iterable[str]) -> ChatCompletionMessageParam:
    """A user turn: plain text alone, or a list of parts when images come with it."""
    parts = [part for part in map(image_part, images) if part is not None]
    if not parts:
        return {"role": "user", "content": text}
    if text:
        parts.insert(0, {"type": "text", "text": text})
    return {"role": "user", "content": parts}


def file_path(item: object) -> str | None:
    """The server path in one of Gradio's file shapes: a path, ``{"path"}``, ``{"file": {…}}``."""
    if isinstance(item, str):
        return item
    if isinstance(item, Mapping):
        if isinstance(item.get("file"), Mapping):
            return file_path(item["file"])
        path = item.get("path")
        return path if isinstance(path, str) else None
    return None


def chat_history_messages(
    message: str | Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    *,
    system_prompt: str = "",
) -> list[ChatCompletionMessageParam]:
    """The Chat page's conversation in OpenAI's shape, from Gradio's history and the new message.

    ``message`` is a string, or ``{"text", "files"}`` from the multimodal textbox. History comes
    in two shapes: content as a plain string or file (gradio_client calls), or as a list of
    ``{"type": "text" | "file", …}`` blocks (the browser). Messages with a title in their metadata
    (thoughts, tool calls and stream lines this UI adds) are not part of the conversation.
    Consecutive user messages (an image, then its text) become one turn.
    """
    messages: list[ChatCompletionMessageParam] = []
    if system_prompt.strip():
        messages.append({"role": "system", "content": system_prompt})
    texts: list[str] = []
    images: list[str] = []

    def flush_user() -> None:
        turn = user_message("\n".join(texts), images)
        if turn["content"]:  # not an image that is gone or may not be read, alone
            messages.append(turn)
        texts.clear()
        images.clear()

    for item in history:
        metadata = item.get("metadata") or {}
        role = item.get("role")
        if metadata.get("title") or role not in ("user", "assistant"):
            continue
        content = item.get("content")
        blocks = content if isinstance(content, list) else [content]
        text = "".join(_text(block) for block in blocks)
        if role == "user":
            texts.extend([text] if text else [])
            images.extend(p for block in blocks if (p := _file(block)) is not None)
            continue
        flush_user()
        if text:
            messages.append({"role": "assistant", "content": text})
    flush_user()
    if isinstance(message, Mapping):
        text = str(message.get("text") or "")
        files = [p for f in message.get("files") or () if (p := file_path(f)) is not None]
    else:
        text, files = message, []
    messages.append(user_message(text, files))
    return messages


def _text(block: object) -> str:
    if isinstance(block, str):
        return block
    if isinstance(block, Mapping) and block.get("type", "text") == "text":
        text = block.get("text")
        return text if isinstance(text, str) else ""
    return ""


def _file(block: object) -> str | None:
    if isinstance(block, Mapping) and (block.get("type") == "file" or "path" in block):
        return file_path(block)
    return None
