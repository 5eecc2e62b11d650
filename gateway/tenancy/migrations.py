"""The schema, as numbered migrations that both engines run (SQLite and PostgreSQL share
the DDL: only portable types). A database records the versions it has; a start applies the
missing ones in order, each in one transaction, so a new column is one more entry here."""

from __future__ import annotations

MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE api_keys (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                digest TEXT NOT NULL UNIQUE,
                prefix TEXT NOT NULL,
                last4 TEXT NOT NULL,
                models TEXT,
                rpm INTEGER,
                tpm INTEGER,
                max_parallel INTEGER,
                budget_micro_usd BIGINT,
                budget_tokens BIGINT,
                budget_period TEXT NOT NULL,
                expires_at DOUBLE PRECISION,
                created_at DOUBLE PRECISION NOT NULL,
                revoked_at DOUBLE PRECISION,
                metadata TEXT NOT NULL
            )""",
            """CREATE TABLE usage_events (
                id TEXT PRIMARY KEY,
                request_id TEXT NOT NULL,
                ts DOUBLE PRECISION NOT NULL,
                day TEXT NOT NULL,
                key_id TEXT,
                surface TEXT NOT NULL,
                model TEXT,
                provider TEXT,
                upstream_model TEXT,
                stream INTEGER NOT NULL,
                attempts INTEGER NOT NULL,
                status INTEGER NOT NULL,
                error_code TEXT,
                prompt_tokens BIGINT NOT NULL,
                completion_tokens BIGINT NOT NULL,
                cached_tokens BIGINT NOT NULL,
                reasoning_tokens BIGINT NOT NULL,
                usage_source TEXT NOT NULL,
                cost_micro_usd BIGINT NOT NULL,
                priced INTEGER NOT NULL,
                ttft_ms DOUBLE PRECISION,
                duration_ms DOUBLE PRECISION NOT NULL,
                client_left INTEGER NOT NULL
            )""",
            "CREATE INDEX usage_events_key_ts ON usage_events (key_id, ts)",
            "CREATE INDEX usage_events_ts ON usage_events (ts)",
        ],
    ),
]
