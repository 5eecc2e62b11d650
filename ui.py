"""The gateway's web UI: one Gradio app with four pages, which reaches the gateway only over HTTP.

* Chat (``/ui/``): Gradio's ``ChatInterface``, light and quick to load.
* Studio (``/ui/studio``): the modelscope_studio chatbot, with conversations, thinking blocks,
  per-message actions and images.
* Arena (``/ui/arena``): one prompt to several models at once, side by side, with a tally.
* Dashboard (``/ui/dashboard``): the gateway's metrics (``webui.dashboard``).

``build_ui(gateway_url, api_key)`` returns the app, ``mount(app, ...)`` serves it at ``/ui`` of a
FastAPI app, and ``python ui.py --gateway-url URL`` runs it alone. Gradio sends a page only the
components of that page, so the Chat page does not pay for the Studio's heavier scripts.
"""

from __future__ import annotations

import argparse
import os
import warnings
from typing import Any

import gradio as gr
from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from webui import arena, chat, dashboard, studio
from webui.chat import mark_stopped
from webui.gateway import KEY_MISSING, Gateway
from webui.progress import UPDATE_INTERVAL

__all__ = ["KEY_MISSING", "LAUNCH_OPTIONS", "UPDATE_INTERVAL", "build_ui", "mark_stopped", "mount"]

LAUNCH_OPTIONS: dict[str, Any] = {
    # Gradio's run history would keep every call's inputs, the visitor's API key among them,
    # in the browser's storage; exception texts are for the server log, not for visitors.
    "run_history": False,
    "footer_links": ["api", "gradio", "settings"],
    "show_error": False,
    # Server-side rendering does not support modelscope_studio's custom components.
    "ssr_mode": False,
    "css": studio.CSS + arena.CSS,
}
# How often Gradio's queue looks for new events while it has none, and for progress to send.
# Its defaults on Linux are every millisecond and every 10 ms: 1,100 wake-ups a second of the
# event loop it shares with the gateway's API, about 5 % of a core with nobody on the page.
# Every 10 ms is as quick for a person; the pages use no gr.Progress (they stream their own).
QUEUE_POLL_SECONDS = 0.01
PROGRESS_POLL_SECONDS = 0.1  # Gradio's own choice on Windows


def _calm_queue(demo: gr.Blocks) -> None:
    demo._queue.sleep_when_free = QUEUE_POLL_SECONDS
    demo._queue.progress_update_sleep_when_free = PROGRESS_POLL_SECONDS


def build_ui(gateway_url: str, api_key: str | None, *, require_key: bool = False) -> gr.Blocks:
    """The UI for the gateway at ``gateway_url``.

    ``api_key`` stays on the server, in :class:`Gateway`: it is never a component value and
    never reaches the page. With ``require_key`` it is ignored and every visitor types a key of
    their own in the settings panel, which the UI uses for that visitor's calls only.
    """
    gateway = Gateway(gateway_url, api_key=api_key, require_key=require_key)
    demo = gr.Blocks(title="LLM Gateway", analytics_enabled=False, fill_height=True)
    demo.pages[0] = ("", "Chat", True)  # the first page's name in the navigation bar
    with demo:
        gr.Markdown(
            "## LLM Gateway · Chat\n"
            "Replies stream from the gateway's OpenAI API. Under each one: the model, the time "
            "to first token (TTFT), the speed in tok/s and the token usage."
        )
        chat.build(gateway)
    with demo.route("Studio", "/studio"):
        studio.build(gateway)
    with demo.route("Arena", "/arena"):
        arena.build(gateway)
    with demo.route("Dashboard", "/dashboard"):
        dashboard.build(gateway_url)
    return demo


def mount(
    app: FastAPI,
    *,
    gateway_url: str,
    api_key: str | None,
    require_key: bool,
    path: str = "/ui",
) -> gr.Blocks:
    """Serve the UI at ``path`` of ``app`` and redirect ``/`` there; the UI's Blocks.

    With ``require_key`` (the gateway has API keys) visitors use the key they type, never
    ``api_key``.
    """
    demo = build_ui(gateway_url, None if require_key else api_key, require_key=require_key)

    @app.get("/", include_in_schema=False)
    async def _to_ui() -> RedirectResponse:
        return RedirectResponse(f"{path}/")

    @app.get("/favicon.ico", include_in_schema=False)
    async def _icon() -> RedirectResponse:
        # Browsers ask the site's root for its icon; Gradio serves its own under the mount path.
        return RedirectResponse(f"{path}/favicon.ico")

    with warnings.catch_warnings():
        # Gradio warns that it turns SSR off for a multi-page app; it is off here anyway.
        warnings.filterwarnings("ignore", "SSR mode is not supported", UserWarning)
        gr.mount_gradio_app(app, demo, path=path, **LAUNCH_OPTIONS)
    _calm_queue(demo)
    return demo


def main(argv: list[str] | None = None) -> None:
    """``python ui.py --gateway-url URL``: the UI alone, against a remote gateway."""
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
    demo.queue(default_concurrency_limit=None)
    _calm_queue(demo)
    demo.launch(server_name=args.host, server_port=args.port, **LAUNCH_OPTIONS)


if __name__ == "__main__":
    main()
