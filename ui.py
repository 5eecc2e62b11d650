"""A Gradio chat playground for the gateway, which it reaches only over HTTP.

``build_ui(gateway_url, api_key)`` returns the app, ``mount(app, ...)`` serves it at ``/ui`` of a
FastAPI app, and ``python ui.py --gateway-url URL`` runs it alone. Replies stream through the
official ``openai`` SDK; each one ends with a line that tells how its stream went (model, TTFT,
tok/s, token usage) and a mark when it failed or was stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import gradio as gr
import openai
from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from openai.types.chat import ChatCompletionMessageParam

from ui_stream import Progress, describe_error, to_openai_messages

UPDATE_INTERVAL = 1 / 30
"""Streamed replies are redrawn at most this often; Gradio sends every yield to the browser."""

LAUNCH_OPTIONS: dict[str, Any] = {
    # Gradio's run history would keep every call's inputs, the visitor's API key among them,
    # in the browser's storage; exception texts are for the server log, not for visitors.
    "run_history": False,
    "footer_links": ["api", "gradio", "settings"],
    "show_error": False,
    "ssr_mode": False,
}
STOPPED_MARK = "⚠ stopped"
KEY_MISSING = "🔑 Enter your API key in the settings panel to chat."


class _Gateway:
    """The gateway's OpenAI API, with one connection pool created on first use.

    Each call names its key, so a visitor's key travels with their own requests only.
    """

    def __init__(self, url: str) -> None:
        url = url.rstrip("/")
        self.base_url = url if url.endswith("/v1") else f"{url}/v1"
        self._client: openai.AsyncOpenAI | None = None

    def client(self, api_key: str | None) -> openai.AsyncOpenAI:
        if self._client is None:
            # An explicit key, so the SDK never falls back to OPENAI_API_KEY from the environment;
            # no retries, so a failure shows at once and Stop has a single request to cancel.
            self._client = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key="unused",
                max_retries=0,
                timeout=openai.Timeout(300.0, connect=5.0),
            )
        return self._client.with_options(api_key=api_key or "unused")


async def stream_reply(
    client: openai.AsyncOpenAI,
    *,
    model: str,
    messages: list[ChatCompletionMessageParam],
    temperature: float | None = None,
    max_tokens: int | None = None,
    interval: float = UPDATE_INTERVAL,
) -> AsyncIterator[list[gr.ChatMessage]]:
    """Yield the reply so far, at most once per ``interval``; the last yield is the whole reply.

    The stream is read in a task of its own, so text that arrives between two redraws is shown
    within ``interval`` even when the next chunk is slow to come. Cancelling this generator (Stop)
    or closing it (a closed tab) cancels that task, which closes the HTTP stream to the gateway.
    """
    progress = Progress(model=model)
    reader = asyncio.create_task(
        progress.read(
            client,
            messages=messages,
            temperature=temperature,
            max_tokens=max_tokens,
        )
    )
    loop = asyncio.get_running_loop()
    next_at = 0.0
    try:
        yield progress.render()
        while not reader.done():
            changed = asyncio.ensure_future(progress.changed.wait())
            try:
                await asyncio.wait({reader, changed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
            if (delay := next_at - loop.time()) > 0:
                await asyncio.wait({reader}, timeout=delay)
            if reader.done():
                break
            progress.changed.clear()
            yield progress.render()
            next_at = loop.time() + interval
        error = reader.exception()
        if error is None:
            yield progress.render()
        elif isinstance(error, openai.OpenAIError):
            yield progress.render(error=describe_error(error, model=model))
        else:
            raise error
    finally:
        if not reader.done():
            reader.cancel()
            await asyncio.wait({reader}, timeout=5.0)


def mark_stopped(chat: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mark the replies that are still streaming as stopped, in place."""
    for message in chat:
        metadata = message.get("metadata") or {}
        if metadata.get("status") == "pending":
            metadata.update(title=f"{STOPPED_MARK} · {metadata.get('title', '')}", status="done")
            message["metadata"] = metadata
    return chat


def build_ui(gateway_url: str, api_key: str | None, *, require_key: bool = False) -> gr.Blocks:
    """The playground for the gateway at ``gateway_url``.

    ``api_key`` stays on the server, in this function's closures: it is never a component value
    and never reaches the page. With ``require_key`` it is ignored and every visitor types a key
    of their own in the settings panel, which the UI uses for that visitor's calls only.
    """
    gateway = _Gateway(gateway_url)
    server_key = None if require_key else api_key

    def key_for(visitor_key: str) -> str | None:
        return visitor_key.strip() if require_key else server_key

    async def chat(
        message: str,
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
        key = key_for(api_key)
        if require_key and not key:
            yield gr.ChatMessage(content="", metadata={"title": KEY_MISSING})
            return
        client = gateway.client(key)
        if not model:
            try:
                model = await _first_model(client)
            except openai.OpenAIError as error:
                yield Progress(model="").render(error=describe_error(error, model=""))
                return
        async for reply in stream_reply(
            client,
            model=model,
            messages=to_openai_messages(message, history, system_prompt=system_prompt),
            temperature=temperature,
            max_tokens=int(max_tokens) if max_tokens else None,
        ):
            yield reply

    async def refresh_models(current: str | None, api_key: str = "") -> Any:
        key = key_for(api_key)
        if require_key and not key:
            return gr.skip()
        try:
            models = await _model_ids(gateway.client(key))
        except openai.OpenAIError as error:
            gr.Warning(f"Could not list the models: {describe_error(error, model='')}")
            return gr.skip()
        value = current if current in models else (models[0] if models else None)
        return gr.Dropdown(choices=models, value=value)

    demo = gr.Blocks(title="LLM Gateway", analytics_enabled=False, fill_height=True)
    with demo:
        gr.Markdown(
            "## LLM Gateway playground\n"
            "Replies stream from the gateway's OpenAI API. Under each one: the model, the time "
            "to first token (TTFT), the speed in tok/s and the token usage."
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=260, variant="panel", elem_id="settings"):
                gr.Markdown("### Settings")
                key_box = gr.Textbox(
                    label="API key",
                    type="password",
                    value="",
                    placeholder="Your gateway API key",
                    visible=require_key,
                )
                with gr.Row():
                    model_box = gr.Dropdown(
                        label="Model",
                        choices=[],
                        value="",
                        allow_custom_value=True,
                        scale=4,
                        elem_id="model",
                    )
                    refresh = gr.Button("↻", scale=1, min_width=40)
                system_box = gr.Textbox(label="System prompt", lines=3, value="")
                temperature_box = gr.Slider(0.0, 2.0, value=0.7, step=0.05, label="Temperature")
                max_tokens_box = gr.Number(
                    value=1024, minimum=0, precision=0, label="Max tokens (0: no limit)"
                )
            with gr.Column(scale=3, elem_id="chat"):
                inputs: list[str | gr.components.Component] = [
                    model_box,
                    system_box,
                    temperature_box,
                    max_tokens_box,
                ]
                chat_ui = gr.ChatInterface(
                    chat,
                    chatbot=gr.Chatbot(label="Chat", height=560, buttons=["copy"]),
                    additional_inputs=[*inputs, key_box] if require_key else inputs,
                    concurrency_limit=None,
                    analytics_enabled=False,
                    fill_height=True,
                )
        # A cancelled generator cannot yield again, so Stop marks the reply here.
        chat_ui.textbox.stop(
            mark_stopped,
            [chat_ui.chatbot],
            [chat_ui.chatbot],
            queue=False,
            api_visibility="undocumented",
        )
        gr.on(
            [demo.load, refresh.click, *([key_box.submit, key_box.blur] if require_key else [])],
            refresh_models,
            [model_box, key_box] if require_key else [model_box],
            [model_box],
            api_visibility="undocumented",
            concurrency_limit=None,
        )
    return demo


async def _model_ids(client: openai.AsyncOpenAI) -> list[str]:
    return [model.id async for model in client.models.list()]  # in the gateway's order


async def _first_model(client: openai.AsyncOpenAI) -> str:
    models = await _model_ids(client)
    if not models:
        raise openai.OpenAIError("the gateway serves no models")
    return models[0]


def mount(
    app: FastAPI,
    *,
    gateway_url: str,
    api_key: str | None,
    require_key: bool,
    path: str = "/ui",
) -> None:
    """Serve the playground at ``path`` of ``app`` and redirect ``/`` there.

    With ``require_key`` (the gateway has API keys) visitors chat with the key they type, never
    with ``api_key``.
    """
    demo = build_ui(gateway_url, None if require_key else api_key, require_key=require_key)

    @app.get("/", include_in_schema=False)
    async def _to_ui() -> RedirectResponse:
        return RedirectResponse(f"{path}/")

    gr.mount_gradio_app(app, demo, path=path, **LAUNCH_OPTIONS)


def main(argv: list[str] | None = None) -> None:
    """``python ui.py --gateway-url URL``: the playground alone, against a remote gateway."""
    parser = argparse.ArgumentParser(prog="ui.py", description=main.__doc__)
    parser.add_argument("--gateway-url", required=True, help="e.g. http://127.0.0.1:8000")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("GATEWAY_API_KEY"),
        help="key for the gateway (default: $GATEWAY_API_KEY, which keeps it out of `ps`)",
    )
    parser.add_argument(
        "--require-key",
        action="store_true",
        help="make each visitor type a key of their own instead of using --api-key",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args(argv)
    demo = build_ui(args.gateway_url, args.api_key, require_key=args.require_key)
    demo.launch(server_name=args.host, server_port=args.port, **LAUNCH_OPTIONS)


if __name__ == "__main__":
    main()
