"""Model ids -> (provider, upstream model). Model ids are ``<provider>/<model>``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.errors import NotFound
from providers.base import Provider


@dataclass(frozen=True, slots=True)
class Route:
    model_id: str
    provider: Provider
    upstream_model: str


class Router:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        *,
        aliases: Mapping[str, str] | None = None,
        fallbacks: Mapping[str, list[str]] | None = None,
    ) -> None:
        self.providers = dict(providers)
        self._routes: dict[str, Route] = {}
        for name, provider in self.providers.items():
            for model in provider.models:
                model_id = f"{name}/{model}"
                self._routes[model_id] = Route(model_id, provider, model)
        self.model_ids = tuple(self._routes)
        for alias, target in (aliases or {}).items():
            if target not in self._routes:
                raise ValueError(f"alias {alias!r} points to unknown model {target!r}")
            self._routes.setdefault(alias, self._routes[target])
        self.fallbacks: dict[str, tuple[Route, ...]] = {}
        for model_id, chain in (fallbacks or {}).items():
            head = self.resolve(model_id)
            for target in chain:
                if target not in self._routes:
                    raise ValueError(f"fallback for {model_id!r} names unknown model {target!r}")
            self.fallbacks[head.model_id] = tuple(self._routes[t] for t in chain)

    def resolve(self, model: str) -> Route:
        route = self._routes.get(model)
        if route is None:
            raise NotFound(
                f"The model '{_printable(model)}' does not exist or you do not have access to "
                "it. GET /v1/models lists the models this gateway serves.",
                param="model",
                code="model_not_found",
            )
        return route

    def chain(self, model: str) -> tuple[Route, ...]:
        """The route for ``model`` followed by its fallbacks, in order."""
        route = self.resolve(model)
        return (route, *self.fallbacks.get(route.model_id, ()))


def _printable(value: str) -> str:
    """A model name safe to put in a message: bounded, no control characters."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in value[:200])
    return cleaned + ("…" if len(value) > 200 else "")
