"""Bad input gets a 4xx in OpenAI's error shape: never a 500, a traceback or FastAPI's detail."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import post_chat
from tests.support.openapi_spec import validate

OK_MESSAGES = [{"role": "user", "content": "hi"}]


def assert_error(
    response: httpx.Response, status: int, *, param: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    validate("ErrorResponse", body)
    assert "detail" not in body
    assert "Traceback" not in response.text
    if param is not None:
        assert body["error"]["param"] == param
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b'{"model": "echo/echo", "messages": [{"role": "user", "content": NaN}]}',
        b'{"model": "echo/echo", "messages": [{"role": "user", "content": Infinity}]}',
        b'{"model": "echo/echo", "messages": [{"role": "user", "content": "\\ud800"}]}',
        b'{"model": "echo/echo", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
        b"[" * 100_000 + b"]" * 100_000,
        b"",
        b'"just a string"',
        b"[]",
    ],
    ids=[
        "syntax",
        "nan",
        "infinity",
        "lone-surrogate",
        "invalid-utf8",
        "deep",
        "empty",
        "str",
        "list",
    ],
)
def test_unparseable_bodies_are_400(echo_gateway: str, raw: bytes) -> None:
    error = assert_error(post_chat(echo_gateway, raw), 400)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": OK_MESSAGES}, "model"),
        ({"model": 42, "messages": OK_MESSAGES}, "model"),
        ({"model": "echo/echo"}, "messages"),
        ({"model": "echo/echo", "messages": []}, "messages"),
        ({"model": "echo/echo", "messages": "hi"}, "messages"),
        ({"model": "echo/echo", "messages": ["hi"]}, "messages[0]"),
        (
            {"model": "echo/echo", "messages": [{"role": "wizard", "content": "x"}]},
            "messages[0].role",
        ),
        ({"model": "echo/echo", "messages": [{"content": "x"}]}, "messages[0].role"),
        ({"model": "echo/echo", "messages": [{"role": "user"}]}, "messages[0].content"),
        (
            {"model": "echo/echo", "messages": [{"role": "user", "content": 5}]},
            "messages[0].content",
        ),
        (
            {"model": "echo/echo", "messages": [{"role": "user", "content": []}]},
            "messages[0].content",
        ),
        (
            {"model": "echo/echo", "messages": [{"role": "user", "content": [{"type": "nope"}]}]},
            "messages[0].content[0].type",
        ),
        (
            {"model": "echo/echo", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages[0].content[0].text",
        ),
        ({"model": "echo/echo", "messages": [{"role": "assistant"}]}, "messages[0].content"),
        ({"model": "echo/echo", "messages": OK_MESSAGES, "stream": "yes"}, "stream"),
        ({"model": "echo/echo", "messages": OK_MESSAGES, "stream_options": 1}, "stream_options"),
        ({"model": "echo/echo", "messages": OK_MESSAGES, "temperature": "hot"}, "temperature"),
        ({"model": "echo/echo", "messages": OK_MESSAGES, "temperature": 7}, "temperature"),
        ({"model": "echo/echo", "messages": OK_MESSAGES, "top_p": True}, "top_p"),
        ({"model": "echo/echo", "messages": OK_MESSAGES, "n": 0}, "n"),
        ({"model": "echo/echo", "messages": OK_MESSAGES, "n": 10_000}, "n"),
        ({"model": "echo/echo", "messages": OK_MESSAGES, "max_tokens": 10**18}, "max_tokens"),
        ({"model": "echo/echo", "messages": OK_MESSAGES, "max_tokens": 1.5}, "max_tokens"),
        ({"model": "echo/echo", "messages": OK_MESSAGES, "stop": [1]}, "stop"),
        ({"model": "echo/echo", "messages": OK_MESSAGES, "tools": {}}, "tools"),
    ],
)
def test_wrong_fields_are_400_naming_the_param(
    echo_gateway: str, body: dict[str, Any], param: str
) -> None:
    assert_error(post_chat(echo_gateway, body), 400, param=param)


def test_too_many_messages_is_400(echo_gateway: str) -> None:
    body = {"model": "echo/echo", "messages": [{"role": "user", "content": "x"}] * 100_000}
    error = assert_error(post_chat(echo_gateway, body), 400, param="messages")
    assert error["code"] == "too_many_messages"


def test_a_body_of_countless_tiny_objects_is_refused_before_parsing(echo_gateway: str) -> None:
    # 6 MB of {} would be ~200 MB of Python objects: refused unparsed. A large body of text
    # (few objects) is still accepted.
    tiny = b'{"model": "echo/echo", "messages": [' + b"{}," * 2_000_000 + b"{}]}"
    error = assert_error(post_chat(echo_gateway, tiny), 400)
    assert error["code"] == "too_many_values"
    text = "word, " * 400_000
    body = {"model": "echo/echo", "messages": [{"role": "user", "content": text}]}
    assert post_chat(echo_gateway, body).status_code == 200


def test_unknown_model_is_404_model_not_found(echo_gateway: str) -> None:
    error = assert_error(
        post_chat(echo_gateway, {"model": "nope/x\r\nSet-Cookie: a=b", "messages": OK_MESSAGES}),
        404,
        param="model",
    )
    assert error["code"] == "model_not_found"
    assert "\r" not in error["message"] and "\n" not in error["message"]


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_wrong_content_type_is_415(echo_gateway: str, content_type: str) -> None:
    response = post_chat(
        echo_gateway,
        b'{"model": "echo/echo", "messages": [{"role": "user", "content": "hi"}]}',
        headers={"content-type": content_type},
    )
    assert_error(response, 415)
    assert "echo/echo" not in response.text, "the body is not echoed back"


def test_json_with_charset_is_accepted(echo_gateway: str) -> None:
    response = post_chat(
        echo_gateway,
        b'{"model": "echo/echo", "messages": [{"role": "user", "content": "hi"}]}',
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200


def test_body_over_the_limit_is_413(make_gateway: Any) -> None:
    url = make_gateway(max_body_bytes=4096)
    big = {"model": "echo/echo", "messages": [{"role": "user", "content": "x" * 10_000}]}
    assert_error(post_chat(url, big), 413)

    def chunked() -> Any:  # no Content-Length: the limit is enforced while reading
        yield b'{"model": "echo/echo", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}]}'

    response = httpx.post(
        url + "/v1/chat/completions",
        content=chunked(),
        headers={"content-type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert_error(response, 413)


def test_unknown_route_and_method_are_openai_shaped(echo_gateway: str) -> None:
    assert_error(httpx.get(echo_gateway + "/v1/nothing"), 404)
    assert_error(httpx.delete(echo_gateway + "/v1/models"), 405)
    assert_error(httpx.get(echo_gateway + "/v1/chat/completions"), 405)


def test_unknown_fields_are_accepted(echo_gateway: str) -> None:
    body = {"model": "echo/echo", "messages": OK_MESSAGES, "some_new_field": {"a": 1}, "seed": 3}
    assert post_chat(echo_gateway, body).status_code == 200
