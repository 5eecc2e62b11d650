"""Client keys: every API route needs one when keys are set; every failure is a clean 401."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import openai
import pytest

from gateway.app import create_app
from gateway.server import HeaderDeadlineProtocol
from tests.conftest import settings
from tests.support.clients import sdk
from tests.support.openapi_spec import validate
from tests.support.servers import serve_in_thread

KEY = "gw-key-Ω-not-ascii-safe"  # keys are compared as bytes, so any UTF-8 key works
ASCII_KEY = "gw-key-plain-123"


@pytest.fixture(scope="module")
def secured() -> Iterator[str]:
    app = create_app(settings(api_keys=[ASCII_KEY, KEY]))
    with serve_in_thread(app, http=HeaderDeadlineProtocol) as url:  # the protocol the CLI runs
        yield url


def raw_request(
    url: str, method: str, path: str, headers: dict[str, bytes]
) -> tuple[int, dict[str, str], bytes]:
    """Send exactly these bytes over a socket: no client library filters odd header values."""
    host, port = url.removeprefix("http://").split(":")
    lines = [f"{method} {path} HTTP/1.1".encode()]
    if "host" not in headers:
        lines.append(f"host: {host}:{port}".encode())
    lines += [name.encode() + b": " + value for name, value in headers.items()]
    lines += [b"content-length: 0", b"connection: close", b"", b""]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"\r\n".join(lines))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in parsed.items()}, body


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        b"",
        b"Bearer",
        b"Bearer ",
        b"Bearer wrong-key",
        b"Basic Z3ctazp4",
        b"gw-key-plain-123",
        b"Bearer gw-key-plain-1234",
        b"Bearer \xff\xfe\x00bad",
        "Bearer клю́ч".encode(),
    ],
)
@pytest.mark.parametrize("path", ["/v1/models", "/v1/models/echo/echo", "/v1/chat/completions"])
def test_missing_or_wrong_keys_get_401(
    secured: str, authorization: bytes | None, path: str
) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    method = "POST" if path.endswith("completions") else "GET"
    status, response_headers, body = raw_request(secured, method, path, headers)
    validate("ErrorResponse", httpx.Response(200, content=body).json())
    if authorization and b"\x00" in authorization:
        assert status == 400, body  # the HTTP parser refuses a NUL in a header, in our shape
        return
    assert status == 401, body
    assert response_headers["www-authenticate"].startswith("Bearer")


def test_right_keys_work_and_scheme_is_case_insensitive(secured: str) -> None:
    assert [m.id for m in sdk(secured, ASCII_KEY).models.list()] == ["echo/echo"]
    status, _, _ = raw_request(
        secured, "GET", "/v1/models", {"authorization": b"bearer " + ASCII_KEY.encode()}
    )
    assert status == 200
    status, _, _ = raw_request(
        secured, "GET", "/v1/models", {"authorization": b"Bearer " + KEY.encode()}
    )
    assert status == 200


def test_sdk_sees_an_authentication_error(secured: str) -> None:
    with pytest.raises(openai.AuthenticationError):
        sdk(secured, "nope").chat.completions.create(
            model="echo/echo", messages=[{"role": "user", "content": "hi"}]
        )


def test_health_is_open_and_unknown_paths_need_a_key(secured: str) -> None:
    assert httpx.get(secured + "/health").status_code == 200
    for path in ("/v1/nothing", "//v1/models", "/v1/models/", "/V1/models", "/health/../v1/models"):
        status, _, _ = raw_request(secured, "GET", path, {})
        assert status == 401, path


def test_crafted_host_headers_do_not_bypass_auth(secured: str) -> None:
    for host in (
        b"localhost",
        b"127.0.0.1",
        b"internal",
        b"evil.example\r\nX: y",
        b"",
        b"a" * 5000,
    ):
        status, _, _ = raw_request(secured, "GET", "/v1/models", {"host": host})
        assert status in (400, 401), host


def test_keys_in_the_url_are_refused(secured: str) -> None:
    for query in ("api_key=" + ASCII_KEY, "key=" + ASCII_KEY, "x=1&API_KEY=abc"):
        response = httpx.get(
            secured + "/v1/models?" + query, headers={"authorization": "Bearer " + ASCII_KEY}
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "api_key_in_url"
        assert ASCII_KEY not in response.text
