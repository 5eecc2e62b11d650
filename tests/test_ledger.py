"""The ledger off the hot path: a locked database delays no request; rows wait in a bounded
buffer, then are dropped and counted; what was buffered is written once the database is
back. And one settlement per request, whatever ends it."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import httpx
import openai
from openai.types.chat import ChatCompletionMessageParam

from gateway.app import create_app
from tests.conftest import sdk, settings
from tests.support.servers import serve_in_thread
from tests.support.services import ADMIN_KEY, Admin

MESSAGE: list[ChatCompletionMessageParam] = [{"role": "user", "content": "one two three"}]


def test_a_locked_database_delays_no_request(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    app = create_app(
        settings(admin_key=ADMIN_KEY, database_url=f"sqlite:///{db}", ledger_queue_size=5)
    )
    with serve_in_thread(app) as url:
        admin = Admin(url)
        created = admin.create(name="busy", rpm=1000)
        client = sdk(url, created["key"], timeout=30)
        client.chat.completions.create(model="echo/echo", messages=MESSAGE)
        admin.wait_requests(1, key_id=created["id"])
        # Another process holds the write lock: every batch waits, then fails, and retries.
        locker = sqlite3.connect(db, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")
        try:
            for _ in range(12):
                reply = client.chat.completions.create(model="echo/echo", messages=MESSAGE)
                assert reply.choices[0].message.content == "one two three"
            # Key lookups read past the lock (WAL): a key made before the lock still works
            # once its cache entry is gone.
            time.sleep(1.1)
            client.chat.completions.create(model="echo/echo", messages=MESSAGE)
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        # 13 requests during the lock and 5 rows kept at most: 8 or more dropped and
        # counted, the rest written once the lock is gone; none both.
        usage = admin.wait_requests(6, key_id=created["id"])
        assert usage["dropped_rows"] >= 8
        assert usage["total"]["requests"] + usage["dropped_rows"] == 1 + 13


def test_the_ledger_records_requests_of_static_keys_too(tmp_path: Path) -> None:
    app = create_app(
        settings(
            api_keys=["static-key-0123456789"],
            admin_key=ADMIN_KEY,
            database_url=f"sqlite:///{tmp_path / 'g.db'}",
        )
    )
    with serve_in_thread(app) as url:
        sdk(url, "static-key-0123456789").chat.completions.create(
            model="echo/echo", messages=MESSAGE
        )
        usage = Admin(url).wait_requests(1, group_by="key")
        assert [r["key"] for r in usage["data"]] == ["static-0"]
        assert usage["data"][0]["unpriced_requests"] == 1  # no price: cost 0, and it says so
        assert usage["total"]["cost_micro_usd"] == 0


def test_a_key_revoked_while_its_streams_run(tmp_path: Path) -> None:
    """Revoking stops new requests at once; the streams already admitted finish and are
    charged once each, and their reservations are given back."""
    app = create_app(
        settings(
            admin_key=ADMIN_KEY,
            database_url=f"sqlite:///{tmp_path / 'g.db'}",
            prices={"slow/echo": {"input": 1, "output": 1}},
            providers={"slow": {"type": "echo", "chunk_delay_ms": 20, "models": ["echo"]}},
        )
    )
    with serve_in_thread(app) as url:
        admin = Admin(url)
        created = admin.create(name="revoked-live", budget_usd=1, max_parallel=2)
        words = " ".join(["word"] * 40)
        with httpx.Client(timeout=30) as one, httpx.Client(timeout=30) as two:
            streams = []
            for client in (one, two):
                response = client.send(
                    client.build_request(
                        "POST",
                        url + "/v1/chat/completions",
                        headers={"authorization": f"Bearer {created['key']}"},
                        json={
                            "model": "slow/echo",
                            "messages": [{"role": "user", "content": words}],
                            "stream": True,
                            "stream_options": {"include_usage": True},
                        },
                    ),
                    stream=True,
                )
                assert response.status_code == 200
                streams.append(response)
            assert admin.client.delete(f"/admin/keys/{created['id']}").status_code == 200
            try:
                sdk(url, created["key"]).chat.completions.create(
                    model="slow/echo", messages=MESSAGE
                )
                raise AssertionError("a revoked key was admitted")
            except openai.AuthenticationError as exc:
                assert exc.code == "api_key_revoked"
            for response in streams:
                body = response.read().decode()
                assert body.rstrip().endswith("data: [DONE]")
                assert '"completion_tokens":40' in body
                response.close()
        usage = admin.wait_requests(2, key_id=created["id"])["total"]
        assert usage["requests"] == 2  # the refused request never reached a surface
        assert usage["completion_tokens"] == 80
        tenancy_reservations = app.state.tenancy.limiter.reservations
        assert tenancy_reservations == {}
