"""Provider plugins end to end: loaded lazily by entry point, refused in one line when broken,
contained when they misbehave at run time, and listed by ``llm-gateway plugins``.

Fake distributions are written as ``*.dist-info`` directories (no pip); the scripted example
(``examples/llm-gateway-scripted``) is installed with pip, as a user would, and serves the
openai SDK from a three-line env file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.app import create_app
from gateway.settings import ConfigError, Settings, load_settings
from providers import registry
from tests.conftest import settings, sse_data
from tests.support.clients import sdk
from tests.support.plugin_dists import behaving_source, write_distribution
from tests.support.plugin_install import SCRIPTED, gateway_with_plugins, serve_scripted
from tests.support.servers import GATEWAY, free_port, serve_in_thread

Install = Callable[..., None]
MARKER = "imported.marker"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on ``sys.path`` for fake distributions; the registry and the modules
    imported from it are forgotten afterwards."""
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    registry.clear_cache()
    yield path
    registry.clear_cache()
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", "") or "").startswith(str(path)):
            del sys.modules[name]


@pytest.fixture
def install(site: Path) -> Install:
    def add(**distribution: Any) -> None:
        write_distribution(site, **distribution)
        registry.clear_cache()

    return add


def install_fake(install: Install, type_name: str = "fake", **kwargs: Any) -> None:
    module = f"{type_name}_plugin"
    install(
        name=f"llm-gateway-{type_name}",
        version="0.3",
        types={type_name: f"{module}:SPEC"},
        modules={module: behaving_source(type_name, **kwargs)},
    )


def broken_source(marker: Path) -> str:
    """A plugin module that leaves ``marker`` behind when imported, then fails."""
    return f"open({str(marker)!r}, 'w').close()\nimport llm_gateway_missing_dependency\n"


# --- loading ---------------------------------------------------------------------------------


def test_a_configured_plugin_serves_like_a_built_in(install: Install, tmp_path: Path) -> None:
    install_fake(install)
    install(
        name="llm-gateway-broken",
        version="1.0",
        types={"broken": "broken_plugin:SPEC"},
        modules={"broken_plugin": broken_source(tmp_path / MARKER)},
    )
    config = settings(providers={"f": {"type": "fake", "greeting": "hey"}, "e": {"type": "echo"}})
    with serve_in_thread(create_app(config)) as url:
        client = sdk(url)
        stream = client.chat.completions.create(
            model="f/ok", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == (
            "hey from the plugin"
        )
        whole = client.chat.completions.create(
            model="e/echo", messages=[{"role": "user", "content": "echo too"}]
        )
        assert whole.choices[0].message.content == "echo too"
    assert not (tmp_path / MARKER).exists(), "an unconfigured plugin was imported"


def test_only_the_configured_type_is_imported_and_then_cached(
    install: Install, tmp_path: Path
) -> None:
    install_fake(install)
    install(
        name="llm-gateway-broken",
        version="1.0",
        types={"broken": "broken_plugin:SPEC"},
        modules={"broken_plugin": broken_source(tmp_path / MARKER)},
    )
    spec = registry.provider_type("fake")
    assert registry.provider_type("fake") is spec
    assert "fake_plugin" in sys.modules and "broken_plugin" not in sys.modules
    assert not (tmp_path / MARKER).exists()
    with pytest.raises(registry.PluginError) as caught:
        registry.provider_type("broken")
    assert (tmp_path / MARKER).exists()
    assert str(caught.value) == (
        "provider type 'broken' from llm-gateway-broken 1.0 failed to load: "
        "ModuleNotFoundError: No module named 'llm_gateway_missing_dependency'"
    )


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (
            "contract",
            "provider type 'fake' from llm-gateway-fake 0.3 failed to load: it was written for "
            "provider contract version 99, and this gateway speaks version 1",
        ),
        (
            "misnamed",
            "provider type 'fake' from llm-gateway-fake 0.3 failed to load: its spec is named "
            "'other', not 'fake' as its entry point says",
        ),
        (
            "not-a-spec",
            "provider type 'fake' from llm-gateway-fake 0.3 failed to load: it is a dict, not a "
            "providers.spec.ProviderType",
        ),
        (
            "no-object",
            "provider type 'fake' from llm-gateway-fake 0.3 failed to load: AttributeError: "
            "module 'fake_plugin' has no attribute 'SPEC'",
        ),
    ],
)
def test_a_plugin_that_breaks_the_contract_is_refused_by_name(
    install: Install, case: str, message: str
) -> None:
    source = {
        "contract": behaving_source("fake", contract=99),
        "misnamed": behaving_source("other"),
        "not-a-spec": "SPEC = {'name': 'fake'}\n",
        "no-object": "NOT_SPEC = None\n",
    }[case]
    install(
        name="llm-gateway-fake",
        version="0.3",
        types={"fake": "fake_plugin:SPEC"},
        modules={"fake_plugin": source},
    )
    with pytest.raises(ConfigError) as caught:
        settings_from({"GATEWAY_PROVIDERS__X__TYPE": "fake"})
    assert str(caught.value).startswith("invalid configuration: GATEWAY_PROVIDERS__X__TYPE: ")
    assert message in str(caught.value)


def settings_from(values: dict[str, str]) -> Settings:
    """Settings from an env file holding ``values``, as the CLI reads them."""
    path = Path("gateway.env")
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return load_settings(path)


def test_a_plugin_named_like_a_built_in_is_refused_only_when_that_type_is_used(
    install: Install,
) -> None:
    install_fake(install)
    install(
        name="llm-gateway-evil",
        version="6.6.6",
        types={"echo": "fake_plugin:SPEC"},
    )
    assert settings_from({"GATEWAY_PROVIDERS__F__TYPE": "fake"}).providers["f"].spec.name == "fake"
    with pytest.raises(ConfigError) as caught:
        settings_from({})  # no provider: the echo default
    assert str(caught.value) == (
        "invalid configuration: GATEWAY_PROVIDERS__ECHO__TYPE: provider type 'echo' is built in, "
        "and llm-gateway-evil 6.6.6 also declares it: a plugin cannot replace a built-in type; "
        "uninstall that distribution or have it use another name"
    )


def test_two_distributions_claiming_one_type_are_named_when_it_is_used(install: Install) -> None:
    for name in ("llm-gateway-twin-b", "llm-gateway-twin-a"):
        install(name=name, version="1.0", types={"twin": "nowhere:SPEC"})
    settings_from({})  # unused: no error
    with pytest.raises(ConfigError) as caught:
        settings_from({"GATEWAY_PROVIDERS__T__TYPE": "twin"})
    assert str(caught.value) == (
        "invalid configuration: GATEWAY_PROVIDERS__T__TYPE: provider type 'twin' is declared by "
        "more than one distribution (llm-gateway-twin-a 1.0 and llm-gateway-twin-b 1.0): "
        "uninstall all but one"
    )


def test_an_unknown_type_lists_the_plugins_too(install: Install) -> None:
    install_fake(install)
    with pytest.raises(
        ConfigError, match=r"unknown provider type 'nope' \(known: anthropic, echo, fake, gemini,"
    ):
        settings_from({"GATEWAY_PROVIDERS__X__TYPE": "nope"})


def test_a_plugins_options_are_validated_like_a_built_ins(install: Install) -> None:
    install_fake(install)
    with pytest.raises(ConfigError) as caught:
        settings_from({"GATEWAY_PROVIDERS__X__TYPE": "fake", "GATEWAY_PROVIDERS__X__COLOUR": "red"})
    assert str(caught.value) == (
        "invalid configuration: GATEWAY_PROVIDERS__X__COLOUR: not a variable of provider type "
        "'fake'"
    )


# --- the command line: one line and exit 2, never a traceback --------------------------------


def start(env: dict[str, str], site: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run the gateway on an env file of ``env`` with ``site`` on its path; it must stop."""
    env_file = tmp_path / "gateway.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    return subprocess.run(
        [GATEWAY, "--no-ui", "--env-file", str(env_file), "--port", str(free_port())],
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"GATEWAY_PROVIDERS__X__TYPE": "broken"},
            "GATEWAY_PROVIDERS__X__TYPE: provider type 'broken' from llm-gateway-broken 1.0 "
            "failed to load: ModuleNotFoundError: No module named 'llm_gateway_missing_dependency'",
        ),
        (
            {"GATEWAY_PROVIDERS__X__TYPE": "fake", "GATEWAY_PROVIDERS__X__GREETING": '["a"]'},
            "GATEWAY_PROVIDERS__X__GREETING: Input should be a valid string",
        ),
        (
            {"GATEWAY_PROVIDERS__X__TYPE": "old"},
            "GATEWAY_PROVIDERS__X__TYPE: provider type 'old' from llm-gateway-old 0.3 failed to "
            "load: it was written for provider contract version 0",
        ),
        ({}, "GATEWAY_PROVIDERS__ECHO__TYPE: provider type 'echo' is built in, and llm-gateway-"),
        (
            {
                "GATEWAY_PROVIDERS__X__TYPE": "fake",
                "GATEWAY_PROVIDERS__X__GREETING": "explode-options",
            },
            "GATEWAY_PROVIDERS__X__TYPE: provider type 'fake' failed to read its options "
            "(KeyError;",
        ),
        (
            {
                "GATEWAY_PROVIDERS__X__TYPE": "fake",
                "GATEWAY_PROVIDERS__X__GREETING": "explode-create",
            },
            "GATEWAY_PROVIDERS__X__TYPE: provider type 'fake' failed to start (RuntimeError;",
        ),
    ],
    ids=[
        "import-error",
        "bad-options",
        "contract",
        "shadows-echo",
        "options-raise",
        "create-raises",
    ],
)
def test_a_configured_plugin_that_cannot_load_stops_the_start_in_one_line(
    install: Install, site: Path, tmp_path: Path, env: dict[str, str], line: str
) -> None:
    install_fake(install)
    install_fake(install, "old", contract=0)
    install(
        name="llm-gateway-broken",
        version="1.0",
        types={"broken": "broken_plugin:SPEC"},
        modules={"broken_plugin": broken_source(tmp_path / MARKER)},
    )
    if not env:
        install(name="llm-gateway-evil", version="6.6.6", types={"echo": "fake_plugin:SPEC"})
    result = start(env, site, tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("llm-gateway: invalid configuration: " + line), lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert "sk-plugin-secret" not in result.stderr + result.stdout


def test_an_unconfigured_broken_plugin_costs_nothing(
    install: Install, site: Path, tmp_path: Path
) -> None:
    install_fake(install)
    install(
        name="llm-gateway-broken",
        version="1.0",
        types={"broken": "broken_plugin:SPEC"},
        modules={"broken_plugin": broken_source(tmp_path / MARKER)},
    )
    with gateway_with_plugins(
        site, tmp_path, "GATEWAY_PROVIDERS__F__TYPE=fake", "GATEWAY_PROVIDERS__E__TYPE=echo"
    ) as server:
        client = sdk(server.base_url)
        for model, text in [("f/ok", "hello from the plugin"), ("e/echo", "hi")]:
            reply = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}]
            )
            assert reply.choices[0].message.content == text
    assert not (tmp_path / MARKER).exists()
    assert "Traceback" not in server.output()


def test_plugins_command_lists_types_without_importing_plugins(
    install: Install, site: Path, tmp_path: Path
) -> None:
    install_fake(install)
    install(
        name="llm-gateway-broken",
        version="1.0",
        types={"broken": "broken_plugin:SPEC"},
        modules={"broken_plugin": broken_source(tmp_path / MARKER)},
    )
    install(name="llm-gateway-evil", version="6.6.6", types={"echo": "fake_plugin:SPEC"})
    for name in ("llm-gateway-twin-a", "llm-gateway-twin-b"):
        install(name=name, version="2.0", types={"twin": "nowhere:SPEC"})
    result = subprocess.run(
        [GATEWAY, "plugins"],
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0] == ["TYPE", "KIND", "DISTRIBUTION", "VERSION", "NOTE"]
    assert ["echo", "built-in", "llm-gateway"] in [row[:3] for row in rows]
    assert ["openai", "built-in", "llm-gateway"] in [row[:3] for row in rows]
    assert ["broken", "plugin", "llm-gateway-broken", "1.0"] in rows
    assert ["fake", "plugin", "llm-gateway-fake", "0.3"] in rows
    evil = next(row for row in rows if row[2] == "llm-gateway-evil")
    assert " ".join(evil) == (
        "echo plugin llm-gateway-evil 6.6.6 refused: a built-in type has this name"
    )
    twins = [" ".join(row) for row in rows if row[0] == "twin"]
    assert twins == [
        f"twin plugin llm-gateway-twin-{x} 2.0 refused: another distribution declares this type"
        for x in "ab"
    ]
    assert not (tmp_path / MARKER).exists()


# --- run time: a plugin's bugs stay the plugin's ---------------------------------------------


@pytest.fixture
def fake_gateway(install: Install) -> Iterator[str]:
    install_fake(install)
    config = settings(providers={"f": {"type": "fake", "idle_timeout": 0.5, "max_retries": 0}})
    with serve_in_thread(create_app(config)) as url:
        yield url


def post(url: str, model: str, *, within: float = 10, **body: Any) -> httpx.Response:
    payload = {"model": model, "messages": [{"role": "user", "content": "hi"}], **body}
    return httpx.post(url + "/v1/chat/completions", json=payload, timeout=within)


def test_a_plugin_raising_before_its_first_chunk_is_a_502(fake_gateway: str) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(fake_gateway).chat.completions.create(
            model="f/raises-first", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 502
    assert caught.value.body == {
        "message": "the provider for f/raises-first failed",
        "type": "upstream_error",
        "param": None,
        "code": "provider_failed",
    }


def test_a_plugin_raising_mid_stream_ends_it_with_an_error_event(fake_gateway: str) -> None:
    response = post(fake_gateway, "f/raises-mid", stream=True)
    assert response.status_code == 200
    events = sse_data(response.text)
    assert '"content":"hello "' in events[0]
    assert events[-1].startswith('{"error":') and '"code":"provider_failed"' in events[-1]
    assert "[DONE]" not in events and "a bug mid-stream" not in response.text
    assert post(fake_gateway, "f/ok").json()["choices"][0]["message"]["content"] == (
        "hello from the plugin"
    )


def test_a_plugin_ignoring_cancellation_is_cut_off_at_the_idle_timeout(
    fake_gateway: str,
) -> None:
    started = time.monotonic()
    response = post(fake_gateway, "f/deaf", stream=True)
    elapsed = time.monotonic() - started
    events = sse_data(response.text)
    assert '"code":"idle_timeout"' in events[-1]
    assert "still here" not in response.text
    assert 0.4 < elapsed < 2.5
    assert post(fake_gateway, "f/ok").status_code == 200


def test_a_plugin_swallowing_every_cancellation_still_ends_the_request(
    install: Install, site: Path, tmp_path: Path
) -> None:
    install_fake(install)
    with gateway_with_plugins(
        site, tmp_path, "GATEWAY_PROVIDERS__F__TYPE=fake", "GATEWAY_PROVIDERS__F__IDLE_TIMEOUT=0.5"
    ) as server:
        try:
            response = post(server.base_url, "f/deaf-forever", within=3, stream=True)
        except httpx.ReadTimeout:
            pytest.fail("the request did not end within 3 s")
        finally:
            server.proc.kill()  # its drain would wait for the hung request too
        assert '"code":"idle_timeout"' in sse_data(response.text)[-1]


# --- the scripted example, installed with pip ------------------------------------------------

SCRIPT = [
    {
        "match": "(?i)weather",
        "reasoning": "The user wants the weather: ask the tool.",
        "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}],
    },
    {"match": '"temp": \\d+', "content": "It is 18 degrees and mild in Paris."},
    {"match": "(?i)^hello", "content": "Hello! Ask me about the weather."},
]
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.fixture
def scripted_gateway(scripted_site: Path, tmp_path: Path) -> Iterator[str]:
    with serve_scripted(scripted_site, tmp_path, SCRIPT) as url:
        yield url


def test_scripted_serves_reasoning_and_tool_calls_then_answers_the_tool_result(
    scripted_gateway: str,
) -> None:
    client = sdk(scripted_gateway)
    question: list[Any] = [{"role": "user", "content": "What's the weather in Paris?"}]
    reasoning, finish = "", None
    calls: dict[int, dict[str, Any]] = {}
    for chunk in client.chat.completions.create(
        model="bot/agent", messages=question, tools=TOOLS, stream=True
    ):
        delta = chunk.choices[0].delta
        reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
        for piece in delta.tool_calls or ():
            entry = calls.setdefault(piece.index, {"id": piece.id, "name": "", "arguments": ""})
            assert piece.function is not None
            entry["name"] += piece.function.name or ""
            entry["arguments"] += piece.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert reasoning == "The user wants the weather: ask the tool."
    assert calls == {0: {"id": "call_0", "name": "get_weather", "arguments": '{"city": "Paris"}'}}
    assert finish == "tool_calls"

    whole = client.chat.completions.create(model="bot/agent", messages=question, tools=TOOLS)
    message = whole.choices[0].message
    assert (message.model_extra or {}).get("reasoning_content") == reasoning
    assert message.tool_calls is not None and whole.choices[0].finish_reason == "tool_calls"
    call = message.tool_calls[0]
    assert call.type == "function"  # narrows the union for the lines below
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "get_weather",
        {"city": "Paris"},
    )
    assert whole.usage is not None and whole.usage.completion_tokens > 0

    answered = [
        *question,
        message.model_dump(include={"role", "content", "tool_calls"}),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 18}'},
    ]
    final = client.chat.completions.create(model="bot/agent", messages=answered, tools=TOOLS)
    assert final.choices[0].message.content == "It is 18 degrees and mild in Paris."
    assert final.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model="bot/agent", messages=answered, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == (
        "It is 18 degrees and mild in Paris."
    )


def test_scripted_answers_text_and_refuses_what_no_turn_matches(scripted_gateway: str) -> None:
    client = sdk(scripted_gateway)
    hello = client.chat.completions.create(
        model="bot/agent", messages=[{"role": "user", "content": "Hello there"}]
    )
    assert hello.choices[0].message.content == "Hello! Ask me about the weather."
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="bot/agent", messages=[{"role": "user", "content": "Tell me a joke"}]
        )
    assert "no turn of the script matches the last message" in caught.value.message


def test_a_bad_script_stops_the_start_naming_the_variable_and_turn(
    scripted_site: Path, tmp_path: Path
) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"content": "ok"}, {"match": "(unclosed", "content": "x"}]))
    env = {
        "GATEWAY_PROVIDERS__BOT__TYPE": "scripted",
        "GATEWAY_PROVIDERS__BOT__SCRIPT": str(script),
    }
    result = start(env, scripted_site, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "llm-gateway: invalid configuration: GATEWAY_PROVIDERS__BOT__SCRIPT: turn 2: match: not "
        "a valid regular expression (missing ), unterminated subpattern at position 0)"
    )


def test_the_installed_plugin_is_listed_and_passes_its_own_tests(
    scripted_site: Path, tmp_path: Path
) -> None:
    listing = subprocess.run(
        [GATEWAY, "plugins"],
        env={"PYTHONPATH": str(scripted_site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0
    assert ["scripted", "plugin", "llm-gateway-scripted", "0.1.0"] in [
        line.split() for line in listing.stdout.splitlines()
    ]
    # Its tests alone (no source beside them), against the installed package.
    checkout = tmp_path / "checkout"
    shutil.copytree(SCRIPTED / "tests", checkout / "tests")
    shutil.copy(SCRIPTED / "pyproject.toml", checkout)
    result = subprocess.run(
        [sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        env={**os.environ, "PYTHONPATH": str(scripted_site)},
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and "skipped" not in result.stdout
