"""Pure ASGI middleware (never BaseHTTPMiddleware: it hides client disconnects), built once.

The stack is ``RequestContext(CORS(Auth(HotPaths(...))))``: every request, hot path or
FastAPI route, passes through the same instances, so state kept by a layer is kept once.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.asgi import header, send_anthropic_error, send_error
from gateway.errors import APIError, AuthenticationError, InvalidRequest
from gateway.ids import random_hex
from gateway.observe import CALL_SCOPE_KEY, Call, Observers
from gateway.response_head import send_start
from gateway.tenancy.admission import TENANT_SCOPE_KEY, Tenancy

_QUERY_KEY_NAMES = frozenset({"api_key", "apikey", "api-key", "key", "access_token", "token"})
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")


class RequestContext:
    """Outermost: gives each request its :class:`Call` and ``x-request-id``; reports its end.

    The client's ``x-request-id`` is kept when it is sane (1-128 of ``A-Za-z0-9._:-``);
    otherwise one is generated. The response always carries it.
    """

    def __init__(self, app: ASGIApp, *, observers: Observers) -> None:
        self.app = app
        self.observers = observers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = header(scope, b"x-request-id")
        if given is not None and _SANE_REQUEST_ID.fullmatch(given):
            request_id = given.decode("ascii")
        else:
            request_id = random_hex()  # as random as uuid4().hex, without a system call
        client = scope.get("client")
        call = Call(
            request_id=request_id,
            method=scope["method"],
            path=_printable_path(scope["path"]),
            client=client[0] if client else "-",
            started=time.perf_counter(),
        )
        scope[CALL_SCOPE_KEY] = call
        id_header = (b"x-request-id", request_id.encode("ascii"))

        # A plain function returning send's awaitable, not a coroutine of its own: it runs for
        # every streamed chunk.
        def send_with_id(message: Message) -> Awaitable[None]:
            if message["type"] == "http.response.start":
                call.status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
                if call.head_lines is not None:  # a virtual key's x-ratelimit-*
                    return send_start(send, message, call.head_lines)
            return send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.observers.finished(call)


class AuthMiddleware:
    """Key auth (Bearer or ``x-api-key``) for every route but the open ones; keys in the URL
    are refused. Anthropic's paths answer in Anthropic's error shape.

    Keys are compared in constant time, on bytes, against every configured key; the id of the
    key that matched (never the key) goes on the request's :class:`Call`.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: Mapping[str, bytes],
        open_paths: Iterable[str] = ("/health",),
        open_prefixes: Iterable[str] = (),
        tenancy: Tenancy | None = None,
    ) -> None:
        """``keys``: key id -> key; ``tenancy``: the virtual keys (admin API), if enabled."""
        self.app = app
        self.keys = tuple(keys.items())
        self.tenancy = tenancy
        # A prefix opens itself and what is under it, on a segment boundary: "/ui" opens "/ui"
        # and "/ui/x", never "/uix".
        prefixes = [p.rstrip("/") for p in open_prefixes]
        self.open_paths = frozenset([*open_paths, *prefixes])
        self.open_prefixes = tuple(p + "/" for p in prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"")
        if query and _has_key_in_query(query):
            await _reject(
                scope,
                send,
                InvalidRequest(
                    "API keys must not be sent in the URL: use the Authorization header",
                    code="api_key_in_url",
                ),
            )
            return
        if (self.keys or self.tenancy is not None) and not self._is_open(scope["path"]):
            token = request_token(scope)
            key_id: str | APIError | None
            if isinstance(token, AuthenticationError):
                key_id = token
            else:
                key_id = self._check(token)
                if key_id is None:
                    key_id = self._virtual(scope, token)  # the key cache's answer, or None
                    if key_id is None:
                        key_id = await self._read_virtual(scope, token)
            if isinstance(key_id, APIError):
                await _reject(scope, send, key_id)
                return
            call: Call | None = scope.get(CALL_SCOPE_KEY)
            if call is not None:
                call.key_id = key_id
        await self.app(scope, receive, send)

    def _is_open(self, path: str) -> bool:
        return path in self.open_paths or path.startswith(self.open_prefixes)

    def _check(self, token: bytes) -> str | None:
        """The id of the static key ``token`` is (None: none is)."""
        matched: str | None = None
        for key_id, key in self.keys:  # every key, whatever matched: constant time
            if hmac.compare_digest(token, key) and matched is None:
                matched = key_id
        return matched

    def _virtual(self, scope: Scope, token: bytes) -> str | APIError | None:
        """A virtual key's id (its :class:`Tenant` goes on the scope for admission) or the
        error to answer with, from the key cache; None when the key must be read."""
        if self.tenancy is None:
            return AuthenticationError("Invalid API key")
        found = self.tenancy.known(token)
        if found is None or isinstance(found, APIError):
            return found
        scope[TENANT_SCOPE_KEY] = found
        return found.key.id

    async def _read_virtual(self, scope: Scope, token: bytes) -> str | APIError:
        """The same once the key is read (``_virtual`` answered None)."""
        assert self.tenancy is not None
        found = await self.tenancy.authenticate(token)
        if isinstance(found, APIError):
            return found
        scope[TENANT_SCOPE_KEY] = found
        return found.key.id


def request_token(scope: Scope) -> bytes | AuthenticationError:
    """The key a request carries: ``Authorization: Bearer <key>`` (OpenAI's clients, Claude
    Code's ``ANTHROPIC_AUTH_TOKEN``), or, from an Anthropic client, ``x-api-key: <key>``
    (Anthropic's SDK and ``ANTHROPIC_API_KEY``); or the error to answer with.

    An Anthropic client is a request to Anthropic's paths or one that says
    ``anthropic-version`` (its SDK lists models on OpenAI's path): elsewhere a key in any
    other header than Authorization stays refused, as before."""
    value = header(scope, b"authorization")
    if value:
        scheme, _, token = value.partition(b" ")
        token = token.strip()
        if scheme.lower() == b"bearer" and token:
            return token
    anthropic = anthropic_path(scope["path"]) or header(scope, b"anthropic-version") is not None
    api_key = header(scope, b"x-api-key") if anthropic else None
    if api_key and api_key.strip():
        return api_key.strip()
    if value:
        return AuthenticationError(
            "Malformed Authorization header: expected 'Bearer <key>'",
            code="invalid_authorization_header",
        )
    how = "'Authorization: Bearer <key>'" + (" or 'x-api-key: <key>'" if anthropic else "")
    return AuthenticationError(f"Missing API key: send it as {how}", code="missing_api_key")


# Anthropic's clients read errors in Anthropic's shape: the paths of its Messages API get it.
ANTHROPIC_PATHS = "/v1/messages"


def anthropic_path(path: str) -> bool:
    return path == ANTHROPIC_PATHS or path.startswith(ANTHROPIC_PATHS + "/")


async def _reject(scope: Scope, send: Send, error: APIError) -> None:
    if anthropic_path(scope["path"]):
        await send_anthropic_error(send, error)
    else:
        await send_error(send, error)


class HotPaths:
    """Innermost: the raw-ASGI endpoints of a table (path -> app), ahead of FastAPI's router.

    A new API surface is one more entry. Every other request goes to ``fallback``.
    """

    def __init__(self, routes: Mapping[str, ASGIApp], *, fallback: ASGIApp) -> None:
        self.routes = dict(routes)
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = self.routes.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.fallback(scope, receive, send)


def _has_key_in_query(query: bytes) -> bool:
    try:
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    except ValueError:
        return False
    return any(name.lower() in _QUERY_KEY_NAMES for name, _ in pairs)


def _printable_path(path: str) -> str:
    if len(path) <= 300 and path.isprintable():
        return path
    return "".join(ch if ch.isprintable() else "?" for ch in path[:300])


def static_key_ids(keys: Sequence[bytes]) -> dict[str, bytes]:
    """Ids for the keys of ``GATEWAY_API_KEYS``: their position, never a part of the key."""
    return {f"static-{i}": key for i, key in enumerate(keys)}
