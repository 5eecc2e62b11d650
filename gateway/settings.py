"""Configuration from the environment and an env file (pydantic-settings).

Every variable is documented in ``config/example.env``. Invalid configuration raises
:class:`ConfigError` with one line naming the variable; values are never echoed, since some are
secrets.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

ENV_PREFIX = "GATEWAY_"
PositiveSeconds = Annotated[float, Field(gt=0)]


class ConfigError(Exception):
    """A configuration problem, worded for the operator in one line."""


class ProviderSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["echo", "openai"]
    models: list[Annotated[str, Field(min_length=1)]] | None = None
    base_url: str | None = None
    api_key: SecretStr | None = None
    chunk_delay_ms: Annotated[float, Field(ge=0)] = 0.0
    connect_timeout: PositiveSeconds | None = None
    first_token_timeout: PositiveSeconds | None = None
    idle_timeout: PositiveSeconds | None = None
    total_timeout: PositiveSeconds | None = None
    max_retries: Annotated[int, Field(ge=0, le=10)] | None = None
    max_connections: Annotated[int, Field(ge=1)] = 1024
    ca_bundle: str | None = None  # PEM file of the CAs to trust for an https BASE_URL

    @model_validator(mode="after")
    def _check_type(self) -> ProviderSettings:
        if self.type == "openai":
            if not self.base_url:
                raise ValueError("__BASE_URL: required for an openai provider")
            if not self.base_url.startswith(("http://", "https://")):
                raise ValueError("__BASE_URL: must start with http:// or https://")
            if not self.models:
                raise ValueError("__MODELS: required (a JSON list of the upstream's model names)")
            if self.ca_bundle is not None and not Path(self.ca_bundle).is_file():
                raise ValueError("__CA_BUNDLE: no such file")
        elif self.models is None:
            self.models = ["echo"]
        return self


class Settings(BaseSettings):
    """The gateway's settings; see ``config/example.env``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        case_sensitive=False,
        extra="ignore",
    )

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    api_keys: list[SecretStr] | None = None
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    aliases: dict[str, str] = Field(default_factory=dict)
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)

    # Defaults for every provider; a provider's own value wins.
    connect_timeout: PositiveSeconds = 10.0
    first_token_timeout: PositiveSeconds = 60.0
    idle_timeout: PositiveSeconds = 60.0
    total_timeout: PositiveSeconds = 600.0
    max_retries: Annotated[int, Field(ge=0, le=10)] = 2

    # Limits on what a client may send.
    max_body_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024
    max_messages: Annotated[int, Field(ge=1)] = 10_000
    max_n: Annotated[int, Field(ge=1)] = 16
    max_tokens_limit: Annotated[int, Field(ge=1)] = 1_048_576

    drain_timeout: Annotated[float, Field(ge=0)] = 30.0
    header_timeout: PositiveSeconds = 10.0
    body_timeout: PositiveSeconds = 60.0
    access_log: bool = True
    cors_origins: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _normalize(self) -> Settings:
        self.providers = {name.lower(): p for name, p in self.providers.items()}
        if not self.providers:
            self.providers = {"echo": ProviderSettings(type="echo")}
        for name in self.providers:
            if not name or "/" in name:
                raise ValueError(f"provider name {name!r} must be non-empty and without '/'")
        known = {f"{name}/{m}" for name, p in self.providers.items() for m in p.models or ()}
        for alias, target in self.aliases.items():
            if target not in known:
                raise ValueError(f"ALIASES: alias {alias!r} names unknown model {target!r}")
        for model, chain in self.fallbacks.items():
            for target in [model, *chain]:
                if target not in known and target not in self.aliases:
                    raise ValueError(f"FALLBACKS: {model!r} names unknown model {target!r}")
        if "*" in self.cors_origins:
            raise ValueError("CORS_ORIGINS: list origins explicitly, not '*'")
        return self


def env_name(loc: tuple[Any, ...]) -> str:
    """``("providers", "local", "base_url")`` -> ``GATEWAY_PROVIDERS__LOCAL__BASE_URL``."""
    parts = [str(p) for p in loc if not isinstance(p, int)]
    # pydantic reports literal/union branches as extra path items; keep field names only.
    parts = [p for p in parts if not p.startswith(("literal[", "function-", "list[", "json-"))]
    return ENV_PREFIX + "__".join(p.upper() for p in parts)


def load_settings(env_file: str | Path | None = None) -> Settings:
    """Read settings from the environment and ``env_file`` (default ``.env`` when present).

    Real environment variables override the file.
    """
    path = Path(env_file) if env_file is not None else Path(".env")
    if env_file is not None and not path.is_file():
        raise ConfigError(f"env file not found: {path}")
    try:
        return Settings(_env_file=path if path.is_file() else None)  # type: ignore[call-arg]
    except ValidationError as exc:
        error = exc.errors(include_input=False, include_url=False)[0]
        message = str(error["msg"]).removeprefix("Value error, ")
        loc = tuple(error["loc"])
        name = env_name(loc) if loc else ENV_PREFIX.rstrip("_")
        field, sep, rest = message.partition(": ")
        if sep and field.lstrip("_").isupper() and " " not in field:
            # A validator that names the variable it is about, e.g. "__BASE_URL: required".
            name, message = (name + field if field.startswith("__") else ENV_PREFIX + field), rest
        raise ConfigError(f"invalid configuration: {name}: {message}") from None
    except SettingsError as exc:  # a value that is not valid JSON for a list/object variable
        match = re.search(r'field "([^"]+)"', str(exc))
        name = ENV_PREFIX + (match.group(1).upper() if match else "*")
        raise ConfigError(f"invalid configuration: {name}: not valid JSON") from None
