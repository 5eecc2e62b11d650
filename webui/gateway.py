"""The gateway as the UI sees it: its OpenAI API over HTTP, and whose key a call carries.

Every page reaches the gateway through :class:`Gateway` only. With ``require_key`` (the gateway
has API keys) each visitor's calls carry the key the visitor typed and never a server key; the
server key, when there is one, lives in this object and is never a component value.
"""

from __future__ import annotations

import openai

from webui.errors import describe_error

KEY_MISSING = "🔑 Enter your API key in the settings panel to chat."


class Gateway:
    """The gateway's OpenAI API, with one connection pool created on first use."""

    def __init__(self, url: str, *, api_key: str | None, require_key: bool) -> None:
        url = url.rstrip("/")
        self.base_url = url if url.endswith("/v1") else f"{url}/v1"
        self.require_key = require_key
        self._server_key = None if require_key else api_key
        self._client: openai.AsyncOpenAI | None = None

    def key_for(self, visitor_key: str | None) -> str | None:
        """The key for a visitor's calls: theirs when keys are required, else the server's."""
        if self.require_key:
            return (visitor_key or "").strip() or None
        return self._server_key

    def missing_key(self, visitor_key: str | None) -> bool:
        return self.require_key and self.key_for(visitor_key) is None

    def client(self, visitor_key: str | None) -> openai.AsyncOpenAI:
        """A client whose calls carry the key for this visitor; it shares one pool."""
        if self._client is None:
            # An explicit key, so the SDK never falls back to OPENAI_API_KEY from the environment;
            # no retries, so a failure shows at once and Stop has a single request to cancel.
            self._client = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key="unused",
                max_retries=0,
                timeout=openai.Timeout(300.0, connect=5.0),
            )
        return self._client.with_options(api_key=self.key_for(visitor_key) or "unused")

    async def models(self, visitor_key: str | None) -> list[str]:
        """The model ids the gateway serves, in its order; ``OpenAIError`` when it cannot."""
        client = self.client(visitor_key)
        return [model.id async for model in client.models.list()]

    async def first_model(self, visitor_key: str | None) -> str:
        models = await self.models(visitor_key)
        if not models:
            raise openai.OpenAIError("the gateway serves no models")
        return models[0]

    async def models_or_error(self, visitor_key: str | None) -> tuple[list[str], str | None]:
        """The models, or none and words for the visitor about why not."""
        if self.missing_key(visitor_key):
            return [], KEY_MISSING
        try:
            return await self.models(visitor_key), None
        except openai.OpenAIError as error:
            return [], f"Could not list the models: {describe_error(error, model='')}"
