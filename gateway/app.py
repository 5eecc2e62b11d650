"""``create_app(settings)``: the FastAPI application with every provider wired in."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from gateway.asgi import ASGIApp, Receive, Scope, Send
from gateway.completions import ChatCompletions, ProviderPolicy
from gateway.errors import APIError, InvalidRequest, MethodNotAllowed, NotFound
from gateway.middleware import AccessLogMiddleware, AuthMiddleware
from gateway.resilience import CircuitBreaker, RetryPolicy
from gateway.routing import Router
from gateway.settings import ProviderSettings, Settings
from gateway.validation import Limits
from providers.base import Provider, ProviderConfig, Timeouts
from providers.registry import create_provider

logger = logging.getLogger("gateway")
API_HEADERS = {"cache-control": "no-store"}


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(payload),
        status_code=status,
        media_type="application/json",
        headers={**API_HEADERS, **(headers or {})},
    )


def _error_response(error: APIError) -> Response:
    return _json(error.payload(), error.status, error.headers)


def _timeouts(settings: Settings, p: ProviderSettings) -> Timeouts:
    return Timeouts(
        connect=p.connect_timeout or settings.connect_timeout,
        first_token=p.first_token_timeout or settings.first_token_timeout,
        idle=p.idle_timeout or settings.idle_timeout,
        total=p.total_timeout or settings.total_timeout,
    )


def build_providers(settings: Settings) -> dict[str, Provider]:
    providers: dict[str, Provider] = {}
    for name, p in settings.providers.items():
        options: dict[str, Any] = {
            "base_url": p.base_url,
            "chunk_delay_ms": p.chunk_delay_ms,
            "max_connections": p.max_connections,
            "ca_bundle": p.ca_bundle,
        }
        if p.api_key is not None:
            options["api_key"] = p.api_key.get_secret_value()
        config = ProviderConfig(
            name=name,
            models=tuple(p.models or ()),
            timeouts=_timeouts(settings, p),
            options=options,
        )
        providers[name] = create_provider(p.type, config)
    return providers


class GatewayAPI(FastAPI):
    """FastAPI, with the chat endpoint dispatched ahead of FastAPI's own middleware stack.

    ``POST /v1/chat/completions`` is the hot path: it goes through the gateway's own pure-ASGI
    middleware (access log, auth, CORS) straight to the raw endpoint, skipping FastAPI's
    per-request layers. Every other route is served by FastAPI as usual.
    """

    hot_path: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.hot_path is not None
            and scope["type"] == "http"
            and scope["path"] == "/v1/chat/completions"
        ):
            await self.hot_path(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings, *, open_prefixes: tuple[str, ...] = ()) -> FastAPI:
    """The gateway. ``open_prefixes`` are paths (a mounted UI) that do their own auth."""
    providers = build_providers(settings)
    router = Router(providers, aliases=settings.aliases, fallbacks=settings.fallbacks)
    policies = {
        name: ProviderPolicy(
            timeouts=_timeouts(settings, p),
            retry=RetryPolicy(
                max_retries=p.max_retries if p.max_retries is not None else settings.max_retries
            ),
            breaker=CircuitBreaker(),
        )
        for name, p in settings.providers.items()
    }
    chat = ChatCompletions(
        router=router,
        policies=policies,
        limits=Limits(
            max_messages=settings.max_messages,
            max_n=settings.max_n,
            max_tokens=settings.max_tokens_limit,
        ),
        max_body_bytes=settings.max_body_bytes,
    )
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        for provider in providers.values():
            await provider.aclose()

    app = GatewayAPI(
        title="llm-gateway",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.chat = chat
    app.state.settings = settings

    def model_entry(model_id: str) -> dict[str, Any]:
        route = router.resolve(model_id)
        return {
            "id": model_id,
            "object": "model",
            "created": created,
            "owned_by": route.provider.name,
        }

    @app.get("/health")
    async def health() -> Response:
        return _json({"status": "ok"})

    @app.get("/v1/models")
    async def list_models() -> Response:
        ids = [*router.model_ids, *settings.aliases]
        return _json({"object": "list", "data": [model_entry(i) for i in ids]})

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> Response:
        return _json(model_entry(model_id))

    @app.exception_handler(APIError)
    async def on_api_error(request: Request, exc: APIError) -> Response:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return _error_response(
            InvalidRequest(str(first.get("msg", "invalid request")), param=param)
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        where = f"{request.method} {request.url.path}"
        if exc.status_code == 405:
            return _error_response(MethodNotAllowed(f"Method not allowed ({where})"))
        if exc.status_code == 404:
            return _error_response(NotFound(f"Invalid URL ({where})", code="unknown_url"))
        error = APIError(str(exc.detail))
        return _json(
            {"error": {**error.payload()["error"], "type": "invalid_request_error"}},
            exc.status_code,
        )

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> Response:
        logger.error("unexpected error on %s %s: %r", request.method, request.url.path, exc)
        return _error_response(APIError("internal error in the gateway", code="internal_error"))

    keys = [k.get_secret_value().encode() for k in settings.api_keys or ()]
    layers: list[tuple[Any, dict[str, Any]]] = [
        (
            AuthMiddleware,
            {"keys": keys, "open_paths": ("/health", "/"), "open_prefixes": open_prefixes},
        )
    ]
    # CORS outside auth: a browser's preflight carries no key, and a 401 must be readable.
    if settings.cors_origins:
        layers.append(
            (
                CORSMiddleware,
                {
                    "allow_origins": settings.cors_origins,
                    "allow_credentials": False,
                    "allow_methods": ["GET", "POST", "OPTIONS"],
                    "allow_headers": ["authorization", "content-type"],
                },
            )
        )
    if settings.access_log:
        layers.append((AccessLogMiddleware, {}))
    hot: ASGIApp = chat
    for layer, options in layers:  # innermost first, as add_middleware stacks them
        app.add_middleware(layer, **options)
        hot = layer(hot, **options)
    app.hot_path = hot
    return app
