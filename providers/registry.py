"""Provider TYPE -> factory. A new provider is one module plus one line here."""

from __future__ import annotations

from collections.abc import Callable

from providers.base import Provider, ProviderConfig
from providers.echo import EchoProvider
from providers.openai_compat import OpenAICompatProvider

Factory = Callable[[ProviderConfig], Provider]

REGISTRY: dict[str, Factory] = {
    "echo": EchoProvider,
    "openai": OpenAICompatProvider,
}


def create_provider(type_: str, config: ProviderConfig) -> Provider:
    try:
        factory = REGISTRY[type_]
    except KeyError:
        raise ValueError(f"unknown provider type {type_!r}") from None
    return factory(config)
