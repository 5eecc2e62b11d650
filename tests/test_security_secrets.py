"""Secrets never leave: upstream and client keys appear in nothing the gateway emits.

The real console script runs as a subprocess, with canary keys for its upstreams and its
clients. Every path is driven - successes, client errors, upstream errors whose bodies, headers
and redirects echo the upstream key back (tests/support/leaky_upstream.py), dead upstreams,
malformed HTTP - on every surface (chat, Anthropic's Messages with ``x-api-key``, Responses),
with the admin API and a virtual key made, used and revoked; every response status line,
header and body, the process's whole log output (debug level, access log included) and the
SQLite file that holds the keys and the ledger are searched for the canaries (the virtual key
among them) and for every 12-character piece of them, case-insensitively.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import GatewayFactory, post_chat
from tests.support import rawhttp
from tests.support.clients import sdk
from tests.support.fault_upstream import FaultUpstream, serve_fault_upstream
from tests.support.leaky_upstream import LeakyUpstream, serve_leaky_upstream
from tests.support.servers import GATEWAY, free_port, spawn

UPSTREAM_KEY = "sk-canary-upstream-7Hq2Zx9Lw4Tb"
LEAKY_KEY = "sk-canary-leakyup-Fa3Gs7Hd2JkM"
DEAD_KEY = "sk-canary-deadport-Vb8Nc3Rt6YpQ"
CLIENT_KEY = "gw-canary-client-Pz5Kd1Mj0QwE"
ADMIN_KEY = "gw-canary-admin-Wd6Ug2Xe8RsN"
CANARIES = (UPSTREAM_KEY, LEAKY_KEY, DEAD_KEY, CLIENT_KEY, ADMIN_KEY)
LEAKY_STATUSES = (400, 401, 403, 404, 409, 413, 422, 429, 500, 502, 503)
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]


def fragments(secret: str, size: int = 12) -> set[str]:
    return {secret[i : i + size].lower() for i in range(len(secret) - size + 1)}


def leaks(text: str, canaries: tuple[str, ...] = CANARIES) -> list[str]:
    """The canary fragments found in ``text``."""
    lowered = text.lower()
    return sorted({f for c in canaries for f in fragments(c) if f in lowered})


def env_lines(fault_url: str, leaky_url: str) -> list[str]:
    lines = [
        f"GATEWAY_API_KEYS=[{json.dumps(CLIENT_KEY)}]",
        f"GATEWAY_ADMIN_KEY={ADMIN_KEY}",
        "GATEWAY_MAX_BODY_BYTES=65536",
        "GATEWAY_PROVIDERS__FAULT__TYPE=openai",
        f"GATEWAY_PROVIDERS__FAULT__BASE_URL={fault_url}",
        f"GATEWAY_PROVIDERS__FAULT__API_KEY={UPSTREAM_KEY}",
        'GATEWAY_PROVIDERS__FAULT__MODELS=["ok", "status:500", "error-frame:1", "malformed"]',
        "GATEWAY_PROVIDERS__FAULT__MAX_RETRIES=0",
        "GATEWAY_PROVIDERS__DEAD__TYPE=openai",
        f"GATEWAY_PROVIDERS__DEAD__BASE_URL=http://127.0.0.1:{free_port()}/v1",
        f"GATEWAY_PROVIDERS__DEAD__API_KEY={DEAD_KEY}",
        'GATEWAY_PROVIDERS__DEAD__MODELS=["m"]',
        "GATEWAY_PROVIDERS__DEAD__MAX_RETRIES=1",  # a retry is logged, with the error's message
    ]
    # One provider per status, each with its own circuit breaker, so that none opens mid-sweep.
    behaviours = {f"leak{code}": [f"status-{code}", f"detail-{code}"] for code in LEAKY_STATUSES}
    behaviours["leakmisc"] = ["frame", "redirect-302", "redirect-307"]
    for name, models in behaviours.items():
        prefix = f"GATEWAY_PROVIDERS__{name.upper()}__"
        lines += [
            f"{prefix}TYPE=openai",
            f"{prefix}BASE_URL={leaky_url}",
            f"{prefix}API_KEY={LEAKY_KEY}",
            f"{prefix}MODELS={json.dumps(models)}",
            f"{prefix}MAX_RETRIES={1 if name in ('leak500', 'leak503') else 0}",
        ]
    return lines


class Sweep:
    """Everything the gateway sent back, labelled by what was asked."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.emitted: list[tuple[str, str]] = []
        self.client = httpx.Client(base_url=base_url, timeout=15, trust_env=False)
        self.auth = {"authorization": f"Bearer {CLIENT_KEY}"}

    def keep(self, label: str, response: httpx.Response) -> httpx.Response:
        head = "\n".join(
            f"{k.decode('latin-1')}: {v.decode('latin-1')}" for k, v in response.headers.raw
        )
        self.emitted.append((label, f"{response.status_code}\n{head}\n\n{response.text}"))
        return response

    def chat(self, label: str, body: object, **kwargs: object) -> httpx.Response:
        headers = {**self.auth, **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        if isinstance(body, bytes):
            headers.setdefault("content-type", "application/json")
            response = self.client.post("/v1/chat/completions", content=body, headers=headers)
        else:
            response = self.client.post("/v1/chat/completions", json=body, headers=headers)
        return self.keep(label, response)

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.keep(
            f"GET {path}", self.client.get(path, headers=self.auth if headers is None else headers)
        )

    def raw(self, label: str, request: bytes) -> rawhttp.RawResponse:
        response = rawhttp.exchange(self.base_url, request)
        text = response.head.decode("latin-1") + "\n\n" + response.body.decode("latin-1")
        self.emitted.append((label, text))
        return response


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[tuple[str, FaultUpstream], tuple[str, LeakyUpstream]]]:
    with serve_fault_upstream() as fault, serve_leaky_upstream() as leaky:
        leaky[1].redirect_to = fault[0] + "/chat/completions"
        yield fault, leaky


def drive_models_and_chat(sweep: Sweep) -> None:
    for model in ("fault/ok", "fault/status:500", "fault/error-frame:1", "fault/malformed"):
        for stream in (False, True):
            body: dict[str, Any] = {"model": model, "messages": USER, "stream": stream}
            if stream:
                body["stream_options"] = {"include_usage": True}
            sweep.chat(f"{model} stream={stream}", body)
    for code in LEAKY_STATUSES:
        for behaviour in ("status", "detail"):
            for stream in (False, True):
                model = f"leak{code}/{behaviour}-{code}"
                sweep.chat(
                    f"{model} stream={stream}", {"model": model, "messages": USER, "stream": stream}
                )
    for model in ("leakmisc/frame", "leakmisc/redirect-302", "leakmisc/redirect-307", "dead/m"):
        for stream in (False, True):
            sweep.chat(
                f"{model} stream={stream}", {"model": model, "messages": USER, "stream": stream}
            )
    for model in ("nope/x", "fault/nope", "leak400/unknown"):
        sweep.chat(f"unknown {model}", {"model": model, "messages": USER})
    for path in ("/v1/models", "/v1/models/fault/ok", "/v1/models/leak401/status-401", "/health"):
        sweep.get(path)
    # The real SDK, whose exceptions carry the error body: their text is emitted too.
    client = sdk(sweep.base_url, CLIENT_KEY, timeout=15)
    sweep.emitted.append(
        (
            "sdk ok",
            client.chat.completions.create(model="fault/ok", messages=USER).model_dump_json(),
        )
    )
    for model in ("leak401/status-401", "leak400/status-400", "leakmisc/frame"):
        with pytest.raises(openai.APIError) as caught:
            list(client.chat.completions.create(model=model, messages=USER, stream=True))
        sweep.emitted.append((f"sdk {model}", f"{caught.value!s} {caught.value.body!r}"))


SURFACE_MODELS = (
    "fault/ok",
    "fault/status:500",
    "fault/error-frame:1",
    "leak401/status-401",
    "leak400/detail-400",
    "leak429/detail-429",
    "leakmisc/frame",
    "dead/m",
)


def drive_messages_and_responses(sweep: Sweep) -> None:
    """The Anthropic and Responses surfaces, over the same upstream failures; Messages with
    the key in ``x-api-key`` as Claude Code sends it."""
    anthropic = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}
    for model in SURFACE_MODELS:
        for stream in (False, True):
            body = {"model": model, "max_tokens": 32, "stream": stream, "messages": USER}
            sweep.keep(
                f"messages {model} stream={stream}",
                sweep.client.post("/v1/messages", json=body, headers=anthropic),
            )
            body = {"model": model, "input": "hello there", "stream": stream}
            sweep.keep(
                f"responses {model} stream={stream}",
                sweep.client.post("/v1/responses", json=body, headers=sweep.auth),
            )
    sweep.keep(
        "messages count_tokens",
        sweep.client.post(
            "/v1/messages/count_tokens",
            json={"model": "fault/ok", "messages": USER},
            headers=anthropic,
        ),
    )
    for wrong in (CLIENT_KEY + "x", UPSTREAM_KEY, ADMIN_KEY):
        sweep.keep(
            "messages wrong key",
            sweep.client.post(
                "/v1/messages",
                json={"model": "fault/ok", "max_tokens": 8, "messages": USER},
                headers={**anthropic, "x-api-key": wrong},
            ),
        )


def drive_virtual_keys(sweep: Sweep) -> str:
    """A virtual key made, used on every surface, refused a model, revoked; the admin API with
    wrong keys. Returns the virtual key's secret (a canary from then on)."""
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    created = sweep.client.post(  # not kept: this one answer shows the secret, by design
        "/admin/keys", json={"name": "canary", "models": ["fault/ok"], "rpm": 1000}, headers=admin
    )
    assert created.status_code == 201, created.text
    secret: str = created.json()["key"]
    key_id: str = created.json()["id"]
    virtual = {"authorization": f"Bearer {secret}"}
    sweep.keep(
        "virtual chat",
        sweep.client.post(
            "/v1/chat/completions", json={"model": "fault/ok", "messages": USER}, headers=virtual
        ),
    )
    sweep.keep(
        "virtual messages",
        sweep.client.post(
            "/v1/messages",
            json={"model": "fault/ok", "max_tokens": 8, "messages": USER},
            headers={"x-api-key": secret, "anthropic-version": "2023-06-01"},
        ),
    )
    sweep.keep(
        "virtual responses",
        sweep.client.post(
            "/v1/responses", json={"model": "fault/ok", "input": "hi"}, headers=virtual
        ),
    )
    sweep.keep(
        "virtual model not allowed",
        sweep.client.post(
            "/v1/chat/completions", json={"model": "dead/m", "messages": USER}, headers=virtual
        ),
    )
    for path in ("/admin/keys", f"/admin/keys/{key_id}", "/admin/usage?group_by=key,model"):
        sweep.get(path, headers=admin)
        sweep.get(path, headers=virtual)  # a client key is no admin key
        sweep.get(path, headers=sweep.auth)
    sweep.keep("revoke", sweep.client.delete(f"/admin/keys/{key_id}", headers=admin))
    sweep.keep(
        "revoked chat",
        sweep.client.post(
            "/v1/chat/completions", json={"model": "fault/ok", "messages": USER}, headers=virtual
        ),
    )
    sweep.get("/metrics", headers=admin)
    sweep.get("/metrics", headers={"authorization": f"Bearer {ADMIN_KEY[:-1]}"})
    return secret


def drive_client_mistakes(sweep: Sweep) -> None:
    key = CLIENT_KEY
    sweep.chat(
        "invalid json holding the key", b'{"model": "fault/ok", "messages": [' + key.encode()
    )
    sweep.chat("key as api_key", {"model": "fault/ok", "messages": USER, "api_key": key})
    sweep.chat(
        "key nested", {"model": "fault/ok", "messages": [{**USER[0], "extra_headers": {"x": key}}]}
    )
    sweep.chat("key as temperature", {"model": "fault/ok", "messages": USER, "temperature": key})
    sweep.chat("key as role", {"model": "fault/ok", "messages": [{"role": key, "content": "x"}]})
    sweep.chat("key as text/plain", key.encode(), headers={"content-type": "text/plain"})
    sweep.chat(
        "key in a body too large", {"model": "fault/ok", "messages": USER, "pad": [key] * 4000}
    )
    for authorization in (
        f"Bearer {key}x",
        f"Bearer {key[:-1]}",
        f"Basic {key}",
        key,
        f"Bearer {UPSTREAM_KEY}",
    ):
        sweep.keep(
            "wrong key", sweep.client.get("/v1/models", headers={"authorization": authorization})
        )
        sweep.chat(
            "wrong key chat",
            {"model": "fault/ok", "messages": USER},
            headers={"authorization": authorization},
        )
    for query in ("api_key", "key", "API_KEY", "token", "access_token", "x"):
        sweep.get(f"/v1/models?{query}={key}")
        sweep.get(f"/health?{query}={key}", headers={})
        sweep.keep(
            f"chat ?{query}=",
            sweep.client.post(
                f"/v1/chat/completions?{query}={key}",
                json={"model": "fault/ok", "messages": USER},
                headers=sweep.auth,
            ),
        )
    sweep.get(f"/v1/nothing?x={key}")
    sweep.keep("405", sweep.client.get("/v1/chat/completions", headers=sweep.auth))
    sweep.raw(
        "parser error",
        f"GET /v1/models?api_key={key} HTTP/1.1\r\nhost: x\r\n".encode()
        + f"Authorization : Bearer {key}\r\n\r\n".encode(),
    )
    sweep.raw(
        "headers too large",
        f"GET /v1/models?key={key} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n".encode()
        + b"x-pad: "
        + b"p" * 300_000
        + b"\r\n\r\n",
    )


def test_no_canary_key_leaves_the_gateway(
    tmp_path: Path, upstreams: tuple[tuple[str, FaultUpstream], tuple[str, LeakyUpstream]]
) -> None:
    (fault_url, fault), (leaky_url, leaky) = upstreams
    env_file = tmp_path / "canary.env"
    env_file.write_text("\n".join(env_lines(fault_url, leaky_url)) + "\n")
    port = free_port()
    with spawn(
        [
            GATEWAY,
            "--no-ui",
            "--log-level",
            "debug",
            "--env-file",
            str(env_file),
            "--port",
            str(port),
        ],
        env={},
        ready_url=f"http://127.0.0.1:{port}/health",
        cwd=tmp_path,
    ) as server:
        sweep = Sweep(server.base_url)
        with sweep.client:
            drive_models_and_chat(sweep)
            drive_messages_and_responses(sweep)
            virtual_key = drive_virtual_keys(sweep)
            drive_client_mistakes(sweep)
    output = server.output()
    sweep.emitted.append(("the process's log output", output))
    # The keys and the ledger: a keyed digest of each key, never the key.
    database = (tmp_path / "llm-gateway.db").read_bytes().decode("latin-1")
    for suffix in ("", "-wal"):
        extra = tmp_path / f"llm-gateway.db{suffix}"
        if suffix and extra.exists():
            database += extra.read_bytes().decode("latin-1")
    sweep.emitted.append(("the SQLite database", database))

    # The sweep did reach every path: the statuses a client sees, and the access log lines.
    statuses = {text.split("\n", 1)[0] for _, text in sweep.emitted}
    assert {"200", "400", "401", "404", "405", "413", "415", "429", "502"} <= statuses, statuses
    assert "431" in next(text for label, text in sweep.emitted if label == "headers too large")
    for line in (
        '"GET /v1/models" 400',
        '"GET /v1/models" 401',
        '"POST /v1/chat/completions" 502',
        '"POST /v1/messages" 200',
        '"POST /v1/messages" 401',
        '"POST /v1/responses" 502',
        '"POST /admin/keys" 201',
    ):
        assert line in output, f"no access log line {line}"
    assert "403" in next(t for label, t in sweep.emitted if label == "virtual model not allowed")
    assert "401" in next(t for label, t in sweep.emitted if label == "revoked chat")
    assert "retrying" in output, "a retry was logged"

    every = (*CANARIES, virtual_key)
    found = [(label, leaks(text, every)) for label, text in sweep.emitted if leaks(text, every)]
    assert not found, "canary keys leaked:\n" + "\n".join(f"  {label}: {f}" for label, f in found)

    # Each upstream got its own key, really had it to leak, and never saw the client's.
    assert fault.requests and leaky.requests
    assert {r.headers.get("authorization") for r in fault.requests} == {f"Bearer {UPSTREAM_KEY}"}
    assert {r.headers.get("authorization") for r in leaky.requests} == {f"Bearer {LEAKY_KEY}"}
    for request in [*fault.requests, *leaky.requests]:
        assert not any(f in repr(request).lower() for f in fragments(CLIENT_KEY))
    # The leaky upstream redirects to the fault upstream: no redirect was followed.
    assert {r.model for r in fault.requests} <= {"ok", "status:500", "error-frame:1", "malformed"}


def test_an_echoed_key_without_a_known_prefix_is_redacted_in_every_form(
    make_gateway: GatewayFactory,
    upstreams: tuple[tuple[str, FaultUpstream], tuple[str, LeakyUpstream]],
) -> None:
    key = "CanaryKeyWithoutAnyPrefix9Xq3Lm7"
    url = make_gateway(
        providers={
            "leaky": {
                "type": "openai",
                "base_url": upstreams[1][0],
                "api_key": key,
                "models": ["status-400", "frame"],
                "max_retries": 0,
            }
        }
    )
    texts = [
        post_chat(url, {"model": model, "messages": USER, "stream": stream}).text
        for model in ("leaky/status-400", "leaky/frame")
        for stream in (False, True)
    ]
    assert key in repr(upstreams[1][1].requests[-1].headers), "the upstream had the key to leak"
    found = {f for text in texts for f in fragments(key) if f in text.lower()}
    assert not found, f"pieces of the upstream key leaked: {sorted(found)}"
