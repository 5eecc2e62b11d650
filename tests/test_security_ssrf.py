"""No SSRF: upstream URLs, keys and headers come only from the server's configuration.

A body naming where or with what credentials to go - at the top level or nested anywhere, in any
spelling - is refused with 400 naming the field, and nothing reaches the network. Tool and
response-format JSON schemas may name their properties as they like. Upstream redirects are not
followed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from tests.conftest import fault_provider, post_chat, settings
from tests.support.fault_upstream import FaultUpstream, serve_fault_upstream
from tests.support.leaky_upstream import LeakyUpstream, serve_leaky_upstream
from tests.support.openapi_spec import validate
from tests.support.servers import serve_in_thread

EVIL = "http://127.0.0.1:9/steal"
USER: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def gateway(fault_upstream: tuple[str, FaultUpstream]) -> Iterator[str]:
    app = create_app(
        settings(providers={"fault": fault_provider(fault_upstream[0], max_retries=0)})
    )
    with serve_in_thread(app) as url:
        yield url


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "fault/ok", "messages": USER, **extra}


def tool(parameters: dict[str, Any], **function: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": "f", "parameters": parameters, **function}}


FORBIDDEN: list[tuple[dict[str, Any], str]] = [
    # top level, in OpenAI's, LiteLLM's and the SDKs' spellings
    *((body(**{name: EVIL}), name) for name in ("api_base", "base_url", "api_key", "api_version")),
    *((body(**{name: EVIL}), name) for name in ("API_BASE", "Base_Url", "BaseURL", "apiBase")),
    *((body(**{name: EVIL}), name) for name in ("api-base", "Api-Key", "apikey", "endpoint")),
    (body(extra_headers={"x-api-key": "k"}), "extra_headers"),
    (body(extra_query={"url": EVIL}), "extra_query"),
    (body(extra_body={"api_base": EVIL}), "extra_body"),
    (body(headers={"host": "internal"}), "headers"),
    (body(default_headers={"authorization": "Bearer x"}), "default_headers"),
    (body(custom_llm_provider="openai"), "custom_llm_provider"),
    (body(proxy=EVIL), "proxy"),
    (body(organization="org-x"), "organization"),
    (body(azure_endpoint=EVIL), "azure_endpoint"),
    (body(aws_secret_access_key="x"), "aws_secret_access_key"),
    # nested: in a message, a content part, a part's object, metadata, a tool, stream options
    (body(messages=[{**USER[0], "api_base": EVIL}]), "messages[0].api_base"),
    (
        body(
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "hi", "base_url": EVIL}]}
            ]
        ),
        "messages[0].content[0].base_url",
    ),
    (
        body(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": EVIL, "headers": {}}}],
                }
            ]
        ),
        "messages[0].content[0].image_url.headers",
    ),
    (body(metadata={"api_key": "k"}), "metadata.api_key"),
    (body(metadata={"parameters": {"api_base": EVIL}}), "metadata.parameters.api_base"),
    (body(metadata={"schema": {"API_BASE": EVIL}}), "metadata.schema.API_BASE"),
    (body(metadata={"a": [{"b": [{"base_url": EVIL}]}]}), "metadata.a[0].b[0].base_url"),
    (body(tools=[tool({"type": "object"}, api_base=EVIL)]), "tools[0].function.api_base"),
    (body(tools=[{**tool({"type": "object"}), "extra_headers": {}}]), "tools[0].extra_headers"),
    (body(stream_options={"include_usage": True, "headers": {}}), "stream_options.headers"),
    (body(response_format={"type": "text", "api_base": EVIL}), "response_format.api_base"),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("request_body", "param"), FORBIDDEN, ids=[p for _, p in FORBIDDEN])
def test_forbidden_fields_anywhere_are_400_and_never_reach_the_network(
    gateway: str,
    upstream: FaultUpstream,
    request_body: dict[str, Any],
    param: str,
    stream: bool,
) -> None:
    response = post_chat(gateway, {**request_body, "stream": stream})
    assert response.status_code == 400, response.text
    validate("ErrorResponse", response.json())
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, "forbidden_parameter")
    assert EVIL not in response.text
    assert upstream.requests == [], "nothing reached an upstream"


def test_a_forbidden_key_spelled_with_json_escapes_is_still_seen(
    gateway: str, upstream: FaultUpstream
) -> None:
    raw = b'{"model": "fault/ok", "messages": [{"role": "user", "content": "hi"}], '
    for key in (b'"api\\u005fbase"', b'"\\u0061pi_key"', b'"BASE\\u005FURL"'):
        response = post_chat(gateway, raw + key + b': "http://127.0.0.1:9"}')
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "forbidden_parameter"
    # A duplicated key is parsed once (the last wins) and the upstream gets the parsed body.
    response = post_chat(gateway, raw + b'"api_base": "x", "api_base": "y"}')
    assert response.status_code == 400
    assert upstream.requests == []


def test_json_schemas_may_name_properties_headers_or_base_url(
    gateway: str, upstream: FaultUpstream
) -> None:
    schema = {
        "type": "object",
        "properties": {
            "headers": {"type": "object", "properties": {"api_key": {"type": "string"}}},
            "base_url": {"type": "string"},
            "endpoint": {"type": "string"},
        },
        "$defs": {"proxy": {"type": "object"}},
    }
    tools = [tool(schema)]
    functions = [{"name": "g", "parameters": schema}]
    response_format = {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}
    response = post_chat(
        gateway,
        body(tools=tools, functions=functions, response_format=response_format, stream=True),
    )
    assert response.status_code == 200, response.text
    sent = upstream.requests[-1].body
    assert sent["tools"] == tools and sent["functions"] == functions
    assert sent["response_format"] == response_format


CODES = (301, 302, 303, 307, 308)


@pytest.fixture(scope="module")
def redirecting() -> Iterator[tuple[str, LeakyUpstream, FaultUpstream]]:
    """A gateway in front of a leaky upstream that redirects to a second, recording server."""
    with (
        serve_fault_upstream() as (target_url, target),
        serve_leaky_upstream(redirect_to=target_url + "/chat/completions") as (url, leaky),
    ):
        provider = {
            "type": "openai",
            "base_url": url,
            "api_key": "sk-redirect-test-123456",
            "models": [f"redirect-{code}" for code in CODES],
            "max_retries": 0,
        }
        with serve_in_thread(create_app(settings(providers={"up": provider}))) as gateway:
            yield gateway, leaky, target


@pytest.mark.parametrize("code", CODES)
def test_upstream_redirects_are_not_followed(
    redirecting: tuple[str, LeakyUpstream, FaultUpstream], code: int
) -> None:
    gateway, leaky, target = redirecting
    for stream in (False, True):
        response = post_chat(gateway, body(model=f"up/redirect-{code}", stream=stream))
        assert response.status_code == 502, response.text
        assert "location" not in response.headers
    assert leaky.attempts(f"redirect-{code}") == 2, "the upstream was asked, once per request"
    assert target.requests == [], "the redirect target was never contacted"


def test_the_clients_headers_never_choose_the_upstream(
    gateway: str, upstream: FaultUpstream
) -> None:
    """Headers a proxy might honour (Host, X-Forwarded-*, X-Api-Base) change nothing upstream."""
    response = httpx.post(
        gateway + "/v1/chat/completions",
        json=body(),
        headers={
            "host": "evil.example",
            "x-forwarded-host": "evil.example",
            "x-forwarded-proto": "https",
            "x-api-base": "http://127.0.0.1:9",
            "x-api-key": "client-secret",
            "openai-organization": "org-client",
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    seen = upstream.requests[-1]
    assert seen.headers["host"] != "evil.example"
    assert not any(v in repr(seen.headers) for v in ("evil", "client-secret", "org-client"))
