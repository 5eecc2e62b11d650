"""The admin API (``GATEWAY_ADMIN_KEY``): virtual keys and the usage ledger.

Routes exist only when the admin key is set. They take that key alone (``Authorization:
Bearer``), compared in constant time; a client key, virtual or static, gets 401 here, and the
admin key is no client key. Bodies are checked strictly (no ``"5"`` for 5, no unknown
fields) and every write is one statement, so a refused request leaves nothing behind. The
secret of a key is in the creation's answer and nowhere else: only its keyed digest is stored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Iterable
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal, TypeVar

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.asgi import JSON_HEADERS
from gateway.errors import AuthenticationError, InvalidRequest, NotFound, ServiceUnavailable
from gateway.middleware import request_token
from gateway.observe import CALL_SCOPE_KEY, Call
from gateway.tenancy.admission import Tenancy
from gateway.tenancy.keys import KeyRecord, new_key_id, new_secret
from gateway.tenancy.store import GROUPS, SUMS

logger = logging.getLogger("gateway.admin")
T = TypeVar("T")
_HEADERS = {k.decode(): v.decode() for k, v in JSON_HEADERS if k != b"content-type"}
Count = Annotated[int, Field(ge=1, le=10**12)]
ModelPattern = Annotated[str, Field(min_length=1, max_length=300)]
MAX_METADATA_BYTES = 16 * 1024


# What an audit line shows of a key: its limits, never its metadata (anything a team put
# there) and never its secret (the display form is the secret's first and last characters).
_AUDITED = (
    *("models", "rpm", "tpm", "max_parallel"),
    *("budget_usd", "budget_tokens", "budget_period", "expires_at"),
)


def _audit(request: Request, what: str, *args: Any) -> None:
    """One line per change an admin makes, with the request's id: who changed which key, how."""
    call: Call | None = request.scope.get(CALL_SCOPE_KEY)
    logger.info("request %s: admin: " + what, call.request_id if call else "-", *args)


def _limits(key: dict[str, Any], fields: Iterable[str]) -> str:
    """``fields`` (of :data:`_AUDITED`) of a key's public form, as ``name=value``."""
    return ", ".join(f"{name}={key[name]!r}" for name in fields) or "no limits"


def _json(payload: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(payload), status_code=status, media_type="application/json", headers=_HEADERS
    )


class _Limits(BaseModel):
    """The limits a key may have; every one optional (null: no such limit)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    models: Annotated[list[ModelPattern], Field(max_length=1000)] | None = None
    rpm: Count | None = None
    tpm: Count | None = None
    max_parallel: Count | None = None
    budget_usd: Annotated[float, Field(ge=0, le=1e9)] | None = None
    budget_tokens: Count | None = None
    expires_at: Annotated[datetime, Field(strict=False)] | None = None
    metadata: dict[str, Any] | None = None

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)  # ISO 8601 without an offset: UTC
        return value

    @field_validator("metadata")
    @classmethod
    def _bounded(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(orjson.dumps(value)) > MAX_METADATA_BYTES:
            raise ValueError(f"at most {MAX_METADATA_BYTES} bytes of JSON")
        return value


class KeyCreate(_Limits):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    budget_period: Literal["day", "month", "total"] = "total"


class KeyPatch(_Limits):
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    budget_period: Literal["day", "month", "total"] | None = None


def _columns(fields: dict[str, Any]) -> dict[str, Any]:
    """API fields -> stored columns (USD to integer micro-USD, times to epoch seconds)."""
    out = dict(fields)
    if "budget_usd" in out:
        usd = out.pop("budget_usd")
        out["budget_micro_usd"] = None if usd is None else round(usd * 1_000_000)
    if "expires_at" in out and out["expires_at"] is not None:
        expires = out["expires_at"].timestamp()
        if expires <= time.time():
            raise InvalidRequest("expires_at is in the past", param="expires_at")
        out["expires_at"] = expires
    if "models" in out and out["models"] is not None:
        out["models"] = tuple(out["models"])
    return out


def _when(value: str, name: str) -> float:
    """A query's ISO 8601 time or date (UTC unless it says otherwise) as epoch seconds."""
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        at = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(
            f"{name} must be an ISO 8601 date or time, such as 2026-12-01 or 2026-12-01T12:00:00Z",
            param=name,
        ) from None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


async def _db(operation: Awaitable[T]) -> T:
    """A store operation; a database failure is a 503 the client may retry, never a 500."""
    try:
        return await operation
    except Exception as exc:
        logger.error("database operation failed: %s", type(exc).__name__)
        raise ServiceUnavailable(
            "the database cannot be reached; retry shortly",
            code="database_unavailable",
            headers={"retry-after": "1"},
        ) from None


def admin_routes(tenancy: Tenancy) -> APIRouter:
    async def admin_only(request: Request) -> None:
        token = request_token(request.scope)
        if isinstance(token, AuthenticationError):
            raise token
        if not tenancy.is_admin(token):
            raise AuthenticationError("Invalid admin key", code="invalid_admin_key")
        await _db(tenancy.ready())

    router = APIRouter(prefix="/admin", dependencies=[Depends(admin_only)])

    async def existing(key_id: str) -> KeyRecord:
        key = await _db(tenancy.store.get_key(key_id)) if len(key_id) <= 100 else None
        if key is None:
            raise NotFound(f"no key with id '{key_id[:100]}'", code="key_not_found")
        return key

    @router.post("/keys")
    async def create_key(body: KeyCreate, request: Request) -> Response:
        fields = _columns(body.model_dump())
        secret = new_secret()
        key = KeyRecord(
            id=new_key_id(),
            name=fields["name"],
            prefix=secret[:10],
            last4=secret[-4:],
            created_at=time.time(),
            models=fields["models"],
            rpm=fields["rpm"],
            tpm=fields["tpm"],
            max_parallel=fields["max_parallel"],
            budget_micro_usd=fields["budget_micro_usd"],
            budget_tokens=fields["budget_tokens"],
            budget_period=fields["budget_period"],
            expires_at=fields["expires_at"],
            metadata=fields["metadata"] or {},
        )
        await _db(tenancy.store.insert_key(key, tenancy.digest(secret.encode())))
        tenancy.remember(secret.encode(), key)
        public = key.public()
        limited = [name for name in _AUDITED if public[name] is not None]
        _audit(
            request, "key %s created, name %r: %s", key.id, key.name[:100], _limits(public, limited)
        )
        return _json({**public, "key": secret}, 201)

    @router.get("/keys")
    async def list_keys(request: Request) -> Response:
        query = request.query_params
        raw_limit = query.get("limit", "100")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
            raise InvalidRequest("limit must be an integer from 1 to 1000", param="limit")
        keys = await _db(tenancy.store.list_keys(limit=int(raw_limit), after=query.get("after")))
        data = [k.public() for k in keys]
        return _json(
            {
                "object": "list",
                "data": data,
                "has_more": len(data) == int(raw_limit),
                "last_id": data[-1]["id"] if data else None,
            }
        )

    @router.get("/keys/{key_id}")
    async def get_key(key_id: str) -> Response:
        return _json((await existing(key_id)).public())

    @router.patch("/keys/{key_id}")
    async def patch_key(key_id: str, body: KeyPatch, request: Request) -> Response:
        await existing(key_id)
        changes = _columns(body.model_dump(exclude_unset=True))
        for required in ("name", "budget_period"):
            if required in changes and changes[required] is None:
                raise InvalidRequest(f"{required} cannot be null", param=required)
        key = await _db(tenancy.store.update_key(key_id, changes))
        tenancy.forget(key_id)
        assert key is not None
        public = key.public()
        sent = body.model_fields_set
        others = sorted(sent - set(_AUDITED))  # name, metadata: said changed, not shown
        _audit(
            request,
            "key %s updated: %s%s",
            key_id,
            _limits(public, [name for name in _AUDITED if name in sent]),
            f"; also {', '.join(others)}" if others else "",
        )
        return _json(public)

    @router.delete("/keys/{key_id}")
    async def revoke_key(key_id: str, request: Request) -> Response:
        await existing(key_id)
        key = await _db(tenancy.store.revoke_key(key_id, time.time()))
        tenancy.forget(key_id)
        assert key is not None
        _audit(request, "key %s revoked", key_id)
        return _json(key.public())

    @router.get("/usage")
    async def usage(request: Request) -> Response:
        query = request.query_params
        for name in query:
            if name not in ("key_id", "model", "since", "until", "group_by"):
                raise InvalidRequest(f"unknown query parameter '{name[:100]}'", param=name[:100])
        groups = [g for g in query.get("group_by", "").split(",") if g]
        for group in groups:
            if group not in GROUPS:
                raise InvalidRequest(
                    f"group_by takes {', '.join(GROUPS)} (comma-separated)", param="group_by"
                )
        if len(set(groups)) != len(groups):
            raise InvalidRequest("group_by names a group twice", param="group_by")
        since = _when(query["since"], "since") if "since" in query else None
        until = _when(query["until"], "until") if "until" in query else None
        await tenancy.ledger.flush(wait=2.0)  # what this process answered is in the figures
        rows = await _db(
            tenancy.store.usage(
                key_id=query.get("key_id"),
                model=query.get("model"),
                since=since,
                until=until,
                group_by=groups,
            )
        )
        total: dict[str, Any] = {}
        if groups:
            for name in SUMS:
                total[name] = sum(row[name] for row in rows)
            total["cost_usd"] = total["cost_micro_usd"] / 1_000_000
        else:
            total = rows[0]
        return _json(
            {
                "object": "list",
                "group_by": groups,
                "data": rows if groups else [],
                "total": total,
                "dropped_rows": tenancy.ledger.dropped,
            }
        )

    return router
