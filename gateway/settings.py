"""Configuration from the environment and an env file (pydantic-settings).

Every variable is documented in ``config/example.env``. A provider block has the variables every
provider shares (below) and its TYPE's own, validated by that TYPE's options model from the
provider registry. Invalid configuration raises :class:`ConfigError` with one line naming the
variable; values are never echoed, since some are secrets.
"""

from __future__ import annotations

import logging
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from providers.registry import provider_type
from providers.spec import ProviderType

logger = logging.getLogger("gateway")
ENV_PREFIX = "GATEWAY_"
PositiveSeconds = Annotated[float, Field(gt=0)]
ModelName = Annotated[str, Field(min_length=1)]


class ConfigError(Exception):
    """A configuration problem, worded for the operator in one line."""


def config_error(variable: str, message: str) -> PydanticCustomError:
    """A validation error about ``variable`` (relative to where it is raised: ``__BASE_URL``
    inside a provider block, ``ALIASES`` at the top)."""
    return PydanticCustomError("config", "{message}", {"variable": variable, "message": message})


class ProviderSettings(BaseModel):
    """One ``GATEWAY_PROVIDERS__<NAME>__*`` block: the shared variables, plus the TYPE's own."""

    model_config = ConfigDict(extra="allow")

    type: str
    models: list[ModelName] | None = None
    # Per-provider overrides of the global defaults in Settings.
    connect_timeout: PositiveSeconds | None = None
    pool_timeout: PositiveSeconds | None = None
    first_token_timeout: PositiveSeconds | None = None
    idle_timeout: PositiveSeconds | None = None
    total_timeout: PositiveSeconds | None = None
    max_retries: Annotated[int, Field(ge=0, le=10)] | None = None
    breaker_threshold: Annotated[int, Field(ge=0)] | None = None
    breaker_cooldown: PositiveSeconds | None = None
    max_connections: Annotated[int, Field(ge=1)] = 1024
    ca_bundle: str | None = None  # PEM file of the CAs to trust for an https BASE_URL

    _spec: ProviderType = PrivateAttr()
    _options: BaseModel = PrivateAttr()

    @property
    def spec(self) -> ProviderType:
        return self._spec

    @property
    def options(self) -> BaseModel:
        """The TYPE's own variables, validated by its options model."""
        return self._options

    @field_validator("models", mode="before")
    @classmethod
    def _models_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError:
                raise ValueError('not valid JSON (expected a list such as ["model-a"])') from None
        return value

    @model_validator(mode="after")
    def _typed(self) -> ProviderSettings:
        try:
            self._spec = provider_type(self.type)
        except KeyError as exc:
            raise config_error("__TYPE", str(exc.args[0])) from None
        extras = {key.lower(): value for key, value in (self.model_extra or {}).items()}
        options_model = self._spec.options
        try:
            self._options = options_model.model_validate(_decode_json(options_model, extras))
        except ValidationError as exc:
            error = exc.errors(include_input=False, include_url=False)[0]
            where = "__".join(str(p).upper() for p in error["loc"] if not isinstance(p, int))
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = f"not a variable of provider type {self.type!r}"
            raise config_error("__" + where, message) from None
        except Exception as exc:  # a plugin's validator raising what pydantic does not wrap
            logger.debug("options of provider type %r", self.type, exc_info=exc)
            # Only the class: the message of someone else's exception may hold a value.
            raise config_error(
                "__TYPE",
                f"provider type {self.type!r} failed to read its options "
                f"({type(exc).__name__}; --log-level debug shows where)",
            ) from None
        # The TYPE's variables live on in ``options`` only (keys there as secrets, not text).
        self.__pydantic_extra__ = {}
        if self.models is None:
            if self._spec.default_models is None:
                raise config_error("__MODELS", "required (a JSON list of the upstream's models)")
            self.models = list(self._spec.default_models)
        if self.ca_bundle is not None and not Path(self.ca_bundle).is_file():
            raise config_error("__CA_BUNDLE", "no such file")
        return self


def _decode_json(model: type[BaseModel], values: dict[str, Any]) -> dict[str, Any]:
    """Env values of list or object fields arrive as JSON text: decode them for ``model``."""
    out = dict(values)
    for name, field in model.model_fields.items():
        value = out.get(name)
        if isinstance(value, str) and _is_container(field.annotation):
            try:
                out[name] = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise config_error("__" + name.upper(), "not valid JSON") from None
    return out


def _is_container(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (list, dict, set, tuple):
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_is_container(arg) for arg in typing.get_args(annotation))


class AliasTarget(BaseModel):
    """One deployment behind an alias, and its share of the traffic."""

    model_config = ConfigDict(extra="forbid")

    model: ModelName
    weight: Annotated[float, Field(gt=0)] = 1.0


class ModelPrice(BaseModel):
    """USD per million tokens of one model (``GATEWAY_PRICES``): input, output, cached input
    (default: the input price)."""

    model_config = ConfigDict(extra="forbid")

    input: Annotated[float, Field(ge=0)]
    output: Annotated[float, Field(ge=0)]
    cached_input: Annotated[float, Field(ge=0)] | None = None


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
    # An alias names one model id, or several deployments with weights.
    aliases: dict[str, str | list[AliasTarget]] = Field(default_factory=dict)
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)

    # Defaults for every provider; a provider's own value wins.
    connect_timeout: PositiveSeconds = 10.0
    pool_timeout: PositiveSeconds = 60.0
    first_token_timeout: PositiveSeconds = 60.0
    idle_timeout: PositiveSeconds = 60.0
    total_timeout: PositiveSeconds = 600.0
    # A streamed answer quiet this long gets a keep-alive frame (an SSE comment; Anthropic's
    # ping on /v1/messages), so proxies and clients do not cut a slow first token or a long
    # pause. 0: never. Before the first token this commits the stream to status 200.
    stream_keepalive: Annotated[float, Field(ge=0)] = 15.0
    max_retries: Annotated[int, Field(ge=0, le=10)] = 2
    breaker_threshold: Annotated[int, Field(ge=0)] = 5
    breaker_cooldown: PositiveSeconds = 30.0

    # Limits on what a client may send.
    max_body_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024
    max_messages: Annotated[int, Field(ge=1)] = 10_000
    max_n: Annotated[int, Field(ge=1)] = 16
    max_tokens_limit: Annotated[int, Field(ge=1)] = 1_048_576

    drain_timeout: Annotated[float, Field(ge=0)] = 30.0
    header_timeout: PositiveSeconds = 10.0
    body_timeout: PositiveSeconds = 60.0
    access_log: bool = True
    log_format: Literal["text", "json"] = "text"
    cors_origins: list[str] = Field(default_factory=list)
    # Observability (docs/metrics.md): GET /metrics, and what OpenTelemetry spans may carry.
    metrics: bool = True  # false: no /metrics, no metrics observer (no cost)
    # "key": /metrics needs GATEWAY_METRICS_KEY (a scrape-only secret) or the admin key;
    # "admin": the admin key only; unset: "key" when a metrics key is set, else "admin" when an
    # admin key is, else "open"
    metrics_auth: Literal["open", "admin", "key"] | None = None
    metrics_key: SecretStr | None = None
    trace_content: bool = False  # true: prompts and completions on spans (OTEL_* turns spans on)

    # Teams (docs/teams.md): the admin API, virtual keys, limits, budgets and the usage ledger.
    admin_key: SecretStr | None = None  # unset: no admin routes, no virtual keys
    key_pepper: SecretStr | None = None  # HMAC key of stored key digests (default: admin_key)
    database_url: str = "sqlite:///llm-gateway.db"  # or postgresql://user:pw@host/db
    redis_url: SecretStr | None = None  # redis://host:port/db: counters shared by replicas
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    reserve_max_tokens: Annotated[int, Field(ge=1)] = 4096  # output cap injected when none
    rate_limit_failure_mode: Literal["local", "open", "closed"] = "local"
    budget_failure_mode: Literal["closed", "open"] = "closed"
    expected_replicas: Annotated[int, Field(ge=1)] = 1  # share of a limit in "local" mode
    redis_timeout: PositiveSeconds = 0.5  # per Redis call, with no retries
    reservation_ttl: PositiveSeconds | None = None  # default: total_timeout + 60 s
    key_cache_seconds: Annotated[float, Field(ge=0, le=60)] = 1.0
    ledger_queue_size: Annotated[int, Field(ge=1)] = 10_000
    ledger_flush_seconds: Annotated[float, Field(gt=0, le=3600)] = 0.5  # or a full batch
    # The compiled admission and ledger rows (gateway/tenancy/_counters.c, _rows.c) when they
    # were built; False: Python.
    compiled_limits: bool = True

    @model_validator(mode="after")
    def _normalize(self) -> Settings:
        self.providers = {name.lower(): p for name, p in self.providers.items()}
        if not self.providers:
            try:
                provider_type("echo")
            except KeyError as exc:  # a plugin claims the name (providers.registry refuses it)
                raise config_error("PROVIDERS__ECHO__TYPE", str(exc.args[0])) from None
            self.providers = {"echo": ProviderSettings(type="echo")}
        for name in self.providers:
            if not name or "/" in name:
                raise config_error(
                    "PROVIDERS", f"provider name {name!r} must be non-empty and without '/'"
                )
        known = {f"{name}/{m}" for name, p in self.providers.items() for m in p.models or ()}
        for alias, target in self.aliases.items():
            targets = [target] if isinstance(target, str) else [t.model for t in target]
            if not targets:
                raise config_error("ALIASES", f"alias {alias!r} names no model")
            for model in targets:
                if model not in known:
                    raise config_error("ALIASES", f"alias {alias!r} names unknown model {model!r}")
        for model, chain in self.fallbacks.items():
            for target in [model, *chain]:
                if target not in known and target not in self.aliases:
                    raise config_error("FALLBACKS", f"{model!r} names unknown model {target!r}")
        if "*" in self.cors_origins:
            raise config_error("CORS_ORIGINS", "list origins explicitly, not '*'")
        return self


def env_name(loc: tuple[Any, ...]) -> str:
    """``("providers", "local", "base_url")`` -> ``GATEWAY_PROVIDERS__LOCAL__BASE_URL``."""
    parts = [str(p) for p in loc if not isinstance(p, int)]
    # pydantic reports union branches as extra path items; keep field names only.
    parts = [p for p in parts if not p.startswith(("literal[", "function-", "list[", "json-"))]
    parts = [p for p in parts if p not in ("str",)]
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
        raise ConfigError(describe(exc)) from None
    except SettingsError as exc:  # a value that is not valid JSON for a list/object variable
        match = re.search(r'field "([^"]+)"', str(exc))
        name = ENV_PREFIX + (match.group(1).upper() if match else "*")
        raise ConfigError(f"invalid configuration: {name}: not valid JSON") from None


def describe(exc: ValidationError) -> str:
    """The first error of a Settings validation, as one line naming the variable."""
    errors = exc.errors(include_input=False, include_url=False)
    # A value that fits no branch of a union gets one error per branch: the deepest one is
    # about the branch the value was meant for (a list of targets rather than a string).
    error = max(
        (e for e in errors if e["loc"][:1] == errors[0]["loc"][:1]), key=lambda e: len(e["loc"])
    )
    loc = tuple(error["loc"])
    ctx = error.get("ctx") or {}
    if error["type"] == "config":
        variable = str(ctx["variable"])
        # "__X" is relative to the block the error was raised in; "X" to the top.
        name = env_name(loc) + variable if variable.startswith("__") else ENV_PREFIX + variable
        message = str(ctx["message"])
    else:
        name = env_name(loc) if loc else ENV_PREFIX.rstrip("_")
        message = str(error["msg"]).removeprefix("Value error, ")
    return f"invalid configuration: {name}: {message}"
