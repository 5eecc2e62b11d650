"""A virtual key's limits hold on every surface, each answering in its own shape: chat,
embeddings and the legacy completions through the openai SDK, the Responses API through it
too, and Messages through the anthropic SDK. For each: a model outside the key's list (403),
RPM (429 with the ``x-ratelimit-*`` lines on every answer, streams included), a token budget
(429 that says not to retry), and the ledger's rows, which carry the surface and the usage the
client was told, once per request.

A real gateway on 127.0.0.1 with an SQLite ledger; completions go to a real OpenAI-compatible
upstream over loopback (echo has no legacy completions)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types import RawMessageDeltaEvent, RawMessageStartEvent

from gateway.app import create_app
from tests.conftest import settings
from tests.support.clients import sdk
from tests.support.legacy_upstream import LegacyUpstream, serve_legacy_upstream
from tests.support.servers import serve_in_thread
from tests.support.services import ADMIN_KEY, Admin, ledger_rows

WORDS = "one two three four five"
PRICES = {
    "echo/echo": {"input": 1.0, "output": 2.0},
    "up/ok": {"input": 1.0, "output": 2.0},
}
Usage = tuple[int, int]  # (input, output) tokens as the client was told


@dataclass
class Gateway:
    url: str
    db: Path
    upstream: LegacyUpstream
    admin: Admin

    def rows(self, key_id: str) -> list[dict[str, Any]]:
        return ledger_rows(self.db, key_id)


@pytest.fixture(scope="module", params=[True, False], ids=["compiled", "python"])
def gateway(request: pytest.FixtureRequest) -> Iterator[Gateway]:
    """With the compiled admission (CI requires it built) and with the Python alone."""
    with (
        tempfile.TemporaryDirectory() as folder,
        serve_legacy_upstream() as (upstream_url, upstream),
    ):
        db = Path(folder) / "gateway.db"
        app = create_app(
            settings(
                admin_key=ADMIN_KEY,
                compiled_limits=request.param,
                database_url=f"sqlite:///{db}",
                prices=PRICES,
                providers={
                    "echo": {"type": "echo"},
                    "other": {"type": "echo", "models": ["echo"]},
                    "up": {
                        "type": "openai",
                        "base_url": upstream_url,
                        "api_key": "sk-up-0123456789",
                        "models": ["ok", "other"],
                    },
                },
            )
        )
        with serve_in_thread(app, access_log=False) as url:
            yield Gateway(url, db, upstream, Admin(url))


# Each surface: how its client asks (non-streamed and streamed), and what the client is told.


def _chat(url: str, key: str, model: str, stream: bool, **extra: Any) -> tuple[Any, Usage]:
    client = sdk(url, key).chat.completions.with_raw_response
    messages: Any = [{"role": "user", "content": WORDS}]
    if not stream:
        raw = client.create(model=model, messages=messages, **extra)
        usage = raw.parse().usage
        return raw.headers, (usage.prompt_tokens, usage.completion_tokens)
    raw = client.create(
        model=model,
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
        **extra,
    )
    usage = [chunk.usage for chunk in raw.parse() if chunk.usage is not None][-1]
    return raw.headers, (usage.prompt_tokens, usage.completion_tokens)


def _embeddings(url: str, key: str, model: str, stream: bool, **extra: Any) -> tuple[Any, Usage]:
    raw = sdk(url, key).embeddings.with_raw_response.create(model=model, input=WORDS)
    return raw.headers, (raw.parse().usage.prompt_tokens, 0)


def _completions(url: str, key: str, model: str, stream: bool, **extra: Any) -> tuple[Any, Usage]:
    client = sdk(url, key).completions.with_raw_response
    if not stream:
        raw = client.create(model=model, prompt=WORDS, **extra)
        usage = raw.parse().usage
        assert usage is not None
        return raw.headers, (usage.prompt_tokens, usage.completion_tokens)
    raw = client.create(
        model=model, prompt=WORDS, stream=True, stream_options={"include_usage": True}, **extra
    )
    usage = [chunk.usage for chunk in raw.parse() if chunk.usage is not None][-1]
    return raw.headers, (usage.prompt_tokens, usage.completion_tokens)


def _responses(url: str, key: str, model: str, stream: bool, **extra: Any) -> tuple[Any, Usage]:
    client = sdk(url, key).responses.with_raw_response
    if "max_tokens" in extra:
        extra["max_output_tokens"] = max(16, extra.pop("max_tokens"))
    if not stream:
        raw = client.create(model=model, input=WORDS, **extra)
        usage = raw.parse().usage
    else:
        raw = client.create(model=model, input=WORDS, stream=True, **extra)
        (usage,) = [e.response.usage for e in raw.parse() if e.type == "response.completed"]
    assert usage is not None
    return raw.headers, (usage.input_tokens, usage.output_tokens)


def _messages(url: str, key: str, model: str, stream: bool, **extra: Any) -> tuple[Any, Usage]:
    client = anthropic.Anthropic(base_url=url, api_key=key, max_retries=0, timeout=10)
    ask = client.messages.with_raw_response
    messages: Any = [{"role": "user", "content": WORDS}]
    max_tokens = extra.pop("max_tokens", 64)
    if not stream:
        raw = ask.create(model=model, max_tokens=max_tokens, messages=messages, **extra)
        usage = raw.parse().usage
        return raw.headers, (usage.input_tokens, usage.output_tokens)
    streamed = ask.create(
        model=model, max_tokens=max_tokens, messages=messages, stream=True, **extra
    )
    prompt = output = 0
    for event in streamed.parse():
        if isinstance(event, RawMessageStartEvent):
            prompt = event.message.usage.input_tokens  # an estimate: nothing is known yet
        elif isinstance(event, RawMessageDeltaEvent):
            assert event.usage.input_tokens is not None  # the real count, at the end
            prompt, output = event.usage.input_tokens, event.usage.output_tokens
    return streamed.headers, (prompt, output)


@dataclass(frozen=True)
class Surface:
    name: str  # the ledger's ``surface``
    ask: Callable[..., tuple[Any, Usage]]
    model: str  # on the key's list
    other: str  # served, but not on the key's list
    streams: bool
    anthropic: bool = False
    source: str = "provider"  # the usage's source in the ledger


SURFACES = [
    Surface("chat", _chat, "echo/echo", "other/echo", streams=True),
    # echo estimates its embeddings' input tokens, and says so
    Surface(
        "embeddings", _embeddings, "echo/echo", "other/echo", streams=False, source="estimated"
    ),
    Surface("completions", _completions, "up/ok", "up/other", streams=True),
    Surface("responses", _responses, "echo/echo", "other/echo", streams=True),
    Surface("messages", _messages, "echo/echo", "other/echo", streams=True, anthropic=True),
]


@pytest.fixture(params=SURFACES, ids=[s.name for s in SURFACES])
def surface(request: pytest.FixtureRequest) -> Surface:
    chosen: Surface = request.param
    return chosen


def _refused(surface: Surface, call: Callable[[], object]) -> tuple[int, dict[str, Any], Any]:
    """(status, the error body, the headers) of a call that must fail, with the error class
    and body shape of the surface's own API."""
    errors: tuple[type[Exception], ...] = (
        (anthropic.APIStatusError,) if surface.anthropic else (openai.APIStatusError,)
    )
    with pytest.raises(errors) as caught:
        call()
    error: Any = caught.value
    body = error.body
    if surface.anthropic:
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    else:
        assert set(body) >= {"message", "type", "code"}  # the SDK hands over body["error"]
    return error.status_code, body, error.response.headers


def test_a_model_off_the_keys_list_is_refused_on_every_surface(
    gateway: Gateway, surface: Surface
) -> None:
    created = gateway.admin.create(name=f"models-{surface.name}", models=[surface.model])
    key = created["key"]
    surface.ask(gateway.url, key, surface.model, False)
    status, body, _ = _refused(surface, lambda: surface.ask(gateway.url, key, surface.other, False))
    assert status == 403
    if surface.anthropic:
        assert body["error"]["type"] == "permission_error"
        assert surface.other in body["error"]["message"]
    else:
        assert (body["code"], body["param"]) == ("model_not_allowed", "model")
    gateway.admin.wait_requests(2, key_id=created["id"])
    served, refused = gateway.rows(created["id"])
    assert (served["surface"], served["status"], served["model"]) == (
        surface.name,
        200,
        surface.model,
    )
    # Refused before any upstream call: recorded, nothing charged.
    assert (refused["surface"], refused["status"], refused["attempts"]) == (surface.name, 403, 0)
    assert (refused["error_code"], refused["cost_micro_usd"]) == ("model_not_allowed", 0)


def test_rpm_holds_on_every_surface_with_its_lines_on_every_answer(
    gateway: Gateway, surface: Surface
) -> None:
    created = gateway.admin.create(name=f"rpm-{surface.name}", rpm=2)
    key = created["key"]
    left = []
    for stream in (False, surface.streams):  # the second one streamed where it can be
        headers, _ = surface.ask(gateway.url, key, surface.model, stream)
        assert headers["x-ratelimit-limit-requests"] == "2"
        assert headers["x-ratelimit-reset-requests"].endswith("s")
        left.append(headers["x-ratelimit-remaining-requests"])
    assert left == ["1", "0"]
    status, body, headers = _refused(
        surface, lambda: surface.ask(gateway.url, key, surface.model, False)
    )
    assert status == 429
    if surface.anthropic:
        assert body["error"]["type"] == "rate_limit_error"
    else:
        assert (body["code"], body["type"]) == ("rate_limit_exceeded", "rate_limit_error")
    assert 1 <= int(headers["retry-after"]) <= 60
    assert headers["x-should-retry"] == "true"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    gateway.admin.wait_requests(3, key_id=created["id"])
    rows = gateway.rows(created["id"])
    assert [(r["surface"], r["status"]) for r in rows] == [
        (surface.name, 200),
        (surface.name, 200),
        (surface.name, 429),
    ]
    assert [r["stream"] for r in rows] == [0, int(surface.streams), 0]


def test_a_token_budget_holds_on_every_surface_and_the_ledger_has_what_clients_were_told(
    gateway: Gateway, surface: Surface
) -> None:
    budget = 120
    created = gateway.admin.create(name=f"budget-{surface.name}", budget_tokens=budget)
    key = created["key"]
    told: list[Usage] = []
    for turn in range(40):
        stream = surface.streams and turn % 2 == 1
        try:
            told.append(surface.ask(gateway.url, key, surface.model, stream, max_tokens=8)[1])
        except (openai.RateLimitError, anthropic.RateLimitError) as exc:
            body: Any = exc.body
            if surface.anthropic:
                assert body["error"]["type"] == "rate_limit_error"
                assert "budget" in body["error"]["message"]
            else:
                assert (body["code"], body["type"]) == ("insufficient_quota", "insufficient_quota")
            # Neither SDK retries it: x-should-retry wins over the status.
            assert exc.response.headers["x-should-retry"] == "false"
            break
    else:
        pytest.fail("the token budget never ran out")
    assert len(told) >= 2
    spent = sum(prompt + output for prompt, output in told)
    assert spent <= budget
    total = gateway.admin.wait_requests(len(told) + 1, key_id=created["id"])["total"]
    assert total["requests"] == len(told) + 1
    assert (total["prompt_tokens"], total["completion_tokens"]) == (
        sum(p for p, _ in told),
        sum(o for _, o in told),
    )
    rows = gateway.rows(created["id"])
    assert {r["surface"] for r in rows} == {surface.name}
    assert [(r["prompt_tokens"], r["completion_tokens"]) for r in rows[:-1]] == told
    price = PRICES[surface.model]
    for row, (prompt, output) in zip(rows, told, strict=False):
        assert row["priced"] == 1 and row["usage_source"] == surface.source
        assert row["cost_micro_usd"] == prompt * price["input"] + output * price["output"]
    assert (rows[-1]["status"], rows[-1]["error_code"]) == (429, "insufficient_quota")


def test_the_legacy_completions_get_an_injected_output_cap(gateway: Gateway) -> None:
    """Without ``max_tokens`` a TPM key's reservation would have no bound: admission sets one
    on what goes upstream, the TPM minus the input estimate at most."""
    created = gateway.admin.create(name="cap-completions", tpm=1_000)
    gateway.upstream.reset()
    _completions(gateway.url, created["key"], "up/ok", False)
    (sent,) = [r.body for r in gateway.upstream.requests if r.path == "/v1/completions"]
    assert 1 <= sent["max_tokens"] < 1_000
    gateway.upstream.reset()
    _completions(gateway.url, created["key"], "up/ok", False, max_tokens=7)
    (sent,) = [r.body for r in gateway.upstream.requests if r.path == "/v1/completions"]
    assert sent["max_tokens"] == 7
