"""Pure ASGI middleware (never BaseHTTPMiddleware: it hides client disconnects)."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Iterable
from urllib.parse import parse_qsl

from gateway.asgi import ASGIApp, Message, Receive, Scope, Send, header, send_error
from gateway.errors import AuthenticationError, InvalidRequest

access_logger = logging.getLogger("gateway.access")

_QUERY_KEY_NAMES = frozenset({"api_key", "apikey", "api-key", "key", "access_token", "token"})


class AuthMiddleware:
    """Bearer-key auth for every route but the open ones; keys in the URL are refused.

    Keys are compared in constant time, on bytes, against every configured key.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: Iterable[bytes],
        open_paths: Iterable[str] = ("/health",),
        open_prefixes: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.keys = tuple(keys)
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
            await send_error(
                send,
                InvalidRequest(
                    "API keys must not be sent in the URL: use the Authorization header",
                    code="api_key_in_url",
                ),
            )
            return
        if self.keys and not self._is_open(scope["path"]):
            error = self._check(header(scope, b"authorization"))
            if error is not None:
                await send_error(send, error)
                return
        await self.app(scope, receive, send)

    def _is_open(self, path: str) -> bool:
        return path in self.open_paths or path.startswith(self.open_prefixes)

    def _check(self, value: bytes | None) -> AuthenticationError | None:
        if not value:
            return AuthenticationError(
                "Missing API key: send it as 'Authorization: Bearer <key>'", code="missing_api_key"
            )
        scheme, _, token = value.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            return AuthenticationError(
                "Malformed Authorization header: expected 'Bearer <key>'",
                code="invalid_authorization_header",
            )
        matched = False
        for key in self.keys:
            matched |= hmac.compare_digest(token, key)
        if not matched:
            return AuthenticationError("Invalid API key")
        return None


def _has_key_in_query(query: bytes) -> bool:
    try:
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    except ValueError:
        return False
    return any(name.lower() in _QUERY_KEY_NAMES for name, _ in pairs)


class AccessLogMiddleware:
    """One line per request: method, path without the query string, status, duration.

    The query string is left out on purpose: it is where careless clients put keys.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            client = scope.get("client")
            access_logger.info(
                '%s "%s %s" %d %.1fms',
                client[0] if client else "-",
                scope["method"],
                _printable_path(scope["path"]),
                status,
                (time.perf_counter() - start) * 1000,
            )


def _printable_path(path: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in path[:300])
