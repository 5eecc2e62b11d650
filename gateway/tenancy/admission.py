"""What the middleware and the surfaces call: who a virtual key is, and whether its request
may go upstream.

:meth:`Tenancy.authenticate` turns a bearer secret into a :class:`KeyRecord` through a
short-lived cache (``key_cache_seconds``, 1 s by default: a key revoked anywhere stops working
on every replica within that time). :meth:`Tenant.admit` runs between parsing and dispatch:
model list (403) before any counter moves, then one atomic admission (RPM, TPM, requests in
flight, budgets) that reserves an upper bound of the request's tokens and cost. It puts the
``x-ratelimit-*`` headers on the request's :class:`Call` as header lines (written into the
response head by :mod:`gateway.response_head`), and the :class:`Ticket` it returns settles the
real usage exactly once when the request ends, whatever ended it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import itertools
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from starlette.types import Scope

from gateway.errors import (
    APIError,
    AuthenticationError,
    InsufficientQuota,
    InvalidRequest,
    PermissionDenied,
    RateLimited,
    ServiceUnavailable,
)
from gateway.observe import Call
from gateway.response_head import split
from gateway.routing import Deployment
from gateway.settings import Settings
from gateway.tenancy.keys import KEY_LENGTH, KeyRecord, Window, key_digest, looks_like_key
from gateway.tenancy.keys import window as current_window
from gateway.tenancy.ledger import Ledger, request_cost
from gateway.tenancy.limits import Ask, LocalLimiter, Verdict
from gateway.tenancy.prices import Prices, Rate
from gateway.tenancy.store import Store, open_engine
from providers.base import Usage

try:  # built by setup.py where a C compiler is found (optional)
    from gateway.tenancy import _counters
except ImportError:  # pragma: no cover - the Python decides everything
    _counters = None  # type: ignore[assignment]
compiled = _counters  # the compiled counters, or None

logger = logging.getLogger("gateway.tenancy")
TENANT_SCOPE_KEY = "llm_gateway.tenant"
# Reservation ids: this process's random prefix and a counter (unique across replicas).
_PROCESS = os.urandom(6).hex() + "-"
_counter = itertools.count()
_NEGATIVE_CACHE = 10_000  # unknown secrets remembered at most (a flood of guesses)
_REFRESH_AT = 0.75  # of key_cache_seconds: a key in use is read again in the background
_READS = 3  # of a key, when keys change here during a read
_MODELS_REMEMBERED = 256  # per key: whether it may use a model name
_RATES_REMEMBERED = 1024  # the price bound of a (model, deployments) pair
_NO_WINDOW: Window = ("total", 0.0, math.inf)  # a key without a budget
_UNKNOWN = object()
# The x-ratelimit-* lines after a limit's own (the reset under a second: whole milliseconds).
_REQUESTS = b"%bx-ratelimit-remaining-requests: %d\r\nx-ratelimit-reset-requests: %b\r\n"
_REQUESTS_LEFT_MS = b"x-ratelimit-remaining-requests: %d\r\nx-ratelimit-reset-requests: %dms\r\n"
_REQUESTS_MS = b"%b" + _REQUESTS_LEFT_MS
_TOKENS = b"%bx-ratelimit-remaining-tokens: %d\r\nx-ratelimit-reset-tokens: %b\r\n"
_TOKENS_LEFT_MS = b"x-ratelimit-remaining-tokens: %d\r\nx-ratelimit-reset-tokens: %dms\r\n"
_TOKENS_MS = b"%b" + _TOKENS_LEFT_MS


class LimitsUnavailable(Exception):
    """The shared counters cannot be reached and the failure policy refuses the request."""


class Limiter(Protocol):
    async def admit(self, ask: Ask) -> Verdict: ...

    async def settle(self, ask: Ask, tokens: int, micro_usd: int) -> bool: ...

    async def aclose(self) -> None: ...


class Admitted(Protocol):
    """An admitted request's ticket: :class:`Ticket`, or the compiled one, which settles at
    once (``settle`` answers None, not an awaitable)."""

    def settle(self, call: Call) -> Awaitable[None] | None: ...


class Admissible(Protocol):
    """What admission reads of a parsed request (``gateway.surfaces.shared.Parsed``)."""

    model: str
    estimate_input: Callable[[], int] | None
    output_cap: int | None
    choices: int
    cap_output: Callable[[int], None] | None


class Tenant:
    """A request's virtual key, on the ASGI scope for the surfaces and routes: the record and
    what is derived from it once per key (the cache holds one per key, so a request builds
    none of it): the models checked, the ``x-ratelimit-limit-*`` headers.

    Admission runs for every request of a limited key, so it is written for that: the price
    bound remembered, the header lines made by one bytes format, and an admission (every
    check passes) decided by the compiled module when it is built and the counters are this
    process's (``_plan``: the key's limits as it reads them)."""

    __slots__ = (
        "_allowed",
        "_both_ms",
        "_plan",
        "_rpm_line",
        "_slot",
        "_tpm_line",
        "_window",
        "key",
        "tenancy",
    )

    def __init__(self, tenancy: Tenancy, key: KeyRecord) -> None:
        self.tenancy = tenancy
        self.key = key
        self._allowed: dict[str, bool] = {}
        # The key's budget window when it was last looked at, and its slot in the limiter's
        # budgets (the same window until it ends).
        self._window: Window = ("", 0.0, 0.0)
        self._slot = (key.id, "")
        self._rpm_line = (
            b"x-ratelimit-limit-requests: %d\r\n" % key.rpm if key.rpm is not None else None
        )
        self._tpm_line = (
            b"x-ratelimit-limit-tokens: %d\r\n" % key.tpm if key.tpm is not None else None
        )
        # A key with both limits, both resets under a second (far from its limits): all six
        # lines in one format.
        self._both_ms = (
            self._rpm_line + _REQUESTS_LEFT_MS + self._tpm_line + _TOKENS_LEFT_MS
            if self._rpm_line is not None and self._tpm_line is not None
            else None
        )
        self._plan = (
            compiled.Plan(
                key.rpm,
                key.tpm,
                key.max_parallel,
                key.budget_micro_usd,
                key.budget_tokens,
                tenancy.reserve_max_tokens,
                key.caps_output,
                self._rpm_line,
                self._tpm_line,
                _estimated,
                functools.partial(request_cost, tenancy.prices),
                time.time,
            )
            if tenancy.compiled is not None and key.limited
            else None
        )

    def allows(self, model: str) -> bool:
        allowed = self._allowed.get(model)
        if allowed is None:
            allowed = self.key.allows(model)
            if len(self._allowed) < _MODELS_REMEMBERED:  # a client's names are unbounded
                self._allowed[model] = allowed
        return allowed

    async def admit(
        self, call: Call, parsed: Admissible, chain: tuple[Deployment, ...]
    ) -> Admitted | None:
        """Admit a request or raise its 4xx/503; None when the key has nothing to count.
        An admitted request's ``x-ratelimit-*`` headers go on ``call.head_lines``."""
        key = self.key
        model = parsed.model
        allowed = self._allowed.get(model)
        if allowed is None:
            allowed = self.allows(model)
        if not allowed:
            raise PermissionDenied(
                f"this API key may not use the model '{model[:200]}'",
                param="model",
                code="model_not_allowed",
            )
        if not key.limited:
            return None
        tenancy = self.tenancy
        tokens_in = parsed.estimate_input() if parsed.estimate_input is not None else 0
        local = tenancy.compiled_limiter
        if local is not None and self._plan is not None:
            now = time.time()
            state = local.keys.get(key.id)  # None: the key's first request here, or swept
            if state is not None:
                budget = None
                if key.budgeted:  # None: not read from the ledger yet (or swept)
                    if not self._window[1] <= now < self._window[2]:
                        self._window = current_window(key.budget_period, now)
                        self._slot = (key.id, self._window[0])
                    budget = local.budgets.get(self._slot)
                if budget is not None or not key.budgeted:
                    admitted = compiled.admit(
                        self._plan,
                        state,
                        budget,
                        call,
                        tokens_in,
                        parsed.output_cap,
                        parsed.choices,
                        parsed.cap_output,
                        now,
                        local.next_sweep,
                        tenancy.rate(model, chain) if key.budget_micro_usd is not None else None,
                    )
                    if admitted is not None:
                        return admitted
            # Anything else (a refusal, a sweep, a budget to read): the Python, on the same
            # counters.
        choices = parsed.choices if parsed.choices > 1 else 1
        cap = parsed.output_cap
        if cap is None:
            cap = tenancy.reserve_max_tokens
            if key.tpm is not None:  # a reservation must fit the whole minute's allowance
                room = (key.tpm - tokens_in) // choices
                if room < cap:
                    cap = room
            if key.caps_output and parsed.cap_output is not None and cap >= 1:
                parsed.cap_output(cap)
            elif cap < 1 and key.tpm is not None:  # the input alone fills the minute
                raise _too_large(tokens_in, key.tpm)
        tokens_out = cap * choices if cap > 0 else 0
        tokens = tokens_in + tokens_out
        if key.tpm is not None and tokens > key.tpm:
            raise _too_large(tokens, key.tpm)
        micro_usd = 0
        window = _NO_WINDOW  # a key without a budget counts in no window
        if key.budgeted:
            if key.budget_micro_usd is not None:
                rate = tenancy.rate(model, chain)
                if rate is None:
                    raise InvalidRequest(
                        f"the model '{model[:200]}' has no price (GATEWAY_PRICES), and this "
                        "key has a budget in USD",
                        param="model",
                        code="model_not_priced",
                    )
                micro_usd = rate.cost(tokens_in, tokens_out)
            window = current_window(key.budget_period, time.time())  # remembered there
        ticket = Ticket(
            key,
            f"{_PROCESS}{next(_counter):x}",
            window,
            tokens,
            micro_usd,
            tenancy,
            tokens_in,
            tokens_out,
        )
        try:
            verdict = await tenancy.limiter.admit(ticket)
        except Exception as exc:  # the database or Redis: a fast 503, never a 500
            if not isinstance(exc, LimitsUnavailable):
                logger.error("admission failed: %s", type(exc).__name__, exc_info=exc)
            raise ServiceUnavailable(
                "limits cannot be checked right now; retry shortly",
                code="limits_unavailable",
                headers={"retry-after": "1"},
            ) from None
        if not verdict.ok:
            lines = self.rate_lines(verdict)
            raise _refusal(verdict, {k.decode(): v.decode() for k, v in split(lines)})
        if self._rpm_line is not None or self._tpm_line is not None:
            call.head_lines = self.rate_lines(verdict)
        return ticket

    def rate_lines(self, verdict: Verdict) -> bytes:
        """OpenAI's ``x-ratelimit-*`` headers of a key with an RPM or a TPM, as header lines
        (:mod:`gateway.response_head`)."""
        left = verdict.requests_remaining
        if (
            self._both_ms is not None
            and verdict.requests_reset < 1
            and verdict.tokens_reset < 1
            and left is not None
            and verdict.tokens_remaining is not None
        ):
            return self._both_ms % (
                left,
                math.ceil(verdict.requests_reset * 1000),
                verdict.tokens_remaining,
                math.ceil(verdict.tokens_reset * 1000),
            )
        lines = b""
        if self._rpm_line is not None and left is not None:
            reset = verdict.requests_reset
            if reset < 1:  # a key far from its limit: no string formatting
                lines = _REQUESTS_MS % (self._rpm_line, left, math.ceil(reset * 1000))
            else:
                lines = _REQUESTS % (self._rpm_line, left, duration(reset).encode())
        left = verdict.tokens_remaining
        if self._tpm_line is not None and left is not None:
            reset = verdict.tokens_reset
            if reset < 1:
                lines += _TOKENS_MS % (self._tpm_line, left, math.ceil(reset * 1000))
            else:
                lines += _TOKENS % (self._tpm_line, left, duration(reset).encode())
        return lines


class Tenancy:
    """Keys, limits, prices and the ledger of one gateway process."""

    def __init__(self, settings: Settings, *, limiter: Limiter | None = None) -> None:
        assert settings.admin_key is not None
        pepper = settings.key_pepper or settings.admin_key
        self.pepper = pepper.get_secret_value().encode()
        self.admin_key = settings.admin_key.get_secret_value().encode()
        self.store = Store(open_engine(settings.database_url))
        self.prices = Prices(settings.prices)
        self.ledger = Ledger(
            self.store,
            self.prices,
            capacity=settings.ledger_queue_size,
            interval=settings.ledger_flush_seconds,
            compiled=settings.compiled_limits,
        )
        self.ledger.prepare = self.ready
        self.compiled = compiled if settings.compiled_limits else None
        self.compiled_limiter: LocalLimiter | None = None  # set with the limiter
        self.limiter = limiter or (
            LocalLimiter(self.baseline)
            if self.compiled is None
            else LocalLimiter(self.baseline, counters=self.compiled)
        )
        self.reserve_max_tokens = settings.reserve_max_tokens
        self.cache_seconds = settings.key_cache_seconds
        # The cache is keyed by a tag of the secret under a key of this process (BLAKE2b, a
        # third of the cost of the stored digest's HMAC-SHA256 under OpenSSL): never by the
        # secret itself.
        self._tag_key = os.urandom(32)
        # tag -> (expires, tenant or None for an unknown secret, read again from)
        self._cache: dict[bytes, tuple[float, Tenant | None, float]] = {}
        self._refresh_after = self.cache_seconds * _REFRESH_AT
        self._lookups: dict[bytes, asyncio.Task[Tenant | None]] = {}
        self._changes = 0  # keys changed or revoked through this process
        self._rates: dict[tuple[str, tuple[Deployment, ...]], Rate | None] = {}
        self._ready: asyncio.Future[None] | None = None

    @property
    def limiter(self) -> Limiter:
        return self._limiter

    @limiter.setter
    def limiter(self, limiter: Limiter) -> None:
        """The compiled admission runs on a :class:`LocalLimiter`'s own counters when they are
        the compiled ones and undivided (not the Redis limiter's fallback)."""
        self._limiter = limiter
        self.compiled_limiter = (
            limiter
            if isinstance(limiter, LocalLimiter)
            and self.compiled is not None
            and limiter.counters.KeyState is self.compiled.KeyState
            and limiter.share == 1
            else None
        )

    async def baseline(self, key_id: str, since: float) -> tuple[int, int]:
        """What a key spent since ``since``: the ledger's rows, with this process's rows not
        yet written (never waiting for them to be). A batch committed between the two reads
        counts twice: an overcount, once per key and window, never an undercount."""
        micro, tokens = self.ledger.pending(key_id, since)
        stored_micro, stored_tokens = await self.store.spent(key_id, since)
        return stored_micro + micro, stored_tokens + tokens

    async def ready(self) -> None:
        """Migrate the database once (the first caller does it; the others wait)."""
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_future()
            try:
                applied = await self.store.migrate()
                if applied:
                    logger.info("database migrated to version %d", applied[-1])
                self._ready.set_result(None)
            except BaseException as exc:
                self._ready.set_exception(exc)
                self._ready.exception()
                self._ready = None
                raise
        else:
            await asyncio.shield(self._ready)

    async def start(self) -> None:
        """Migrate at start; a database that cannot be reached is logged, not fatal: static
        keys keep working, virtual keys get 503 until it answers (each lookup tries again)."""
        try:
            await self.ready()
        except Exception as exc:
            logger.error(
                "the database (GATEWAY_DATABASE_URL) cannot be reached: %s; virtual keys get "
                "503 until it can",
                type(exc).__name__,
            )

    async def aclose(self) -> None:
        for task in list(self._lookups.values()):
            task.cancel()
        await asyncio.gather(*self._lookups.values(), return_exceptions=True)
        await self.ledger.aclose()
        await self.limiter.aclose()
        await self.store.aclose()

    def is_admin(self, token: bytes) -> bool:
        return hmac.compare_digest(token, self.admin_key)

    # Keys
    def digest(self, secret: bytes) -> str:
        return key_digest(self.pepper, secret)

    def _tag(self, secret: bytes) -> bytes:
        return hashlib.blake2b(secret, key=self._tag_key, digest_size=16).digest()

    def remember(
        self, secret: bytes, key: KeyRecord | None, *, tag: bytes | None = None
    ) -> Tenant | None:
        """A key this process created or looked up (``tag``: the secret's, when known):
        valid here at once, for ``key_cache_seconds``."""
        if key is None and len(self._cache) >= _NEGATIVE_CACHE:
            self._cache.clear()
        tenant = None if key is None else Tenant(self, key)
        if tag is None:
            tag = self._tag(secret)
        now = time.monotonic()
        self._cache[tag] = (now + self.cache_seconds, tenant, now + self._refresh_after)
        return tenant

    def forget(self, key_id: str) -> None:
        """A key changed or revoked here: its entry goes, and a read of it still running
        reads again (it may have read the key as it was)."""
        self._changes += 1
        for tag, (_, tenant, _) in list(self._cache.items()):
            if tenant is not None and tenant.key.id == key_id:
                del self._cache[tag]

    def known(self, token: bytes) -> Tenant | APIError | None:
        """What the cache says of ``token`` without waiting: its active key, or the 401 to
        answer (unknown, revoked, expired); None when the key must be read from the database
        (:meth:`authenticate`). Most requests end here, so the middleware tries it before it
        awaits anything.

        A key in use is read again in the background once its entry is three quarters of
        ``key_cache_seconds`` old, so its requests do not all wait for the database when the
        entry expires; an entry is never used after it expires."""
        if len(token) != KEY_LENGTH:  # cheap, before any hashing (a flood of guesses)
            return AuthenticationError("Invalid API key")
        tag = self._tag(token)
        cached = self._cache.get(tag)  # only secrets shaped like a key are ever cached
        now = time.monotonic()
        if cached is None or cached[0] <= now:
            return None if looks_like_key(token) else AuthenticationError("Invalid API key")
        tenant = cached[1]
        if tenant is None:
            return AuthenticationError("Invalid API key")
        if now >= cached[2]:
            self._read(token, tag)  # not awaited: this request goes on with the entry
        key = tenant.key
        if key.revoked_at is None and key.expires_at is None:
            return tenant
        return _active(tenant)

    async def authenticate(self, token: bytes) -> Tenant | APIError:
        """:meth:`known`, or the database's answer; 503 when the database cannot say."""
        answer = self.known(token)
        if answer is not None:
            return answer
        try:
            # Shielded: a request that leaves while it waits cancels nobody else's read.
            tenant = await asyncio.shield(self._read(token, self._tag(token)))
        except Exception:  # logged by the read
            return ServiceUnavailable(
                "API keys cannot be checked right now; retry shortly",
                code="key_store_unavailable",
                headers={"retry-after": "1"},
            )
        return _active(tenant)

    def _read(self, secret: bytes, tag: bytes) -> asyncio.Task[Tenant | None]:
        """The database read of a key, as a task of its own: one at a time per key, however
        many requests wait for it."""
        task = self._lookups.get(tag)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self._look_up(secret, tag), name="key-lookup"
            )
            self._lookups[tag] = task
            task.add_done_callback(functools.partial(self._looked_up, tag))
        return task

    def _looked_up(self, tag: bytes, task: asyncio.Task[Tenant | None]) -> None:
        if self._lookups.get(tag) is task:
            del self._lookups[tag]
        if not task.cancelled():
            task.exception()  # retrieved (a refresh nobody awaits): _look_up logged it

    async def _look_up(self, secret: bytes, tag: bytes) -> Tenant | None:
        for _ in range(_READS):
            changes = self._changes
            try:
                await self.ready()
                key = await self.store.key_by_digest(self.digest(secret))
            except Exception as exc:
                logger.error("key lookup failed: %s", type(exc).__name__)
                entry = self._cache.get(tag)
                if entry is not None:  # no more early reads: the next is once it expires
                    self._cache[tag] = (entry[0], entry[1], entry[0])
                raise
            if changes == self._changes:  # no key changed here meanwhile
                return self.remember(secret, key, tag=tag)
        # Keys changed here during every read: this one answers, and is not remembered.
        return None if key is None else Tenant(self, key)

    # Admission
    def rate(self, model: str, chain: tuple[Deployment, ...]) -> Rate | None:
        """The highest rate over the deployments that may answer (None: some are unpriced);
        remembered per model and chain (deployments hash by identity; prices never change)."""
        pair = (model, chain)
        found = self._rates.get(pair, _UNKNOWN)
        if found is not _UNKNOWN:
            return found  # type: ignore[return-value]
        bound: Rate | None = None
        for deployment in chain:
            rate = self.prices.rate((deployment.model_id, deployment.upstream_model, model))
            if rate is None:
                bound = None
                break
            bound = rate if bound is None else bound.bound(rate)
        if len(self._rates) >= _RATES_REMEMBERED:  # model names come from clients: bounded
            self._rates.clear()
        self._rates[pair] = bound
        return bound


@dataclass(slots=True)
class Ticket(Ask):
    """An admitted request: its claim on the counters (the limiter's :class:`Ask`), and its
    one settlement."""

    tenancy: Tenancy
    tokens_in: int
    tokens_out: int
    settled: bool = False

    async def settle(self, call: Call) -> None:
        """Charge what the request used, once. Without the provider's usage, a request that
        produced output is charged its whole reservation (``usage_source='estimated'``):
        never nothing; one that produced none is charged nothing."""
        if self.settled:
            return
        self.settled = True
        usage = call.usage
        if usage is None and call.first_token_at is not None:
            usage = call.usage = _estimated(self.tokens_in, self.tokens_out)
        tokens = 0 if usage is None else usage.input_tokens + usage.output_tokens
        cost = call.cost = request_cost(self.tenancy.prices, call)  # what the ledger bills too
        try:
            await self.tenancy.limiter.settle(self, tokens, cost[0])
        except Exception as exc:  # the limiter queues or expires what it cannot settle
            logger.error("request %s: settling failed (%s)", call.request_id, type(exc).__name__)


def _active(tenant: Tenant | None) -> Tenant | APIError:
    """``tenant`` if its key is active, else the 401 to answer."""
    if tenant is None:
        return AuthenticationError("Invalid API key")
    key = tenant.key
    if key.revoked_at is not None or key.expires_at is not None:
        state = key.state()
        if state != "active":
            return AuthenticationError(f"This API key is {state}", code=f"api_key_{state}")
    return tenant


def _estimated(tokens_in: int, tokens_out: int) -> Usage:
    """The usage charged to a request that produced output without the provider's usage: its
    whole reservation."""
    return Usage(input_tokens=tokens_in, output_tokens=tokens_out, source="estimated")


def duration(seconds: float) -> str:
    """OpenAI's reset format: ``17ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest):d}s"


def _too_large(tokens: int, tpm: int) -> InvalidRequest:
    return InvalidRequest(
        f"this request may use up to {tokens} tokens (input estimate plus output bound), "
        f"more than this key's limit of {tpm} tokens per minute",
        code="tokens_exceed_limit",
    )


def _refusal(verdict: Verdict, headers: dict[str, str]) -> APIError:
    if verdict.reason in ("budget_usd", "budget_tokens"):
        what = "USD" if verdict.reason == "budget_usd" else "token"
        return InsufficientQuota(  # no Retry-After: not before the window ends, if ever
            f"this API key's {what} budget is spent for the current period",
            code="insufficient_quota",
            headers={**headers, "x-should-retry": "false"},
        )
    wait = min(verdict.retry_after, 3600.0)
    what = {"rpm": "requests per minute", "tpm": "tokens per minute"}.get(
        verdict.reason or "", "requests in flight"
    )
    return RateLimited(
        f"rate limit exceeded for this API key: {what}",
        code="rate_limit_exceeded",
        headers={
            **headers,
            "retry-after": str(max(1, math.ceil(wait))),
            "retry-after-ms": str(math.ceil(wait * 1000)),
            "x-should-retry": "true",
        },
    )


def tenant_models(scope: Scope, ids: list[str]) -> list[str]:
    """``ids`` a request's virtual key may use (all of them for any other request)."""
    tenant: Tenant | None = scope.get(TENANT_SCOPE_KEY)
    if tenant is None:
        return ids
    return [i for i in ids if tenant.key.allows(i)]
