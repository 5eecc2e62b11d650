"""``create_app(settings)``: providers, deployments, the dispatch loop, the API surfaces and the
one middleware stack, wired together.

Requests pass ``RequestContext -> CORS -> Auth -> HotPaths``; the hot paths (raw-ASGI API
surfaces) are a table of path -> endpoint, and every other path goes on to FastAPI's router.
"""

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
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.admin import admin_routes
from gateway.asgi import JSON_HEADERS
from gateway.dispatch import Dispatcher
from gateway.errors import APIError, InvalidRequest, MethodNotAllowed, NotFound, anthropic_error
from gateway.metrics_wiring import Telemetry
from gateway.middleware import (
    AuthMiddleware,
    HotPaths,
    RequestContext,
    anthropic_path,
    static_key_ids,
)
from gateway.observe import LogObserver, Observer, Observers
from gateway.resilience import CircuitBreaker, RetryPolicy
from gateway.routing import Deployment, Policy, Router
from gateway.settings import ENV_PREFIX, ConfigError, ProviderSettings, Settings
from gateway.surfaces.chat import ChatCompletions
from gateway.surfaces.completions import CompletionsEndpoint
from gateway.surfaces.embeddings import EmbeddingsEndpoint
from gateway.surfaces.messages import CountTokens, Messages
from gateway.surfaces.responses import ResponsesEndpoint
from gateway.tenancy.admission import tenant_models
from gateway.tenancy.service import build_tenancy
from gateway.validation import Limits
from providers.base import Provider
from providers.http1 import PoolTransport
from providers.registry import BUILTIN_TYPES
from providers.spec import ProviderContext

logger = logging.getLogger("gateway")
API_HEADERS = {k.decode(): v.decode() for k, v in JSON_HEADERS if k != b"content-type"}


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(payload),
        status_code=status,
        media_type="application/json",
        headers={**API_HEADERS, **(headers or {})},
    )


def _error_response(error: APIError, path: str = "") -> Response:
    """``error`` in the shape its path's clients read: Anthropic's under ``/v1/messages``."""
    if anthropic_path(path):
        status, body = anthropic_error(error)
        return _json(body, status, error.headers)
    return _json(error.payload(), error.status, error.headers)


def _policy(settings: Settings, p: ProviderSettings) -> Policy:
    return Policy(
        first_token=p.first_token_timeout or settings.first_token_timeout,
        idle=p.idle_timeout or settings.idle_timeout,
        total=p.total_timeout or settings.total_timeout,
        retry=RetryPolicy(
            max_retries=p.max_retries if p.max_retries is not None else settings.max_retries
        ),
    )


class Upstreams:
    """The providers built from settings, their transports and their deployments."""

    def __init__(self, settings: Settings) -> None:
        self.providers: dict[str, Provider] = {}
        self.transports: list[PoolTransport] = []
        self.deployments: list[Deployment] = []
        for name, p in settings.providers.items():
            transport = PoolTransport(max_connections=p.max_connections, ca_bundle=p.ca_bundle)
            self.transports.append(transport)
            models = tuple(p.models or ())
            context = ProviderContext(
                name=name,
                models=models,
                transport=transport,
                connect_timeout=p.connect_timeout or settings.connect_timeout,
                pool_timeout=p.pool_timeout or settings.pool_timeout,
                logger=logging.getLogger(f"gateway.provider.{name}"),
            )
            try:
                provider = p.spec.create(context, p.options)
            except Exception as exc:  # a plugin's factory: stop the start in one line
                logger.debug("creating provider %r", name, exc_info=exc)
                raise ConfigError(
                    f"invalid configuration: {ENV_PREFIX}PROVIDERS__{name.upper()}__TYPE: "
                    f"provider type {p.type!r} failed to start ({type(exc).__name__}; "
                    "--log-level debug shows where)"
                ) from None
            plugin = BUILTIN_TYPES.get(p.type) is not p.spec
            self.providers[name] = provider
            policy = _policy(settings, p)
            threshold = (
                p.breaker_threshold
                if p.breaker_threshold is not None
                else settings.breaker_threshold
            )
            cooldown = p.breaker_cooldown or settings.breaker_cooldown
            for model in models:
                model_id = f"{name}/{model}"
                self.deployments.append(
                    Deployment(
                        model_id=model_id,
                        provider=provider,
                        upstream_model=model,
                        policy=policy,
                        breaker=CircuitBreaker(model_id, threshold=threshold, cooldown=cooldown),
                        guarded=plugin,
                    )
                )

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()
        for transport in self.transports:
            await transport.aclose()


def build_router(settings: Settings, deployments: list[Deployment]) -> Router:
    aliases = {
        alias: [(target, 1.0)] if isinstance(target, str) else [(t.model, t.weight) for t in target]
        for alias, target in settings.aliases.items()
    }
    return Router(deployments, aliases=aliases, fallbacks=settings.fallbacks)


class GatewayAPI(FastAPI):
    """FastAPI, entered through the gateway's own stack (:func:`create_app` sets ``entry``)."""

    entry: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.entry is None:
            await super().__call__(scope, receive, send)
        else:
            await self.entry(scope, receive, send)

    async def serve_routes(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's own handling: its middleware, then its router."""
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    open_prefixes: tuple[str, ...] = (),
    observers: tuple[Observer, ...] = (),
    tracer_provider: Any = None,
) -> FastAPI:
    """The gateway. ``open_prefixes`` are paths (a mounted UI) that do their own auth;
    ``observers`` are told about every request, after the access log; ``tracer_provider``
    (OpenTelemetry's) receives the traces whatever ``OTEL_*`` say."""
    upstreams = Upstreams(settings)
    router = build_router(settings, upstreams.deployments)
    log = LogObserver(access_log=settings.access_log, structured=settings.log_format == "json")
    telemetry = Telemetry(
        settings,
        deployments=upstreams.deployments,
        transports=dict(zip(upstreams.providers, upstreams.transports, strict=True)),
        models=[*router.model_ids, *router.aliases],
        tracer_provider=tracer_provider,
        untraced=open_prefixes,
    )
    tenancy = build_tenancy(settings)  # virtual keys, limits and the ledger (docs/teams.md)
    ledger = [tenancy.ledger] if tenancy is not None else []
    observed = Observers([log, *telemetry.observers, *observers, *ledger])
    chat = ChatCompletions(
        router=router,
        dispatcher=Dispatcher(observers=observed, keepalive=settings.stream_keepalive),
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
        if tenancy is not None:
            await tenancy.start()
        async with telemetry.running():
            yield
        await upstreams.aclose()
        if tenancy is not None:
            await tenancy.aclose()

    app = GatewayAPI(
        title="llm-gateway",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.router = router
    app.state.tenancy = tenancy

    def model_entry(model_id: str) -> dict[str, Any]:
        owner = router.group(model_id)[0].deployment.provider.name
        return {"id": model_id, "object": "model", "created": created, "owned_by": owner}

    @app.get("/health")
    async def health() -> Response:
        return _json({"status": "ok"})

    def anthropic_entry(model_id: str) -> dict[str, Any]:
        router.group(model_id)  # 404 for an unknown one
        return {"type": "model", "id": model_id, "display_name": model_id, "created_at": since}

    # Anthropic's clients list models on the same path, saying so with anthropic-version.
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))

    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        ids = tenant_models(request.scope, [*router.model_ids, *router.aliases])
        if "anthropic-version" in request.headers:
            data = [anthropic_entry(i) for i in ids]
            first, last = (ids[0], ids[-1]) if ids else (None, None)
            return _json({"data": data, "has_more": False, "first_id": first, "last_id": last})
        return _json({"object": "list", "data": [model_entry(i) for i in ids]})

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, request: Request) -> Response:
        if not tenant_models(request.scope, [model_id]):  # a virtual key's list hides it
            raise NotFound(f"The model '{model_id[:200]}' does not exist", code="model_not_found")
        if "anthropic-version" in request.headers:
            return _json(anthropic_entry(model_id))
        return _json(model_entry(model_id))

    if tenancy is not None:
        app.include_router(admin_routes(tenancy))
    _install_error_handlers(app)

    hot_paths: dict[str, ASGIApp] = {
        "/v1/chat/completions": chat,
        "/v1/embeddings": EmbeddingsEndpoint(
            router=router, dispatcher=chat.dispatcher, max_body_bytes=chat.max_body_bytes
        ),
        "/v1/messages": Messages(
            router=router, dispatcher=chat.dispatcher, max_body_bytes=chat.max_body_bytes
        ),
        "/v1/messages/count_tokens": CountTokens(router=router, max_body_bytes=chat.max_body_bytes),
        "/v1/completions": CompletionsEndpoint(
            router=router,
            dispatcher=chat.dispatcher,
            limits=chat.limits,
            max_body_bytes=chat.max_body_bytes,
        ),
        "/v1/responses": ResponsesEndpoint(
            router=router,
            dispatcher=chat.dispatcher,
            limits=chat.limits,
            max_body_bytes=chat.max_body_bytes,
        ),
    }
    telemetry.know_routes(hot_paths)
    hot_paths.update(telemetry.routes)
    stack: ASGIApp = HotPaths(hot_paths, fallback=app.serve_routes)
    keys = [k.get_secret_value().encode() for k in settings.api_keys or ()]
    stack = AuthMiddleware(
        stack,
        keys=static_key_ids(keys),
        open_paths=("/health", "/", "/favicon.ico", *telemetry.open_paths),
        open_prefixes=(*open_prefixes, *(("/admin",) if tenancy is not None else ())),
        tenancy=tenancy,  # the admin routes check the admin key themselves
    )
    # CORS outside auth: a browser's preflight carries no key, and a 401 must be readable.
    if settings.cors_origins:
        stack = CORSMiddleware(
            stack,
            allow_origins=settings.cors_origins,
            allow_credentials=False,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=[
                *("authorization", "content-type", "x-request-id"),
                *("x-api-key", "anthropic-version", "anthropic-beta"),
            ],
            expose_headers=["x-request-id"],
        )
    app.entry = RequestContext(telemetry.wrap(stack), observers=observed)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def on_api_error(request: Request, exc: APIError) -> Response:
        return _error_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return _error_response(
            InvalidRequest(str(first.get("msg", "invalid request")), param=param),
            request.url.path,
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        where = f"{request.method} {request.url.path}"
        if exc.status_code == 405:
            return _error_response(
                MethodNotAllowed(f"Method not allowed ({where})"), request.url.path
            )
        if exc.status_code == 404:
            return _error_response(
                NotFound(f"Invalid URL ({where})", code="unknown_url"), request.url.path
            )
        error = APIError(str(exc.detail))
        return _json(
            {"error": {**error.payload()["error"], "type": "invalid_request_error"}},
            exc.status_code,
        )

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> Response:
        logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        error = APIError("internal error in the gateway", code="internal_error")
        return _error_response(error, request.url.path)
