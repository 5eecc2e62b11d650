"""``POST /v1/embeddings`` end to end: the real openai SDK against real gateways, in front of echo
and of OpenAI-compatible upstreams on 127.0.0.1."""

from __future__ import annotations

import array
import base64
import dataclasses
import math
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from gateway.app import create_app
from gateway.dispatch import Dispatcher
from gateway.observe import Call, Observers
from gateway.resilience import CircuitBreaker
from gateway.routing import Deployment, Policy, Router
from gateway.surfaces.embeddings import MAX_INPUT_CHARS, MAX_INPUTS, EmbeddingsEndpoint
from providers.base import ChatRequest, Chunk, Delta
from providers.errors import ProviderError
from tests.conftest import GatewayFactory, settings
from tests.support.clients import sdk
from tests.support.legacy_upstream import LegacyUpstream, serve_legacy_upstream, upstream_vector
from tests.support.openapi_spec import validate
from tests.support.servers import serve_in_thread

KEY = "client-key-embeddings"
UPSTREAM_KEY = "sk-upstream-embeddings-123456"
MODELS = ["ok", "reversed", "base64", "wrong-count", "no-usage", "status:429:1", "status:400"]
MODELS += ["status:500", "slow:0.5"]


@pytest.fixture(scope="module")
def legacy() -> Iterator[tuple[str, LegacyUpstream]]:
    with serve_legacy_upstream() as served:
        yield served


@pytest.fixture
def gateway(make_gateway: GatewayFactory, legacy: tuple[str, LegacyUpstream]) -> str:
    legacy[1].reset()
    up = {"type": "openai", "base_url": legacy[0], "api_key": UPSTREAM_KEY, "models": MODELS}
    return make_gateway(
        api_keys=[KEY],
        providers={"echo": {"type": "echo"}, "up": {**up, "max_retries": 1}},
        fallbacks={"up/status:400": ["echo/echo"], "up/status:500": ["echo/echo"]},
        first_token_timeout=0.2,  # an embedding has no first token: the total applies
    )


def post(url: str, body: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {KEY}"}
    return httpx.post(url + "/v1/embeddings", json=body, headers=headers, timeout=10)


def decoded(b64: str) -> list[float]:
    return array.array("f", base64.b64decode(b64)).tolist()


def test_sdk_default_call_gets_base64_and_decodes_to_the_float_calls_vectors(gateway: str) -> None:
    """Row 20: the SDK asks for base64 by default; the gateway must honour it, exactly."""
    client = sdk(gateway, KEY)
    texts = ["the quick brown fox", "jumps over", "the lazy dog"]
    raw = client.embeddings.with_raw_response.create(model="echo/echo", input=texts)
    assert orjson.loads(raw.http_request.content)["encoding_format"] == "base64"
    wire = raw.http_response.json()
    assert all(isinstance(d["embedding"], str) for d in wire["data"])
    default = raw.parse()
    floats = post(gateway, {"model": "echo/echo", "input": texts, "encoding_format": "float"})
    want = floats.json()["data"]
    assert [d.index for d in default.data] == [0, 1, 2]
    for got, expected in zip(default.data, want, strict=True):
        assert got.embedding == array.array("f", expected["embedding"]).tolist()
    validate("CreateEmbeddingResponse", floats.json())
    as_floats = [{**d, "embedding": decoded(d["embedding"])} for d in wire["data"]]
    validate("CreateEmbeddingResponse", {**wire, "data": as_floats})


def test_echo_embeddings_are_deterministic_distinct_and_unit(gateway: str) -> None:
    client = sdk(gateway, KEY)
    one = client.embeddings.create(model="echo/echo", input="hello", encoding_format="float")
    again = client.embeddings.create(
        model="echo/echo", input=["other", "hello"], encoding_format="float"
    )
    assert one.model == "echo/echo" and one.object == "list"
    assert len(one.data[0].embedding) == 256
    assert again.data[1].embedding == one.data[0].embedding
    assert again.data[0].embedding != one.data[0].embedding
    assert math.isclose(math.fsum(x * x for x in one.data[0].embedding), 1.0, rel_tol=1e-9)
    assert one.usage.prompt_tokens == 1 and one.usage.total_tokens == 1
    validate("CreateEmbeddingResponse", again.model_dump())


def test_dimensions_and_token_arrays_on_echo(gateway: str) -> None:
    client = sdk(gateway, KEY)
    small = client.embeddings.create(model="echo/echo", input=["a", "b"], dimensions=8)
    assert [len(d.embedding) for d in small.data] == [8, 8]
    tokens = client.embeddings.create(model="echo/echo", input=[[1, 2, 3], [4]], dimensions=8)
    assert len(tokens.data) == 2 and tokens.usage.prompt_tokens == 4
    single = client.embeddings.create(model="echo/echo", input=[1, 2, 3], dimensions=8)
    assert single.data[0].embedding == tokens.data[0].embedding
    text = client.embeddings.create(model="echo/echo", input="1,2,3", dimensions=8)
    assert text.data[0].embedding != single.data[0].embedding


def test_openai_upstream_gets_floats_asked_and_the_clients_fields(
    gateway: str, legacy: tuple[str, LegacyUpstream]
) -> None:
    client = sdk(gateway, KEY)
    answer = client.embeddings.create(
        model="up/ok", input=[[1, 2, 3], [7]], dimensions=5, user="user-42"
    )
    seen = legacy[1].requests[-1]
    assert seen.path == "/v1/embeddings"
    assert seen.body == {
        "model": "ok",
        "input": [[1, 2, 3], [7]],
        "dimensions": 5,
        "user": "user-42",
        "encoding_format": "float",
    }
    assert seen.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert answer.model == "up/ok"
    want = upstream_vector([1, 2, 3], 5)
    assert answer.data[0].embedding == array.array("f", want).tolist()
    assert answer.usage.prompt_tokens == 4 and answer.usage.total_tokens == 4


@pytest.mark.parametrize("model", ["up/reversed", "up/base64"])
def test_upstream_answers_out_of_order_or_in_base64_come_back_right(
    gateway: str, model: str
) -> None:
    answer = post(gateway, {"model": model, "input": ["x", "y z"], "encoding_format": "float"})
    assert answer.status_code == 200
    data = answer.json()["data"]
    assert [d["index"] for d in data] == [0, 1]
    for item, text in zip(data, ["x", "y z"], strict=True):
        want = array.array("f", upstream_vector(text, 3)).tolist()
        assert array.array("f", item["embedding"]).tolist() == want
    validate("CreateEmbeddingResponse", answer.json())


def test_gateway_can_be_its_own_upstream(gateway: str, make_gateway: GatewayFactory) -> None:
    front = make_gateway(
        providers={
            "inner": {
                "type": "openai",
                "base_url": gateway + "/v1",
                "api_key": KEY,
                "models": ["echo/echo"],
            }
        }
    )
    texts = ["same text", "same vector"]
    direct = sdk(gateway, KEY).embeddings.create(model="echo/echo", input=texts)
    relayed = sdk(front).embeddings.create(model="inner/echo/echo", input=texts)
    assert relayed.model == "inner/echo/echo"
    assert [d.embedding for d in relayed.data] == [d.embedding for d in direct.data]
    assert relayed.usage.prompt_tokens == direct.usage.prompt_tokens


def test_429_is_retried_and_400_is_the_clients(
    gateway: str, legacy: tuple[str, LegacyUpstream]
) -> None:
    retried = post(gateway, {"model": "up/status:429:1", "input": "x"})
    assert retried.status_code == 200
    assert sum(r.path == "/v1/embeddings" for r in legacy[1].requests) == 2
    legacy[1].reset()
    refused = post(gateway, {"model": "up/status:400", "input": "x"})
    assert refused.status_code == 400  # the client's fault: neither retried nor fallen back
    assert "legacy upstream: status 400" in refused.json()["error"]["message"]
    assert len(legacy[1].requests) == 1
    validate("ErrorResponse", refused.json())


def test_a_failing_upstream_falls_back_and_a_slow_one_is_waited_for(
    gateway: str, legacy: tuple[str, LegacyUpstream]
) -> None:
    fallen = post(gateway, {"model": "up/status:500", "input": "x"})
    assert fallen.status_code == 200 and fallen.json()["model"] == "echo/echo"
    assert len(legacy[1].requests) == 2  # tried, retried once, then the fallback
    slow = post(gateway, {"model": "up/slow:0.5", "input": "x"})
    assert slow.status_code == 200 and slow.json()["model"] == "up/slow:0.5"


def test_a_malformed_upstream_answer_is_a_502_and_missing_usage_is_estimated(gateway: str) -> None:
    wrong = post(gateway, {"model": "up/wrong-count", "input": ["a", "b"]})
    assert wrong.status_code == 502
    assert wrong.json()["error"]["code"] == "upstream_malformed"
    estimated = post(gateway, {"model": "up/no-usage", "input": ["abcdefgh"]})
    assert estimated.json()["usage"] == {"prompt_tokens": 2, "total_tokens": 2}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "echo/echo"}, "input"),
        ({"input": "x"}, "model"),
        ({"model": "", "input": "x"}, "model"),
        ({"model": "echo/echo", "input": 5}, "input"),
        ({"model": "echo/echo", "input": None}, "input"),
        ({"model": "echo/echo", "input": ""}, "input"),
        ({"model": "echo/echo", "input": []}, "input"),
        ({"model": "echo/echo", "input": [{"text": "x"}]}, "input"),
        ({"model": "echo/echo", "input": ["a", ""]}, "input[1]"),
        ({"model": "echo/echo", "input": ["a", 5]}, "input[1]"),
        ({"model": "echo/echo", "input": [1, -1]}, "input[1]"),
        ({"model": "echo/echo", "input": [1, True]}, "input[1]"),
        ({"model": "echo/echo", "input": [[1], []]}, "input[1]"),
        ({"model": "echo/echo", "input": [[1], [1.5]]}, "input[1][0]"),
        ({"model": "echo/echo", "input": ["x"] * (MAX_INPUTS + 1)}, "input"),
        ({"model": "echo/echo", "input": "x" * (MAX_INPUT_CHARS + 1)}, "input"),
        ({"model": "echo/echo", "input": ["a", "x" * (MAX_INPUT_CHARS + 1)]}, "input[1]"),
        ({"model": "echo/echo", "input": "x", "encoding_format": "hex"}, "encoding_format"),
        ({"model": "echo/echo", "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": "echo/echo", "input": "x", "dimensions": "8"}, "dimensions"),
        ({"model": "echo/echo", "input": "x", "dimensions": True}, "dimensions"),
        ({"model": "echo/echo", "input": "x", "user": 5}, "user"),
    ],
)
def test_bad_requests_get_400_naming_the_field(gateway: str, body: Any, param: str) -> None:
    answer = post(gateway, body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    validate("ErrorResponse", answer.json())


def test_sdk_raises_bad_request_with_param(gateway: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gateway, KEY).embeddings.create(model="echo/echo", input=["ok", ""])
    assert caught.value.param == "input[1]"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"api_base": "http://evil"}, "api_base"),
        ({"apiKey": "sk-x"}, "apiKey"),
        ({"metadata": {"deep": [{"base_url": "http://evil"}]}}, "metadata.deep[0].base_url"),
    ],
)
def test_forbidden_keys_are_refused_anywhere(gateway: str, extra: Any, param: str) -> None:
    answer = post(gateway, {"model": "up/ok", "input": "x", **extra})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "forbidden_parameter"
    assert answer.json()["error"]["param"] == param


def test_auth_body_limit_and_method_are_the_gateways(gateway: str, make_gateway: Any) -> None:
    assert httpx.post(gateway + "/v1/embeddings", json={}).status_code == 401
    auth = {"authorization": f"Bearer {KEY}"}
    assert httpx.get(gateway + "/v1/embeddings", headers=auth).status_code == 405
    small = make_gateway(max_body_bytes=1024)
    big = httpx.post(small + "/v1/embeddings", json={"model": "echo/echo", "input": "x" * 2000})
    assert big.status_code == 413
    unknown = post(gateway, {"model": "nope/nothing", "input": "x"})
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "model"
    huge = post(gateway, {"model": "echo/echo", "input": ["x"] * 8, "dimensions": 1 << 20})
    assert huge.status_code == 400  # echo's own bound on the work one request asks of it


# -- a provider that cannot embed ------------------------------------------------------


class ChatOnly:
    """A provider with chat and nothing else."""

    name = "plain"
    models = ("chat",)

    async def stream(self, request: ChatRequest) -> Any:
        yield Chunk(deltas=[Delta(text="hi", finish_reason="stop")])

    async def aclose(self) -> None:
        return None


def _deployment(model_id: str, provider: Any) -> Deployment:
    return Deployment(
        model_id=model_id,
        provider=provider,
        upstream_model=model_id.split("/", 1)[1],
        policy=Policy(),
        breaker=CircuitBreaker(model_id),
    )


def test_a_provider_without_embeddings_gets_400_naming_it() -> None:
    from providers.echo import EchoProvider, Options
    from providers.http1 import PoolTransport
    from providers.spec import ProviderContext

    echo = EchoProvider(ProviderContext("echo", ("echo",), PoolTransport()), Options())
    router = Router(
        [_deployment("plain/chat", ChatOnly()), _deployment("echo/echo", echo)],
        aliases={"mixed": [("plain/chat", 1.0), ("echo/echo", 0.000001)]},
    )
    endpoint = EmbeddingsEndpoint(
        router=router, dispatcher=Dispatcher(observers=Observers([])), max_body_bytes=1 << 20
    )
    with serve_in_thread(endpoint, lifespan="off") as url:
        client = sdk(url, "x")
        with pytest.raises(openai.BadRequestError) as caught:
            client.embeddings.create(model="plain/chat", input="x")
        error = caught.value.body
        assert isinstance(error, dict) and error["code"] == "model_not_supported"
        assert "'plain'" in error["message"] and "embeddings" in error["message"]
        # A model whose deployments are mixed is served by those that can.
        assert client.embeddings.create(model="mixed", input="x").model == "echo/echo"


# -- observers -------------------------------------------------------------------------


class Finished:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.done = threading.Event()

    def attempt_started(self, call: Call, deployment: str) -> None: ...
    def attempt_finished(
        self, call: Call, deployment: str, error: ProviderError | None
    ) -> None: ...
    def first_token(self, call: Call) -> None: ...

    def finished(self, call: Call) -> None:
        self.calls.append(dataclasses.replace(call))
        self.done.set()


def test_observers_see_the_surface_model_and_usage() -> None:
    seen = Finished()
    app = create_app(settings(), observers=(seen,))
    with serve_in_thread(app) as url:
        sdk(url).embeddings.create(model="echo/echo", input=["one two", "three"])
        assert seen.done.wait(5)
    call = seen.calls[0]
    assert (call.surface, call.model, call.deployment) == ("embeddings", "echo/echo", "echo/echo")
    assert call.usage is not None and call.usage.input_tokens == 3
    assert call.status == 200 and call.error_code is None
