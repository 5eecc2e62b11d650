"""Virtual keys: the secret given once, the keyed digest stored, the record enforced.

A secret is ``sk-gw-`` and 43 base62 characters (256 bits). Only ``HMAC-SHA256(pepper, key)``
is stored, with a display prefix and the last four characters: a leaked database holds no
usable key, and a fast hash is right for 256-bit random secrets (slow hashes are for human
passwords). Lookup is by digest, so comparing never depends on how much of a guess matches.
"""

from __future__ import annotations

import hmac
import math
import secrets
import string
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

KEY_PREFIX = "sk-gw-"
_ALPHABET = string.ascii_letters + string.digits
_SECRET_CHARS = 43  # 62**43 > 2**256
BudgetPeriod = Literal["day", "month", "total"]
Window = tuple[str, float, float]  # a budget window: its id, start and end (epoch seconds)


def new_secret() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(_SECRET_CHARS))


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def key_digest(pepper: bytes, secret: bytes) -> str:
    """The stored form of a secret: hex HMAC-SHA256 under the pepper."""
    return hmac.digest(pepper, secret, "sha256").hex()


_PREFIX = KEY_PREFIX.encode()
KEY_LENGTH = len(KEY_PREFIX) + _SECRET_CHARS


def looks_like_key(token: bytes) -> bool:
    """Cheap shape check, so a typo or a static key costs no database lookup."""
    return (
        len(token) == KEY_LENGTH and token.startswith(_PREFIX) and token[len(_PREFIX) :].isalnum()
    )


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One virtual key as enforced: immutable, so a cached record is never changed under a
    request that holds it (a PATCH makes a new record)."""

    id: str
    name: str
    prefix: str
    last4: str
    created_at: float
    models: tuple[str, ...] | None = None  # None: every model; "x*" matches by prefix
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    budget_micro_usd: int | None = None
    budget_tokens: int | None = None
    budget_period: BudgetPeriod = "total"
    expires_at: float | None = None
    revoked_at: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    # Derived once (the record is immutable): read on every request.
    limited: bool = field(init=False, default=False)  # any counter applies
    caps_output: bool = field(init=False, default=False)  # the output must be bounded
    budgeted: bool = field(init=False, default=False)  # a budget in USD or tokens

    def __post_init__(self) -> None:
        budgeted = self.budget_micro_usd is not None or self.budget_tokens is not None
        caps = self.tpm is not None or budgeted
        object.__setattr__(self, "budgeted", budgeted)
        object.__setattr__(self, "caps_output", caps)
        object.__setattr__(
            self, "limited", caps or self.rpm is not None or self.max_parallel is not None
        )

    def allows(self, model: str) -> bool:
        if self.models is None:
            return True
        for allowed in self.models:
            if allowed.endswith("*"):
                if model.startswith(allowed[:-1]):
                    return True
            elif model == allowed:
                return True
        return False

    def state(self, now: float | None = None) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or time.time()):
            return "expired"
        return "active"

    def public(self) -> dict[str, Any]:
        """The record as the admin API shows it: never the secret nor its digest."""
        return {
            "id": self.id,
            "object": "api_key",
            "name": self.name,
            "display": f"{self.prefix}...{self.last4}",
            "status": self.state(),
            "models": list(self.models) if self.models is not None else None,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "max_parallel": self.max_parallel,
            "budget_usd": None
            if self.budget_micro_usd is None
            else self.budget_micro_usd / 1_000_000,
            "budget_tokens": self.budget_tokens,
            "budget_period": self.budget_period,
            "expires_at": iso(self.expires_at),
            "created_at": iso(self.created_at),
            "revoked_at": iso(self.revoked_at),
            "metadata": self.metadata,
        }


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


_windows: dict[str, Window] = {}


def window(period: BudgetPeriod, now: float) -> Window:
    """The budget window holding ``now``: its id, start and end (epoch seconds, UTC calendar).

    The id names the window, so nothing ever has to be reset: a new day is a new counter.
    The current window of each period is remembered until it ends.
    """
    known = _windows.get(period)
    if known is not None and known[1] <= now < known[2]:
        return known
    found = _window(period, now)
    _windows[period] = found
    return found


def _window(period: BudgetPeriod, now: float) -> Window:
    if period == "total":
        return "total", 0.0, math.inf
    at = datetime.fromtimestamp(now, UTC)
    if period == "day":
        start = at.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start.timestamp() + 86_400
        return start.strftime("%Y-%m-%d"), start.timestamp(), end
    start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start.strftime("%Y-%m"), start.timestamp(), following.timestamp()
