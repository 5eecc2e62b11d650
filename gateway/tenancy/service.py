"""Builds a process's :class:`Tenancy` from settings: nothing without ``GATEWAY_ADMIN_KEY``;
the shared Redis limiter when ``GATEWAY_REDIS_URL`` is set, else counters in process."""

from __future__ import annotations

from gateway.settings import ConfigError, Settings
from gateway.tenancy.admission import Tenancy
from gateway.tenancy.limits import LocalLimiter


def build_tenancy(settings: Settings) -> Tenancy | None:
    """The tenancy, or None; a bad database or Redis URL is a one-line :class:`ConfigError`
    (never its value: it may hold a password)."""
    if settings.admin_key is None:
        return None
    try:
        tenancy = Tenancy(settings)
    except ImportError:
        raise ConfigError(
            "invalid configuration: GATEWAY_DATABASE_URL: PostgreSQL needs asyncpg "
            "(pip install 'llm-gateway[teams]')"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"invalid configuration: GATEWAY_DATABASE_URL: {exc}") from None
    if settings.redis_url is None:
        return tenancy
    from gateway.tenancy.redis_limits import RedisLimiter

    local = LocalLimiter(tenancy.baseline, share=settings.expected_replicas)
    try:
        tenancy.limiter = RedisLimiter(settings, fallback=local)
    except ValueError:
        raise ConfigError(
            "invalid configuration: GATEWAY_REDIS_URL: expected redis://[:password@]host[:port][/db]"
        ) from None
    return tenancy
