"""The Studio page: modelscope_studio's chatbot, with everything wired by hand.

A welcome screen with grouped prompt cards; conversations (new, switch, rename, delete) kept in
the browser across reloads; replies with a thinking block that is open while the model reasons
and then collapses to "Thought for N s", markdown with code, math and tables, tool calls as
collapsible blocks; images uploaded, pasted or dropped; per-message copy, edit, delete, retry and
like/dislike; Stop; a model picker and settings; a header naming the model and a footer with
TTFT, tok/s, tokens, cost when known and how the stream ended.

Stop has a race to avoid: Gradio cancels the streaming generator only after the Stop handler
returns, so a chunk already on its way could overwrite "stopped". The handler marks the reply
stopped on the server (the generator yields nothing after that) and a follow-up step redraws
the conversation from the server's state, which is the last word in the browser.
"""

# A page layout nests components one in another; one `with` per level reads as the page does.
# ruff: noqa: SIM117

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
import modelscope_studio.components.antd as antd
import modelscope_studio.components.antdx as antdx
import modelscope_studio.components.base as ms
import modelscope_studio.components.pro as pro
from modelscope_studio.components.pro.chatbot import (
    ChatbotActionConfig,
    ChatbotBotConfig,
    ChatbotMarkdownConfig,
    ChatbotUserConfig,
    ChatbotWelcomeConfig,
)
from modelscope_studio.components.pro.multimodal_input import MultimodalInputUploadConfig

from webui import conversations as conv
from webui.gateway import Gateway
from webui.progress import Progress, follow
from webui.settings import Settings, settings_panel

logger = logging.getLogger("llm_gateway.ui")

STORAGE_KEY = "llm-gateway-studio"
STORAGE_SECRET = "llm-gateway-studio-v1"
"""Gradio sends a BrowserState's secret to the page, so it protects nothing; a fixed one keeps
the conversations readable after the server restarts (a random one per start would not)."""
PROMPTS = [
    {
        "key": "explain",
        "label": "Explain",
        "description": "Understand something",
        "children": [
            {"key": "explain-1", "description": "Explain how a transformer model works"},
            {"key": "explain-2", "description": "What is the difference between TCP and UDP?"},
        ],
    },
    {
        "key": "code",
        "label": "Code",
        "description": "Write or fix code",
        "children": [
            {
                "key": "code-1",
                "description": "Write a Python function that merges two sorted lists",
            },
            {
                "key": "code-2",
                "description": "Show a SQL query with a window function, and a table",
            },
        ],
    },
    {
        "key": "math",
        "label": "Math",
        "description": "Work it out",
        "children": [
            {"key": "math-1", "description": "Prove that the square root of 2 is irrational"},
            {"key": "math-2", "description": "Solve x^2 - 5x + 6 = 0 step by step"},
        ],
    },
]
CSS = """
#studio { height: calc(100vh - 120px); min-height: 560px; }
#studio .studio-conversations { height: 100%; overflow: auto; }
#studio .studio-chat { height: 100%; }
#studio .studio-chat .studio-messages { flex: 1; min-height: 0; }
"""
REDRAW_INTERVAL = 0.1
"""The Studio redraws a streaming reply at most ten times a second: each redraw re-renders the
reply's markdown in the browser, and a tab busy rendering is slow to react to Stop."""
BUSY_BOT_ACTIONS = ["edit", "retry", "delete"]
BUSY_USER_ACTIONS = ["edit", "delete"]


def _confirm(title: str, description: str) -> dict[str, Any]:
    return {"title": title, "description": description, "okButtonProps": {"danger": True}}


def user_config(*, busy: bool = False) -> ChatbotUserConfig:
    return ChatbotUserConfig(
        actions=[
            "copy",
            "edit",
            ChatbotActionConfig(
                action="delete",
                popconfirm=_confirm("Delete the message", "The message will be gone for good."),
            ),
        ],
        disabled_actions=BUSY_USER_ACTIONS if busy else None,
    )


def bot_config(*, busy: bool = False) -> ChatbotBotConfig:
    return ChatbotBotConfig(
        actions=[
            "copy",
            "like",
            "dislike",
            "edit",
            ChatbotActionConfig(
                action="retry",
                popconfirm=_confirm(
                    "Regenerate the reply", "This reply and every message after it are replaced."
                ),
            ),
            ChatbotActionConfig(
                action="delete",
                popconfirm=_confirm("Delete the message", "The message will be gone for good."),
            ),
        ],
        disabled_actions=BUSY_BOT_ACTIONS if busy else None,
    )


@dataclass
class _Live:
    """A reply streaming for one browser session: what Stop needs to find it."""

    conversation: str
    message: conv.Message
    progress: Progress


@dataclass
class _Replies:
    """The replies streaming now, by Gradio session."""

    by_session: dict[str, _Live] = field(default_factory=dict)

    def stop(self, session: str) -> _Live | None:
        live = self.by_session.get(session)
        if live is not None:
            live.progress.stopped = True
        return live


def _session(request: gr.Request | None) -> str:
    return (request.session_hash if request is not None else None) or ""


def build(gateway: Gateway) -> None:
    """The Studio page's components and events, inside the current Blocks context."""
    replies = _Replies()
    settings = Settings.defaults()

    state = gr.State(conv.new_store())
    store = gr.BrowserState(conv.new_store(), storage_key=STORAGE_KEY, secret=STORAGE_SECRET)
    target = gr.State("")  # the conversation a rename or delete dialog is about

    with ms.Application(), antdx.XProvider(locale="en_US"), ms.AutoLoading():
        with antd.Row(gutter=[16, 16], wrap=False, elem_id="studio"):
            with (
                antd.Col(
                    md={"flex": "0 0 240px", "span": 24, "order": 0},
                    span=0,
                    elem_classes="studio-conversations",
                ),
                antd.Flex(vertical=True, gap="small"),
            ):
                with antd.Button(
                    value=None,
                    color="primary",
                    variant="filled",
                    block=True,
                    elem_id="studio-new",
                ) as new_btn:
                    ms.Text("New conversation")
                    with ms.Slot("icon"):
                        antd.Icon("PlusOutlined")
                with antdx.Conversations(elem_id="studio-conversations") as conversations:
                    with ms.Slot("menu.items"):
                        with antd.Menu.Item(label="Rename", key="rename") as rename_item:
                            with ms.Slot("icon"):
                                antd.Icon("EditOutlined")
                        with (
                            antd.Menu.Item(
                                label="Delete", key="delete", danger=True
                            ) as delete_item,
                            ms.Slot("icon"),
                        ):
                            antd.Icon("DeleteOutlined")
            with antd.Col(flex=1, elem_style={"height": "100%", "minWidth": 0}):
                with antd.Flex(vertical=True, gap="middle", elem_classes="studio-chat"):
                    chatbot = pro.Chatbot(
                        elem_id="studio-chatbot",
                        elem_classes="studio-messages",
                        height="100%",
                        welcome_config=ChatbotWelcomeConfig(
                            variant="borderless",
                            title="LLM Gateway Studio",
                            description="Chat with any model the gateway serves. "
                            "Attach, paste or drop images; pick a prompt to start.",
                            prompts={
                                "title": "Try one of these",
                                "wrap": True,
                                "styles": {"item": {"flex": 1}},
                                "items": PROMPTS,
                            },
                        ),
                        markdown_config=ChatbotMarkdownConfig(),
                        user_config=user_config(),
                        bot_config=bot_config(),
                    )
                    with (
                        pro.MultimodalInput(
                            elem_id="studio-input",
                            placeholder="Message the model (Shift+Enter for a new line)",
                            upload_config=MultimodalInputUploadConfig(
                                accept="image/*",
                                multiple=True,
                                max_count=4,
                                allow_paste_file=True,
                                fullscreen_drop=True,
                                upload_button_tooltip="Attach images",
                            ),
                        ) as prompt,
                        ms.Slot("prefix"),
                        antd.Tooltip(title="Clear this conversation"),
                    ):
                        with antd.Popconfirm(
                            title="Clear this conversation?",
                            description="Its messages will be gone for good.",
                            ok_button_props={"danger": True},
                        ) as clear_confirm:
                            with antd.Button(value=None, type="text", elem_id="studio-clear"):
                                with ms.Slot("icon"):
                                    antd.Icon("ClearOutlined")
            with antd.Col(flex="0 0 280px", elem_id="studio-settings"):
                with gr.Column(variant="panel"):
                    panel = settings_panel(gateway, settings)
        with antd.Modal(title="Rename the conversation", elem_id="studio-rename") as rename_modal:
            rename_input = antd.Input(elem_id="studio-rename-input")
        with antd.Modal(
            title="Delete the conversation?",
            ok_text="Delete",
            ok_button_props={"danger": True},
            elem_id="studio-delete",
        ) as delete_modal:
            delete_text = ms.Text("")

    def view(s: conv.Store, *, busy: bool = False) -> tuple[Any, Any, Any]:
        """Chatbot, conversation list and their lock state, drawn from the store."""
        return (
            gr.update(
                value=conv.render(conv.active(s)),
                user_config=user_config(busy=busy),
                bot_config=bot_config(busy=busy),
            ),
            gr.update(items=conv.items(s, busy=busy), active_key=s["active"] or None),
            gr.update(disabled=busy),
        )

    # -- conversations ---------------------------------------------------------------------
    def restore(saved: Any) -> tuple[Any, ...]:
        s = conv.valid_store(saved)
        return (s, s, *view(s))

    def new_conversation(s: conv.Store) -> tuple[Any, ...]:
        s["active"] = ""
        return (s, s, *view(s))

    def switch(s: conv.Store, e: gr.EventData) -> tuple[Any, ...]:
        key = e._data["payload"][0]
        if not isinstance(key, str) or conv.find(s, key) is None or key == s["active"]:
            return (gr.skip(),) * 5
        s["active"] = key
        return (s, s, *view(s))

    def menu(s: conv.Store, e: gr.EventData) -> tuple[Any, ...]:
        key, action = e._data["payload"][0]["key"], e._data["payload"][1]["key"]
        found = conv.find(s, key)
        if found is None:
            return (gr.skip(),) * 5
        if action == "rename":
            return key, gr.update(open=True), gr.update(value=found["label"]), gr.skip(), gr.skip()
        return key, gr.skip(), gr.skip(), gr.update(open=True), gr.update(value=found["label"])

    def do_rename(s: conv.Store, key: str, label: str) -> tuple[Any, ...]:
        conv.rename(s, key, label or "")
        return (s, s, *view(s), gr.update(open=False))

    def do_delete(s: conv.Store, key: str) -> tuple[Any, ...]:
        conv.delete(s, key)
        return (s, s, *view(s), gr.update(open=False))

    def close() -> Any:
        return gr.update(open=False)

    def clear(s: conv.Store) -> tuple[Any, ...]:
        found = conv.active(s)
        if found is not None:
            found["messages"] = []
        return (s, s, *view(s))

    def apply_prompt(value: Any, e: gr.EventData) -> Any:
        text = e._data["payload"][0]["value"].get("description", "")
        files = (value or {}).get("files") or [] if isinstance(value, dict) else []
        return gr.update(value={"text": text, "files": files})

    # -- messages -------------------------------------------------------------------------
    def add_user(value: Any, s: conv.Store) -> tuple[Any, ...]:
        value = value if isinstance(value, dict) else {}
        text = str(value.get("text") or "").strip()
        files = [f for f in value.get("files") or [] if isinstance(f, str)]
        if not text and not files:
            raise gr.Error("Type a message or attach an image first.", print_exception=False)
        conversation = conv.start(s)
        conv.add_user(conversation, text, files)
        return (s, s, *view(s, busy=True), gr.update(value=None, loading=True))

    def edit(s: conv.Store, value: list[dict[str, Any]], e: gr.EventData) -> Any:
        index = e._data["payload"][0]["index"]
        conversation = conv.active(s)
        if conversation is None or not 0 <= index < len(conversation["messages"]):
            return gr.skip(), gr.skip()
        edited = value[index]["content"] if index < len(value) else ""
        conversation["messages"][index]["text"] = conv.edited_text(edited)
        return s, s

    def delete_message(s: conv.Store, e: gr.EventData) -> tuple[Any, ...]:
        index = e._data["payload"][0]["index"]
        conversation = conv.active(s)
        if conversation is not None and 0 <= index < len(conversation["messages"]):
            del conversation["messages"][index]
        return (s, s, *view(s))

    def like(s: conv.Store, e: gr.EventData) -> Any:
        payload = e._data["payload"][0]
        conversation = conv.active(s)
        index = payload["index"]
        if conversation is None or not 0 <= index < len(conversation["messages"]):
            return gr.skip(), gr.skip()
        message = conversation["messages"][index]
        feedback = "like" if payload.get("liked") else "dislike"
        message["feedback"] = None if message.get("feedback") == feedback else feedback
        logger.info("studio feedback: %s %s", message.get("model"), message["feedback"])
        return s, s

    def truncate(s: conv.Store, e: gr.EventData) -> tuple[Any, ...]:
        index = e._data["payload"][0]["index"]
        conversation = conv.active(s)
        if conversation is None or not 0 <= index < len(conversation["messages"]):
            raise gr.Error("That message is gone.", print_exception=False)
        del conversation["messages"][index:]
        return (s, s, *view(s, busy=True), gr.update(loading=True))

    async def reply(
        s: conv.Store,
        model: str | None,
        system_prompt: str,
        temperature: float,
        max_tokens: float | None,
        api_key: str,
        request: gr.Request,
    ) -> AsyncIterator[tuple[Any, Any, Any]]:
        conversation = conv.active(s)
        if conversation is None or not conversation["messages"]:
            return
        message = conv.add_reply(conversation, model or "")
        progress = Progress(model=model or "")
        session = _session(request)
        if gateway.missing_key(api_key):
            progress.error, progress.ended = "enter your API key in the settings first", 0.0
        elif not model:
            models, error = await gateway.models_or_error(api_key)
            if models:
                progress.model = models[0]
            else:
                progress.error, progress.ended = error or "the gateway serves no models", 0.0
        if progress.error is not None:
            conv.take(message, progress)
            yield gr.update(value=conv.render(conversation)), s, s
            return
        replies.by_session[session] = _Live(conversation["key"], message, progress)
        reader = progress.read(
            gateway.client(api_key),
            messages=conv.to_openai(
                {"messages": conversation["messages"][:-1]}, system_prompt=system_prompt
            ),
            temperature=temperature,
            max_tokens=int(max_tokens) if max_tokens else None,
        )
        try:
            async for _ in follow([(progress, reader)], interval=REDRAW_INTERVAL):
                if progress.stopped:
                    return  # Stop has drawn the last state; a late chunk must not
                conv.take(message, progress)
                # The server's state gets the reply at once, so that Stop finds it there.
                yield gr.update(value=conv.render(conversation)), s, gr.skip()
            yield gr.skip(), s, s
        finally:
            live = replies.by_session.get(session)
            if live is not None and live.progress is progress:
                del replies.by_session[session]

    def stop(s: conv.Store, request: gr.Request) -> Any:
        """Mark the reply stopped, at once and outside the queue: Gradio cancels the stream
        (and so the upstream request) only once this returns. The conversation is redrawn
        in the next step, in the queue, whose file links keep the mount path."""
        live = replies.stop(_session(request))
        found = None if live is None else conv.find(s, live.conversation)
        if live is not None and found is not None:
            keys = [m["key"] for m in found["messages"]]
            if live.message["key"] in keys:
                message = found["messages"][keys.index(live.message["key"])]
            else:  # stopped before the reply's first redraw reached the server's state
                message = live.message
                found["messages"].append(message)
            conv.take(message, live.progress)
            message["status"] = "done"
            message["footer"] = f"{live.progress.stats()} · {conv.STOPPED}"
        conv.settle(s)  # a reply stopped before it had started streaming
        return s

    def redraw(s: conv.Store) -> tuple[Any, ...]:
        return (s, *view(s), gr.update(loading=False))

    def unlock(s: conv.Store) -> tuple[Any, ...]:
        return (*view(s), gr.update(loading=False))

    # -- wiring ---------------------------------------------------------------------------
    shown = [chatbot, conversations, new_btn]
    saved = [state, store]
    events: dict[str, Any] = {"api_visibility": "undocumented", "concurrency_limit": None}
    gr.context.get_blocks_context().root_block.load(  # type: ignore[union-attr]
        restore, [store], [*saved, *shown], **events
    )
    new_btn.click(new_conversation, [state], [*saved, *shown], **events)
    conversations.active_change(switch, [state], [*saved, *shown], **events)
    conversations.menu_click(
        menu, [state], [target, rename_modal, rename_input, delete_modal, delete_text], **events
    )
    rename_modal.ok(
        do_rename, [state, target, rename_input], [*saved, *shown, rename_modal], **events
    )
    rename_modal.cancel(close, None, [rename_modal], **events)
    delete_modal.ok(do_delete, [state, target], [*saved, *shown, delete_modal], **events)
    delete_modal.cancel(close, None, [delete_modal], **events)
    clear_confirm.confirm(clear, [state], [*saved, *shown], **events)
    chatbot.welcome_prompt_select(apply_prompt, [prompt], [prompt], **events)
    chatbot.edit(edit, [state, chatbot], saved, **events)
    chatbot.delete(delete_message, [state], [*saved, *shown], **events)
    chatbot.like(like, [state], saved, **events)

    settings_inputs = panel.inputs
    submitted = prompt.submit(add_user, [prompt, state], [*saved, *shown, prompt], **events)
    streaming = submitted.success(
        reply, [state, *settings_inputs], [chatbot, state, store], **events
    )
    streaming.then(unlock, [state], [*shown, prompt], **events)
    retried = chatbot.retry(truncate, [state], [*saved, *shown, prompt], **events)
    restreaming = retried.success(
        reply, [state, *settings_inputs], [chatbot, state, store], **events
    )
    restreaming.then(unlock, [state], [*shown, prompt], **events)
    stopped = prompt.cancel(
        stop, [state], [state], cancels=[streaming, restreaming], queue=False, **events
    )
    # The last word: whatever redraw of the stream was still on its way, this one comes after.
    stopped.then(redraw, [state], [store, *shown, prompt], **events)
    _ = (rename_item, delete_item)
    panel.wire()
