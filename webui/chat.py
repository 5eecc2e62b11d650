"""The Chat page: Gradio's own ``ChatInterface``, kept light so it is usable within seconds.

Images go to the model as image parts; the conversation list is ``save_history`` (in the
browser); a reply shows its reasoning as a collapsible thought above the answer, its tool calls
as collapsible blocks, and ends with a line that tells how its stream went (model, TTFT, tok/s,
token usage) and a mark when it failed or was stopped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import gradio as gr
from gradio.components.chatbot import MetadataDict

from webui.content import chat_history_messages
from webui.gateway import KEY_MISSING, Gateway
from webui.progress import Progress, duration, follow
from webui.settings import Settings, settings_panel

logger = logging.getLogger("llm_gateway.ui")

STOPPED_MARK = "⚠ stopped"
ERROR_MARK = "⚠ error"


def render(progress: Progress) -> list[gr.ChatMessage]:
    """The reply as chat messages: thought, answer, tool calls, then how its stream went.

    While streaming, the last message is ``pending`` (Gradio shows a spinner); the Stop
    button's handler looks for that status to mark the reply as stopped.
    """
    messages: list[gr.ChatMessage] = []
    if progress.reasoning:
        seconds = progress.thought_seconds()
        thinking = progress.thinking
        title = "Thinking…" if thinking else f"Thought for {duration(seconds or 0.0)}"
        thought: MetadataDict = {"title": title, "status": "pending" if thinking else "done"}
        messages.append(gr.ChatMessage(content=progress.reasoning, metadata=thought))
    if progress.text:
        messages.append(gr.ChatMessage(content=progress.text))
    for call in progress.tool_calls.values():
        messages.append(
            gr.ChatMessage(
                content=f"```json\n{_pretty(call.arguments)}\n```",
                metadata={"title": f"🛠 {call.name or 'tool call'}", "status": "done"},
            )
        )
    metadata: MetadataDict = {"title": progress.model, "log": progress.footer()}
    if progress.error is not None:
        metadata["title"] = f"{ERROR_MARK}: {progress.error}"
        started = progress.first_token is not None
        metadata["log"] = f"{progress.model} · {progress.stats()}" if started else progress.model
    else:
        metadata["status"] = "pending" if progress.streaming else "done"
    messages.append(gr.ChatMessage(content=progress.error or "", metadata=metadata))
    return messages


def _pretty(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments), indent=2, ensure_ascii=False)
    except ValueError:
        return arguments


def mark_stopped(chat: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mark the replies that are still streaming as stopped, in place."""
    for message in chat:
        metadata = message.get("metadata") or {}
        if metadata.get("status") == "pending":
            metadata.update(title=f"{STOPPED_MARK} · {metadata.get('title', '')}", status="done")
            message["metadata"] = metadata
    return chat


def build(gateway: Gateway) -> None:
    """The Chat page's components, inside the current Blocks context."""

    async def chat(
        message: str | dict[str, Any],
        history: list[dict[str, Any]],
        model: str | None,
        system_prompt: str,
        temperature: float,
        max_tokens: int | None,
        api_key: str = "",
    ) -> AsyncIterator[gr.ChatMessage | list[gr.ChatMessage]]:
        # A reply that never finished was stopped. The Stop handler marks what is shown, but
        # the history is a copy taken when the reply was cancelled; its messages are the ones
        # shown from now on, so they are marked too.
        mark_stopped(history)
        if gateway.missing_key(api_key):
            yield gr.ChatMessage(content="", metadata={"title": KEY_MISSING})
            return
        client = gateway.client(api_key)
        progress = Progress(model=model or "")
        if not model:
            models, error = await gateway.models_or_error(api_key)
            if not models:
                progress.error, progress.ended = error or "the gateway serves no models", 0.0
                yield render(progress)
                return
            progress.model = models[0]
        reader = progress.read(
            client,
            messages=chat_history_messages(message, history, system_prompt=system_prompt),
            temperature=temperature,
            max_tokens=int(max_tokens) if max_tokens else None,
        )
        async for _ in follow([(progress, reader)]):
            yield render(progress)

    settings = Settings.defaults()
    additional_inputs: list[str | gr.components.Component]
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=260, variant="panel", elem_id="settings"):
            panel = settings_panel(gateway, settings)
            additional_inputs = [*panel.inputs]
        with gr.Column(scale=3, elem_id="chat"):
            chatbot = gr.Chatbot(
                label="Chat",
                height=480,
                buttons=["copy"],
                editable="user",
                feedback_options=("Like", "Dislike"),
            )
            chat_ui = gr.ChatInterface(
                chat,
                multimodal=True,
                chatbot=chatbot,
                textbox=gr.MultimodalTextbox(
                    file_types=["image"],
                    file_count="multiple",
                    placeholder="Message the gateway; attach images with the paperclip",
                    sources=["upload"],
                    submit_btn=True,
                    stop_btn=True,  # off by default on a textbox of one's own
                ),
                additional_inputs=additional_inputs,
                concurrency_limit=None,
                analytics_enabled=False,
                fill_height=True,
                save_history=True,
                editable=True,
            )
    # A cancelled generator cannot yield again, so Stop marks the reply here.
    chat_ui.textbox.stop(
        mark_stopped,
        [chat_ui.chatbot],
        [chat_ui.chatbot],
        queue=False,
        api_visibility="undocumented",
    )
    chat_ui.chatbot.like(_feedback, None, None, api_visibility="undocumented", queue=False)
    panel.wire()


def _feedback(data: gr.LikeData) -> None:
    """A like or dislike goes to the server log (without the message): what operators can see
    of how a model does, with no store to run for it."""
    logger.info("chat feedback: %s message %s", "liked" if data.liked else "disliked", data.index)
