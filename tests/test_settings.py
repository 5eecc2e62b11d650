"""Configuration: env file and environment, and one clear line for every mistake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.settings import ConfigError, load_settings


def write_env(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.env"
    path.write_text(text)
    return path


def test_defaults_serve_one_echo_provider(tmp_path: Path) -> None:
    settings = load_settings()
    assert list(settings.providers) == ["echo"]
    assert settings.providers["echo"].models == ["echo"]
    assert (settings.host, settings.port, settings.api_keys) == ("127.0.0.1", 8000, None)


def test_env_file_with_mixed_case_names(tmp_path: Path) -> None:
    path = write_env(
        tmp_path,
        "gateway_providers__LoCaL__type=openai\n"
        "GATEWAY_PROVIDERS__LOCAL__BASE_URL=http://127.0.0.1:1/v1\n"
        'GATEWAY_PROVIDERS__local__MODELS=["llama3"]\n'
        "GATEWAY_PROVIDERS__LOCAL__API_KEY=sk-file-secret\n"
        'GATEWAY_ALIASES={"fast": "local/llama3"}\n'
        'GATEWAY_API_KEYS=["k1"]\n',
    )
    settings = load_settings(path)
    local = settings.providers["local"]
    assert local.type == "openai" and local.models == ["llama3"]
    api_key = local.options.api_key  # type: ignore[attr-defined]
    assert api_key is not None and api_key.get_secret_value() == "sk-file-secret"
    assert "sk-file-secret" not in repr(settings) and "k1" not in repr(settings)
    assert settings.aliases == {"fast": "local/llama3"}


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_env(tmp_path, "GATEWAY_PORT=9000\nGATEWAY_HOST=0.0.0.0\n")
    monkeypatch.setenv("GATEWAY_PORT", "9100")
    settings = load_settings(path)
    assert (settings.port, settings.host) == (9100, "0.0.0.0")


def test_dot_env_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("GATEWAY_PORT=9200\n")
    assert load_settings().port == 9200


@pytest.mark.parametrize(
    ("text", "variable"),
    [
        ("GATEWAY_PROVIDERS__X__TYPE=bogus\n", "GATEWAY_PROVIDERS__X__TYPE"),
        (
            'GATEWAY_PROVIDERS__X__TYPE=openai\nGATEWAY_PROVIDERS__X__MODELS=["m"]\n',
            "GATEWAY_PROVIDERS__X__BASE_URL",
        ),
        (
            "GATEWAY_PROVIDERS__X__TYPE=openai\nGATEWAY_PROVIDERS__X__BASE_URL=http://h/v1\n",
            "GATEWAY_PROVIDERS__X__MODELS",
        ),
        (
            "GATEWAY_PROVIDERS__X__TYPE=openai\nGATEWAY_PROVIDERS__X__BASE_URL=http://h/v1\n"
            "GATEWAY_PROVIDERS__X__MODELS=[bad\n",
            "GATEWAY_PROVIDERS__X__MODELS",
        ),
        (
            "GATEWAY_PROVIDERS__X__TYPE=echo\nGATEWAY_PROVIDERS__X__CHUNK_DELAY_MS=slow\n",
            "GATEWAY_PROVIDERS__X__CHUNK_DELAY_MS",
        ),
        (
            "GATEWAY_PROVIDERS__X__TYPE=openai\nGATEWAY_PROVIDERS__X__BASE_URL=https://h/v1\n"
            'GATEWAY_PROVIDERS__X__MODELS=["m"]\nGATEWAY_PROVIDERS__X__CA_BUNDLE=/no/such.pem\n',
            "GATEWAY_PROVIDERS__X__CA_BUNDLE",
        ),
        (
            "GATEWAY_PROVIDERS__X__TYPE=echo\nGATEWAY_PROVIDERS__X__BASE_URL=http://h/v1\n",
            "GATEWAY_PROVIDERS__X__BASE_URL",
        ),
        (
            "GATEWAY_PROVIDERS__X__TYPE=openai\nGATEWAY_PROVIDERS__X__BASE_URL=http://h/v1\n"
            'GATEWAY_PROVIDERS__X__MODELS=["m"]\nGATEWAY_PROVIDERS__X__API_KEY=sk-\u2603\n',
            "GATEWAY_PROVIDERS__X__API_KEY",
        ),
        (
            "GATEWAY_PROVIDERS__X__TYPE=echo\nGATEWAY_PROVIDERS__X__BREAKER_THRESHOLD=-1\n",
            "GATEWAY_PROVIDERS__X__BREAKER_THRESHOLD",
        ),
        ("GATEWAY_BREAKER_COOLDOWN=0\n", "GATEWAY_BREAKER_COOLDOWN"),
        ('GATEWAY_ALIASES={"a": [{"model": "echo/echo", "weight": 0}]}\n', "GATEWAY_ALIASES"),
        ('GATEWAY_ALIASES={"a": [{"model": "echo/nope"}]}\n', "GATEWAY_ALIASES"),
        ('GATEWAY_ALIASES={"a": []}\n', "GATEWAY_ALIASES"),
        ("GATEWAY_PORT=eighty\n", "GATEWAY_PORT"),
        ("GATEWAY_API_KEYS=[nope\n", "GATEWAY_API_KEYS"),
        ("GATEWAY_ALIASES={\n", "GATEWAY_ALIASES"),
        ("GATEWAY_IDLE_TIMEOUT=-3\n", "GATEWAY_IDLE_TIMEOUT"),
        ('GATEWAY_CORS_ORIGINS=["*"]\n', "GATEWAY_CORS_ORIGINS"),
    ],
)
def test_invalid_configuration_names_the_variable(tmp_path: Path, text: str, variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write_env(tmp_path, text))
    message = str(caught.value)
    assert f"{variable}:" in message or f"{variable}__" in message
    assert "\n" not in message


def test_cli_stops_with_one_line_and_status_2(tmp_path: Path) -> None:
    path = write_env(
        tmp_path,
        "GATEWAY_PROVIDERS__X__TYPE=openai\nGATEWAY_PROVIDERS__X__BASE_URL=http://h/v1\n"
        "GATEWAY_PROVIDERS__X__API_KEY=sk-never-print-me\nGATEWAY_PROVIDERS__X__MODELS=oops\n",
    )
    for args, named in (
        (["--env-file", str(path)], "GATEWAY_PROVIDERS__X__MODELS"),
        (["--env-file", str(tmp_path / "missing.env")], "missing.env"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "--no-ui", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "Traceback" not in result.stderr and "sk-never-print-me" not in result.stderr
        assert named in lines[0]


def test_cli_rejects_an_alias_to_an_unknown_model(tmp_path: Path) -> None:
    path = write_env(tmp_path, 'GATEWAY_ALIASES={"a": "echo/nope"}\n')
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--no-ui", "--env-file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "llm-gateway: invalid configuration: GATEWAY_ALIASES: alias 'a' names unknown model "
        "'echo/nope'"
    ]


def test_the_example_env_file_is_a_valid_configuration() -> None:
    example = Path(__file__).resolve().parents[1] / "config" / "example.env"
    settings = load_settings(example)
    assert list(settings.providers) == ["echo"] and settings.breaker_threshold == 5


def test_weighted_aliases_and_per_provider_breakers_are_read(tmp_path: Path) -> None:
    path = write_env(
        tmp_path,
        "GATEWAY_PROVIDERS__A__TYPE=echo\nGATEWAY_PROVIDERS__A__BREAKER_THRESHOLD=0\n"
        "GATEWAY_PROVIDERS__B__TYPE=echo\nGATEWAY_PROVIDERS__B__BREAKER_COOLDOWN=2.5\n"
        'GATEWAY_ALIASES={"gpt": [{"model": "a/echo", "weight": 2}, {"model": "b/echo"}]}\n',
    )
    settings = load_settings(path)
    assert settings.providers["a"].breaker_threshold == 0
    assert settings.providers["b"].breaker_cooldown == 2.5
    targets = settings.aliases["gpt"]
    assert not isinstance(targets, str)
    assert [(t.model, t.weight) for t in targets] == [("a/echo", 2.0), ("b/echo", 1.0)]
