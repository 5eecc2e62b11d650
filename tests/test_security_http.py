"""Auth that cannot be walked around, and response headers that cannot be injected or cached.

Raw sockets send what no client library would: HTTP/1.0 without Host, absolute-form targets,
encoded and dotted paths, oversized headers. Complements tests/test_auth.py (missing, wrong,
wrong-scheme and non-ASCII keys, crafted Host, keys in the URL).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import unicodedata
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from starlette.routing import Route
from starlette.types import Message

from gateway.app import create_app
from gateway.middleware import AuthMiddleware, static_key_ids
from gateway.server import HeaderDeadlineProtocol
from tests.conftest import settings
from tests.support import rawhttp
from tests.support.servers import free_port, serve_in_thread

KEY = "sec-key-plain-0123456789"
UTF8_KEY = "clé-Ω-sécurité"  # NFC; compared as UTF-8 bytes, never normalized
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def secured() -> Iterator[str]:
    app = create_app(
        settings(
            api_keys=[KEY, UTF8_KEY],
            max_body_bytes=4096,
            providers={
                "echo": {"type": "echo"},
                "dead": {
                    "type": "openai",
                    "base_url": f"http://127.0.0.1:{free_port()}/v1",
                    "models": ["m"],
                    "max_retries": 0,
                },
            },
        ),
        open_prefixes=("/ui",),  # as the CLI runs it with the UI mounted
    )
    with serve_in_thread(app, http=HeaderDeadlineProtocol) as url:
        yield url


def raw(url: str, request: bytes) -> rawhttp.RawResponse:
    return rawhttp.exchange(url, request)


def build(
    target: str, *headers: bytes, version: bytes = b"HTTP/1.1", method: bytes = b"GET"
) -> bytes:
    """The bytes of one request (a GET unless told) that closes its connection."""
    lines = [method + b" " + target.encode() + b" " + version]
    if version == b"HTTP/1.1" and not any(h.lower().startswith(b"host:") for h in headers):
        lines.append(b"host: 127.0.0.1")
    lines += [*headers, b"content-length: 0", b"connection: close", b"", b""]
    return b"\r\n".join(lines)


# --- 3. Auth: no way around the key -------------------------------------------------------


TRICKS: list[tuple[str, bytes, set[int]]] = [
    ("http/1.0 without host", build("/v1/models", version=b"HTTP/1.0"), {401}),
    ("http/1.0 chat", build("/v1/chat/completions", version=b"HTTP/1.0", method=b"POST"), {401}),
    ("absolute form", build("http://127.0.0.1/v1/models"), {401}),
    ("absolute form, other host", build("http://evil.example/v1/models"), {401}),
    ("absolute form to /health/..", build("http://127.0.0.1/health/../v1/models"), {401}),
    ("absolute form chat", build("http://127.0.0.1/v1/chat/completions", method=b"POST"), {401}),
    ("encoded slash", build("/v1%2Fmodels"), {401}),
    ("encoded letter", build("/%761/models"), {401}),
    ("encoded chat", build("/v1/chat%2Fcompletions", method=b"POST"), {401}),
    ("encoded dots", build("/health/%2e%2e/v1/models"), {401}),
    ("encoded dots and slashes", build("/health%2F..%2Fv1%2Fmodels"), {401}),
    ("dot segment", build("/./v1/models"), {401}),
    ("dot dot from root", build("/../v1/models"), {401}),
    ("double slashes", build("//v1//models"), {401}),
    ("trailing slashes", build("/v1/models//"), {401}),
    ("chat trailing slash", build("/v1/chat/completions/", method=b"POST"), {401}),
    ("upper case", build("/V1/CHAT/COMPLETIONS", method=b"POST"), {401}),
    ("matrix param", build("/v1/models;health"), {401}),
    ("fragment", build("/v1/models#/health"), {401}),
    ("asterisk", build("*"), {401}),
    ("options asterisk", build("*", method=b"OPTIONS"), {401}),
    ("head", build("/v1/models", method=b"HEAD"), {401}),
    ("health as a prefix", build("/healthz"), {401}),
    ("ui as a prefix", build("/uiv1/models"), {401}),
    ("ui then dots", build("/ui/../v1/models"), {404}),  # the UI's own routes, not the API's
    ("ui then encoded dots", build("/ui%2F..%2Fv1%2Fmodels"), {404}),
    (
        "rewrite headers",
        build(
            "/v1/models",
            b"x-original-url: /health",
            b"x-rewrite-url: /health",
            b"x-forwarded-prefix: /health",
            b"x-forwarded-for: 127.0.0.1",
            b"x-real-ip: 127.0.0.1",
        ),
        {401},
    ),
    (
        "wrong key first",
        build("/v1/models", b"authorization: Bearer nope", b"authorization: x"),
        {401},
    ),
    ("key in a cookie", build("/v1/models", b"cookie: api_key=" + KEY.encode()), {401}),
    ("key in x-api-key", build("/v1/models", b"x-api-key: " + KEY.encode()), {401}),
    ("32 KiB bearer", build("/v1/models", b"authorization: Bearer " + b"k" * 32_768), {401}),
    ("64 KiB bearer", build("/v1/models", b"authorization: Bearer " + b"k" * 65_536), {401, 431}),
    ("1 MiB header", build("/v1/models", b"x-pad: " + b"p" * (1 << 20)), {431}),
    ("NUL in the path", build("/v1/models%00/../../health"), {401}),
    ("bad request line", b"GET /v1/models HTTP/1.1 extra\r\nhost: x\r\n\r\n", {400}),
]


@pytest.mark.parametrize(
    ("request_bytes", "statuses"), [t[1:] for t in TRICKS], ids=[t[0] for t in TRICKS]
)
def test_no_request_trick_reaches_a_protected_route_without_the_key(
    secured: str, request_bytes: bytes, statuses: set[int]
) -> None:
    response = raw(secured, request_bytes)
    assert response.status in statuses, (response.status, response.body[:300])
    assert response.header("content-type") == "application/json"
    if not request_bytes.startswith(b"HEAD "):
        assert b'"error"' in response.body, "OpenAI's error shape, never a bare status"
    if response.status == 401:
        assert response.header("www-authenticate") == 'Bearer realm="llm-gateway"'


def test_the_same_tricks_with_the_key_are_served_not_crashed(secured: str) -> None:
    auth = b"authorization: Bearer " + KEY.encode()
    assert raw(secured, build("/v1/models", auth, version=b"HTTP/1.0")).status == 200
    assert raw(secured, build("http://evil.example/v1/models", auth)).status == 200
    assert raw(secured, build("/v1%2Fmodels", auth)).status == 200  # the same path, decoded
    assert raw(secured, build("/v1/models", auth, b"authorization: Bearer nope")).status == 200


def test_every_route_but_health_needs_a_key(secured: str) -> None:
    """Walks the app's own route table, so a route added later cannot forget auth."""
    app = create_app(settings(api_keys=[KEY]))
    paths = [
        (route.path.replace("{model_id:path}", "echo/echo"), method)
        for route in app.routes
        if isinstance(route, Route)
        for method in sorted(route.methods or ())
    ]
    paths.append(("/v1/chat/completions", "POST"))  # the hot path, ahead of the route table
    assert ("/v1/models", "GET") in paths and ("/health", "GET") in paths
    with httpx.Client(base_url=secured, timeout=10) as client:
        for path, method in paths:
            status = client.request(method, path).status_code
            assert status == (200 if path == "/health" else 401), (method, path, status)


@pytest.mark.parametrize(
    ("token", "status"),
    [
        (KEY, 200),
        (UTF8_KEY, 200),
        (KEY[:-1], 401),  # a prefix of a valid key
        (KEY[:12], 401),
        (KEY + "0", 401),
        (KEY.upper(), 401),
        (unicodedata.normalize("NFD", UTF8_KEY), 401),  # same text, other bytes
        (UTF8_KEY.encode().decode("latin-1"), 401),  # the key's bytes, re-encoded
        (KEY + " " + KEY, 401),
        (f"{KEY},{UTF8_KEY}", 401),
    ],
)
def test_keys_match_exactly_as_bytes(secured: str, token: str, status: int) -> None:
    response = raw(secured, build("/v1/models", b"authorization: Bearer " + token.encode()))
    assert response.status == status


def test_keys_are_compared_in_constant_time_against_every_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hmac.compare_digest, on bytes, once per configured key, whichever key matches."""
    calls: list[tuple[Any, Any]] = []
    real: Callable[[bytes, bytes], bool] = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the middleware calls hmac.compare_digest
    keys = [b"first-key-aaaa", "second-key-é".encode(), b"third-key-cccc"]

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def status_for(authorization: bytes) -> int:
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        async def receive() -> Message:
            return {"type": "http.request", "body": b""}

        scope = {"type": "http", "path": "/v1/models", "query_string": b"", "method": "GET"}
        scope["headers"] = [(b"authorization", authorization)]
        await AuthMiddleware(inner, keys=static_key_ids(keys))(scope, receive, send)
        return int(sent[0]["status"])

    for token, status in [
        (keys[0], 200),
        (keys[1], 200),
        (keys[2], 200),
        (b"first-key-aaa", 401),
        (b"nope", 401),
    ]:
        calls.clear()
        assert asyncio.run(status_for(b"Bearer " + token)) == status
        assert len(calls) == len(keys), "every key is compared, even after a match"
        assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in calls)
        assert {b for _, b in calls} == set(keys) and {a for a, _ in calls} == {token}


# --- 4. Headers: no injection, no caching, no open CORS ------------------------------------


def chat_request(model: str, *, stream: bool = False, key: str = KEY) -> bytes:
    body = json.dumps({"model": model, "messages": USER, "stream": stream}).encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + b"authorization: Bearer "
        + key.encode()
        + b"\r\n"
        + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        + body
    )


@pytest.mark.parametrize(
    "request_bytes",
    [
        chat_request("echo/echo\r\nX-Injected: yes"),
        chat_request("echo/echo\r\nX-Injected: yes", stream=True),
        chat_request("echo/echo\nX-Injected: yes\r\n\r\nHTTP/1.1 200 OK"),
        chat_request("\u2028X-Injected: yes\u0085"),
        build("/v1/models/echo%0d%0aX-Injected:%20yes", b"authorization: Bearer " + KEY.encode()),
        build("/v1/models/echo%0aX-Injected:%20yes", b"authorization: Bearer " + KEY.encode()),
        build("/v1/nothing%0d%0aX-Injected:%20yes"),
    ],
    ids=["chat", "stream", "lf-and-split", "unicode-separators", "model-path", "lf-path", "404"],
)
def test_a_model_name_with_crlf_never_reaches_a_response_header(
    secured: str, request_bytes: bytes
) -> None:
    response = raw(secured, request_bytes)
    assert response.status in (401, 404), response.body[:300]
    assert b"x-injected" not in response.head.lower()
    for line in response.head.split(b"\r\n")[1:]:
        assert b"\n" not in line and b"\r" not in line and b": " in line, line


def test_every_api_response_says_no_store(secured: str) -> None:
    auth = {"authorization": f"Bearer {KEY}"}
    ok = {"model": "echo/echo", "messages": USER}
    with httpx.Client(base_url=secured, timeout=10) as client:
        responses = [
            client.post("/v1/chat/completions", json=ok, headers=auth),
            client.post("/v1/chat/completions", json={**ok, "stream": True}, headers=auth),
            client.post("/v1/chat/completions", content=b"{", headers=auth),
            client.post("/v1/chat/completions", json={**ok, "api_base": "x"}, headers=auth),
            client.post("/v1/chat/completions", json={**ok, "model": "no/pe"}, headers=auth),
            client.post("/v1/chat/completions", json={**ok, "model": "dead/m"}, headers=auth),
            client.post("/v1/chat/completions", json={**ok, "pad": "x" * 5000}, headers=auth),
            client.post(
                "/v1/chat/completions",
                content=b"{}",
                headers={**auth, "content-type": "text/plain"},
            ),
            client.post("/v1/chat/completions", json=ok),
            client.get("/v1/models", headers=auth),
            client.get("/v1/models/echo/echo", headers=auth),
            client.get("/v1/models/no/pe", headers=auth),
            client.get("/v1/models?api_key=x", headers=auth),
            client.get("/v1/nothing", headers=auth),
            client.delete("/v1/models", headers=auth),
            client.get("/v1/models"),
            client.get("/health"),
        ]
    statuses = sorted({r.status_code for r in responses})
    assert statuses == [200, 400, 401, 404, 405, 413, 415, 502]
    for response in responses:
        assert response.headers.get("cache-control") == "no-store", (
            response.request.url,
            response.status_code,
        )
    for request_bytes in (
        b"GET / HTTP/1.1 x\r\n\r\n",
        build("/v1/models", b"x-pad: " + b"p" * (1 << 20)),
    ):
        assert raw(secured, request_bytes).header("cache-control") == "no-store"


PREFLIGHT = {
    "access-control-request-method": "POST",
    "access-control-request-headers": "authorization, content-type",
}


def test_cors_is_off_by_default(secured: str) -> None:
    with httpx.Client(base_url=secured, timeout=10) as client:
        for origin in ("https://evil.example", "null", "http://127.0.0.1"):
            responses = [
                client.options("/v1/chat/completions", headers={"origin": origin, **PREFLIGHT}),
                client.options("/v1/models", headers={"origin": origin, **PREFLIGHT}),
                client.get(
                    "/v1/models", headers={"origin": origin, "authorization": f"Bearer {KEY}"}
                ),
                client.get("/health", headers={"origin": origin}),
            ]
            for response in responses:
                assert not any(h.startswith("access-control-") for h in response.headers), (
                    response.headers
                )
                assert response.status_code < 500


@pytest.fixture(scope="module")
def with_cors() -> Iterator[str]:
    app = create_app(settings(api_keys=[KEY], cors_origins=["https://app.example"]))
    with serve_in_thread(app) as url:
        yield url


def test_cors_when_enabled_allows_exactly_the_listed_origins(with_cors: str) -> None:
    app, evil = {"origin": "https://app.example"}, {"origin": "https://evil.example"}
    auth = {"authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=with_cors, timeout=10) as client:
        # A browser's preflight carries no key: it is answered, for the listed origin only.
        allowed = client.options("/v1/chat/completions", headers={**app, **PREFLIGHT})
        assert allowed.status_code == 200, allowed.text
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        assert allowed.headers.get("access-control-allow-credentials") != "true"
        for evil_origin in (
            evil,
            {"origin": "https://app.example.evil.example"},
            {"origin": "null"},
        ):
            refused = client.options("/v1/chat/completions", headers={**evil_origin, **PREFLIGHT})
            assert "access-control-allow-origin" not in refused.headers
        # Real requests: the listed origin is echoed (never *), on successes and on 401s alike.
        for response in (
            client.get("/v1/models", headers={**app, **auth}),
            client.post(
                "/v1/chat/completions",
                json={"model": "echo/echo", "messages": USER},
                headers={**app, **auth},
            ),
            client.get("/v1/models", headers=app),
        ):
            assert response.headers["access-control-allow-origin"] == "https://app.example"
            assert response.headers.get("access-control-allow-credentials") != "true"
        assert client.get("/v1/models", headers=app).status_code == 401, "CORS opens no door"
        for response in (
            client.get("/v1/models", headers={**evil, **auth}),
            client.get("/v1/models", headers=evil),
        ):
            assert "access-control-allow-origin" not in response.headers


def test_a_wildcard_origin_is_refused_by_the_settings() -> None:
    for origins in (["*"], ["https://app.example", "*"]):
        with pytest.raises(ValidationError):
            settings(cors_origins=origins)
