"""The gateway's web UI, one Gradio app with a page per concern: Chat, Studio, Arena and
Dashboard. Pages reach the gateway over HTTP only (``webui.gateway``); ``ui.py`` assembles them."""
