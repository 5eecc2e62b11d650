"""The contract between the gateway and a provider TYPE (built-in or from another package)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from providers.base import Provider
from providers.http1 import PoolTransport

CONTRACT_VERSION = 1


@dataclass(frozen=True, slots=True)
class ProviderContext:
    """What the gateway hands a provider: its identity and the gateway-owned upstream transport.

    ``transport`` pools, verifies TLS and bounds connects and pool waits; a provider uses it
    rather than a client of its own, so those stay the gateway's. ``connect_timeout`` and
    ``pool_timeout`` are seconds (None: no bound).
    """

    name: str
    models: tuple[str, ...]
    transport: PoolTransport
    connect_timeout: float | None = 10.0
    pool_timeout: float | None = 60.0
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("gateway.provider"))


@dataclass(frozen=True, slots=True)
class ProviderType:
    """One TYPE users can name in ``GATEWAY_PROVIDERS__<NAME>__TYPE``.

    ``default_models``: the models served when the block names none (None: MODELS required).
    """

    name: str
    options: type[BaseModel]
    create: Callable[[ProviderContext, Any], Provider]
    capabilities: frozenset[str] = frozenset({"chat"})
    default_models: tuple[str, ...] | None = None
    contract_version: int = CONTRACT_VERSION
