"""Counters shared by every replica (``GATEWAY_REDIS_URL``): the in-process rules, run
atomically in Redis by two Lua scripts, one round trip at admission and one at settlement.

Keys of one virtual key share a hash tag, ``gw:{k:<id>}:...``: ``rpm`` and ``tpm`` (GCRA TATs),
``open`` (a sorted set of the reservations in flight, scored by their deadline: its size is the
parallel count), ``res:<id>`` (what a reservation holds), ``spent:<window>`` and
``resv:<window>`` (a budget's charged and reserved micro-USD and tokens). The time is Redis's
own (``TIME``), so replicas' clocks do not matter. A reservation whose replica died is charged
in full when its deadline passes (conservative: a crash never frees budget), swept by the next
admission of that key.

A budget counter that Redis does not have (first use of a window, a restarted Redis) is built
from the ledger's sum and set only if still missing, then admission is retried.

When Redis cannot be reached, no request waits for it: each call has a short timeout and no
retries, and after three failures in a row a breaker sends every request straight to the
failure policy for a second before one request probes again. The policy: rate limits fall back
to this process's own counters at ``limit / GATEWAY_EXPECTED_REPLICAS`` (``local``, the
default), are skipped (``open``) or refuse with 503 (``closed``); budgets refuse with a fast 503
``limits_unavailable`` (``closed``, the default) or are counted in process (``open``).
Settlements that fail are kept (bounded) and replayed when Redis answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import replace
from typing import Any

from gateway.settings import Settings
from gateway.tenancy.admission import LimitsUnavailable
from gateway.tenancy.limits import Ask, LocalLimiter, Verdict
from gateway.tenancy.resp import Redis, RedisError

logger = logging.getLogger("gateway.tenancy")
BREAKER_FAILURES = 3
BREAKER_COOLDOWN = 1.0
MAX_PENDING_SETTLEMENTS = 10_000
SETTLE_BATCH = 200

_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local base, rid, window = ARGV[1], ARGV[2], ARGV[3]
local rpm, tpm, par = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local bmicro, btokens = tonumber(ARGV[7]), tonumber(ARGV[8])
local tokens, micro = tonumber(ARGV[9]), tonumber(ARGV[10])
local ttl, spent_ttl = tonumber(ARGV[11]), tonumber(ARGV[12])
local budgeted = bmicro >= 0 or btokens >= 0
local open = base .. 'open'

-- Reservations past their deadline (their replica died): charged in full, slot freed.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', open, '-inf', now)) do
  local res = base .. 'res:' .. id
  local r = redis.call('HMGET', res, 'micro', 'tokens', 'window', 'b')
  if r[1] and r[4] == '1' then
    redis.call('HINCRBY', base .. 'resv:' .. r[3], 'micro', -tonumber(r[1]))
    redis.call('HINCRBY', base .. 'resv:' .. r[3], 'tokens', -tonumber(r[2]))
    if redis.call('EXISTS', base .. 'spent:' .. r[3]) == 1 then
      redis.call('HINCRBY', base .. 'spent:' .. r[3], 'micro', tonumber(r[1]))
      redis.call('HINCRBY', base .. 'spent:' .. r[3], 'tokens', tonumber(r[2]))
    end
  end
  redis.call('DEL', res)
  redis.call('ZREM', open, id)
  redis.call('INCR', base .. 'expired')
end

local function gcra(key, limit, cost)
  local interval = 60 / limit
  local tat = tonumber(redis.call('GET', key) or '0')
  local b = math.max(tat, now)
  local new_tat = b + cost * interval
  local excess = new_tat - now - 60
  if excess > 1e-9 then
    return false, tat, excess, math.max(0, math.floor((60 - (b - now)) / interval + 1e-6))
  end
  return true, new_tat, 0, math.max(0, math.floor((60 - (new_tat - now)) / interval + 1e-6))
end

local out = {'1', '', '0', '-1', '0', '-1', '0'}
local rpm_tat, tpm_tat
if rpm > 0 then
  local ok, tat, wait, left = gcra(base .. 'rpm', rpm, 1)
  out[4], out[5] = tostring(left), tostring(math.max(tat, now) - now)
  if not ok then out[1], out[2], out[3] = '0', 'rpm', tostring(wait) return out end
  rpm_tat = tat
end
if tpm > 0 then
  local ok, tat, wait, left = gcra(base .. 'tpm', tpm, tokens)
  out[6], out[7] = tostring(left), tostring(math.max(tat, now) - now)
  if not ok then out[1], out[2], out[3] = '0', 'tpm', tostring(wait) return out end
  tpm_tat = tat
end
if par > 0 and redis.call('ZCARD', open) >= par then
  out[1], out[2], out[3] = '0', 'max_parallel', '1'
  return out
end
if budgeted then
  local spent = redis.call('HMGET', base .. 'spent:' .. window, 'micro', 'tokens')
  if not spent[1] then return {'init'} end
  local resv = redis.call('HMGET', base .. 'resv:' .. window, 'micro', 'tokens')
  local rmicro, rtokens = tonumber(resv[1] or '0'), tonumber(resv[2] or '0')
  if bmicro >= 0 and tonumber(spent[1]) + rmicro + micro > bmicro then
    out[1], out[2], out[3] = '0', 'budget_usd', '0'
    return out
  end
  if btokens >= 0 and tonumber(spent[2]) + rtokens + tokens > btokens then
    out[1], out[2], out[3] = '0', 'budget_tokens', '0'
    return out
  end
  redis.call('HINCRBY', base .. 'resv:' .. window, 'micro', micro)
  redis.call('HINCRBY', base .. 'resv:' .. window, 'tokens', tokens)
  if spent_ttl > 0 then redis.call('EXPIRE', base .. 'resv:' .. window, spent_ttl) end
end
local function keep(key, tat)
  redis.call('SET', key, tostring(tat), 'PX', math.ceil((tat - now + 60) * 1000))
end
if rpm_tat then keep(base .. 'rpm', rpm_tat) end
if tpm_tat then keep(base .. 'tpm', tpm_tat) end
redis.call('ZADD', open, now + ttl, rid)
redis.call('HSET', base .. 'res:' .. rid, 'micro', micro, 'tokens', tokens, 'window', window,
  'b', budgeted and '1' or '0')
redis.call('EXPIRE', base .. 'res:' .. rid, math.ceil(ttl) + 3600)
redis.call('EXPIRE', open, math.ceil(ttl) + 3600)
return out
"""

_SETTLE = """
-- Settlements, five arguments each: key base, reservation, tokens, micro-USD, TPM (0: none).
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local settled = 0
for i = 1, #ARGV, 5 do
  local base, rid = ARGV[i], ARGV[i + 1]
  local tokens, micro, tpm = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
  local res = base .. 'res:' .. rid
  local r = redis.call('HMGET', res, 'micro', 'tokens', 'window', 'b')
  if r[1] then  -- else settled already, or expired and charged in full
    settled = settled + 1
    redis.call('DEL', res)
    redis.call('ZREM', base .. 'open', rid)
    if r[4] == '1' then
      redis.call('HINCRBY', base .. 'resv:' .. r[3], 'micro', -tonumber(r[1]))
      redis.call('HINCRBY', base .. 'resv:' .. r[3], 'tokens', -tonumber(r[2]))
      if redis.call('EXISTS', base .. 'spent:' .. r[3]) == 1 then
        redis.call('HINCRBY', base .. 'spent:' .. r[3], 'micro', micro)
        redis.call('HINCRBY', base .. 'spent:' .. r[3], 'tokens', tokens)
      end
    end
    local unused = tonumber(r[2]) - tokens
    if tpm > 0 and unused > 0 then
      local tat = tonumber(redis.call('GET', base .. 'tpm') or '0')
      local new_tat = math.max(now, tat - unused * 60 / tpm)
      redis.call('SET', base .. 'tpm', tostring(new_tat), 'PX',
        math.ceil((new_tat - now + 60) * 1000))
    end
  end
end
return settled
"""

_INIT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'micro', ARGV[1], 'tokens', ARGV[2])
  if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
  return 1
end
return 0
"""


def base_key(key_id: str) -> str:
    return f"gw:{{k:{key_id}}}:"


class RedisLimiter:
    """The shared limiter, with ``fallback`` (this process's :class:`LocalLimiter`) for the
    failure policy."""

    def __init__(self, settings: Settings, *, fallback: LocalLimiter) -> None:
        assert settings.redis_url is not None
        self.timeout = settings.redis_timeout
        self.client = Redis(settings.redis_url.get_secret_value(), timeout=self.timeout)
        self.ttl = settings.reservation_ttl or settings.total_timeout + 60
        self.rate_mode = settings.rate_limit_failure_mode
        self.budget_mode = settings.budget_failure_mode
        self.local = fallback
        self.baseline = fallback.baseline
        self._admit = self.client.script(_ADMIT)
        self._settle = self.client.script(_SETTLE)
        self._init = self.client.script(_INIT)
        # Requests admitted by the failure policy, with what this process counted for each
        # (without the rate limits that ``open`` skips): settled here, against the same.
        self.local_reservations: dict[str, Ask] = {}
        self.pending: deque[tuple[Ask, int, int]] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self.failures = 0
        self.open_until = 0.0
        self.probing = False
        self.degraded = False
        self.degraded_decisions = 0

    # The breaker
    def _usable(self) -> bool:
        if self.failures < BREAKER_FAILURES:
            return True
        if time.monotonic() < self.open_until or self.probing:
            return False
        self.probing = True  # one request probes; the others keep to the policy meanwhile
        return True

    def _failed(self, exc: Exception) -> None:
        self.probing = False
        self.failures += 1
        if self.failures >= BREAKER_FAILURES:
            self.open_until = time.monotonic() + BREAKER_COOLDOWN
        if not self.degraded:
            self.degraded = True
            logger.error(
                "Redis unreachable (%s): limits follow the failure policy (rate limits: %s, "
                "budgets: %s) until it answers",
                type(exc).__name__,
                self.rate_mode,
                self.budget_mode,
            )

    def _worked(self) -> None:
        self.probing = False
        self.failures = 0
        if self.degraded:
            self.degraded = False
            logger.warning("Redis answers again: limits are shared again")

    async def _call(self, script: str, args: list[Any], keys: list[str]) -> Any:
        return await self.client.evalsha(script, keys, args)

    # The limiter
    async def admit(self, ask: Ask) -> Verdict:
        if self.pending and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.get_running_loop().create_task(self._replay())
        if self._usable():
            try:
                verdict = await self._shared_admit(ask)
            except _REDIS_DOWN as exc:
                self._failed(exc)
            except BaseException:  # not Redis's fault (the ledger's baseline): no verdict
                self.probing = False
                raise
            else:
                self._worked()
                return verdict
        return await self._degraded_admit(ask)

    async def _shared_admit(self, ask: Ask) -> Verdict:
        key = ask.key
        window, start, _ = ask.window
        base = base_key(key.id)
        args = [
            base,
            ask.reservation,
            window,
            key.rpm or 0,
            key.tpm or 0,
            key.max_parallel or 0,
            -1 if key.budget_micro_usd is None else key.budget_micro_usd,
            -1 if key.budget_tokens is None else key.budget_tokens,
            ask.tokens,
            ask.micro_usd,
            self.ttl,
            self._spent_ttl(ask),
        ]
        keys = [base + name for name in ("open", "rpm", "tpm", "spent:" + window)]
        for _ in range(3):
            out = await self._call(self._admit, args, keys)
            if out[0] != b"init":
                return _verdict(out)
            # No counter for this window in Redis: build it from the ledger, once.
            micro, tokens = await self.baseline(key.id, start)
            await self._call(self._init, [micro, tokens, self._spent_ttl(ask)], [keys[3]])
        raise RuntimeError("the budget counter could not be initialized")

    def _spent_ttl(self, ask: Ask) -> int:
        window, _, end = ask.window
        if window == "total":
            return 0
        return int(end - time.time()) + 86_400  # the window, and a day to spare

    async def _degraded_admit(self, ask: Ask) -> Verdict:
        """The failure policy, with this process's counters."""
        self.degraded_decisions += 1
        key = ask.key
        rated = key.rpm is not None or key.tpm is not None or key.max_parallel is not None
        if (key.budgeted and self.budget_mode == "closed") or (
            rated and self.rate_mode == "closed"
        ):
            raise LimitsUnavailable
        local = ask
        if self.rate_mode == "open":
            local = replace(ask, key=replace(key, rpm=None, tpm=None, max_parallel=None))
        verdict = await self.local.admit(local)
        verdict.degraded = True
        if verdict.ok:
            self.local_reservations[ask.reservation] = local
        return verdict

    async def settle(self, ask: Ask, tokens: int, micro_usd: int) -> bool:
        """Queue a settlement: the settlements of one loop tick go to Redis as one script
        call, after the responses are complete, so a request waits for Redis once (its
        admission). On one connection, commands run in order: a settlement queued before the
        next admission is applied before it."""
        local = self.local_reservations.pop(ask.reservation, None)
        if local is not None:  # not a TPM refund for tokens ``open`` never charged
            return await self.local.settle(local, tokens, micro_usd)
        if len(self.pending) >= MAX_PENDING_SETTLEMENTS:
            self.pending.popleft()
            logger.error("Redis unreachable: a settlement was dropped (queue full)")
        self.pending.append((ask, tokens, micro_usd))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._replay())
        return True

    async def _shared_settle(self, batch: list[tuple[Ask, int, int]]) -> int:
        args: list[Any] = []
        for ask, tokens, micro_usd in batch:
            args += [base_key(ask.key.id), ask.reservation, tokens, micro_usd, ask.key.tpm or 0]
        settled: int = await self._call(self._settle, args, [])
        return settled

    async def _replay(self) -> None:
        """Send the queued settlements, a batch per call, while Redis answers; what fails
        stays queued for the next settlement or admission to send."""
        while self.pending and self._usable():
            batch = [self.pending[i] for i in range(min(SETTLE_BATCH, len(self.pending)))]
            try:
                await self._shared_settle(batch)
            except _REDIS_DOWN as exc:
                self._failed(exc)
                return
            self._worked()
            for _ in batch:
                self.pending.popleft()

    async def aclose(self) -> None:
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        if self.pending:
            await self._replay()
        await self.client.aclose()


_REDIS_DOWN = (RedisError, OSError, TimeoutError)


def _verdict(out: list[bytes]) -> Verdict:
    return Verdict(
        ok=out[0] == b"1",
        reason=out[1].decode() or None,
        retry_after=float(out[2]),
        requests_remaining=None if out[3] == b"-1" else int(out[3]),
        requests_reset=float(out[4]),
        tokens_remaining=None if out[5] == b"-1" else int(out[5]),
        tokens_reset=float(out[6]),
    )
