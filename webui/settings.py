"""The settings every page shares: the visitor's API key, the model, the system prompt, the
temperature and the token limit, as plain Gradio components in a panel of their own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from webui.gateway import Gateway

DEFAULT_TEMPERATURE = 0.7
DEFAULT_MAX_TOKENS = 1024


@dataclass(frozen=True)
class Settings:
    """What the panel shows first."""

    temperature: float = DEFAULT_TEMPERATURE
    max_tokens: int = DEFAULT_MAX_TOKENS
    system_prompt: bool = True

    @classmethod
    def defaults(cls) -> Settings:
        return cls()


@dataclass
class Panel:
    """The panel's components; ``inputs`` in the order the pages' handlers take them."""

    gateway: Gateway
    key: gr.Textbox
    model: gr.Dropdown
    refresh: gr.Button
    system: gr.Textbox
    temperature: gr.Slider
    max_tokens: gr.Number

    @property
    def inputs(self) -> list[gr.components.Component]:
        return [self.model, self.system, self.temperature, self.max_tokens, self.key]

    def wire(self, *extra_models: gr.Dropdown) -> None:
        """Fill the model list(s) when the page loads, on ↻, and when a key is entered."""
        refresh_models = models_refresher(self.gateway)
        dropdowns = [self.model, *extra_models]
        triggers: list[Any] = [self.refresh.click]
        if self.gateway.require_key:
            triggers += [self.key.submit, self.key.blur]
        page = gr.context.get_blocks_context()
        if page is not None and page.root_block is not None:
            triggers.append(page.root_block.load)
        for position, dropdown in enumerate(dropdowns):
            gr.on(
                triggers,
                _nth(refresh_models, position),
                [dropdown, self.key],
                [dropdown],
                api_visibility="undocumented",
                concurrency_limit=None,
                # A key typed while the page's load-time refresh is still running must not be
                # dropped ("once", the default): it runs again when that one ends.
                trigger_mode="always_last",
            )


def _nth(refresh: Any, position: int) -> Any:
    async def pick(current: str | None, api_key: str = "") -> Any:
        return await refresh(current, api_key, position)

    return pick


def models_refresher(gateway: Gateway) -> Any:
    """A handler that lists the gateway's models into a dropdown, keeping the current choice;
    the ``position``-th dropdown of a row of them starts on the ``position``-th model."""

    async def refresh_models(current: str | None, api_key: str = "", position: int = 0) -> Any:
        if gateway.missing_key(api_key):
            return gr.skip()
        models, error = await gateway.models_or_error(api_key)
        if error is not None:
            gr.Warning(error)
            return gr.skip()
        fallback = models[position % len(models)] if models else None
        value = current if current in models else fallback
        return gr.Dropdown(choices=models, value=value)

    return refresh_models


def settings_panel(
    gateway: Gateway, settings: Settings, *, title: str = "### Settings", model_label: str = "Model"
) -> Panel:
    """The panel, in the current layout context; call :meth:`Panel.wire` once it is built."""
    if title:
        gr.Markdown(title)
    key = gr.Textbox(
        label="API key",
        type="password",
        value="",
        placeholder="Your gateway API key",
        visible=gateway.require_key,
        elem_classes=["api-key"],
    )
    with gr.Row():
        model = gr.Dropdown(
            label=model_label,
            choices=[],
            value="",
            allow_custom_value=True,
            scale=4,
            elem_id="model",
        )
        refresh = gr.Button("↻", scale=1, min_width=40)
    system = gr.Textbox(label="System prompt", lines=3, value="", visible=settings.system_prompt)
    temperature = gr.Slider(0.0, 2.0, value=settings.temperature, step=0.05, label="Temperature")
    max_tokens = gr.Number(
        value=settings.max_tokens, minimum=0, precision=0, label="Max tokens (0: no limit)"
    )
    return Panel(gateway, key, model, refresh, system, temperature, max_tokens)
