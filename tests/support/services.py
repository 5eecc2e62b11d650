"""Teams' test services: the admin API as a client, a streamed chat as a virtual key's client
makes one, and real ``redis-server`` and PostgreSQL started on free ports with temporary data
directories (tests/setup-services.sh installs them).

Every wait here is bounded; every server binds 127.0.0.1 only and is stopped by its pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
from openai.types.chat import ChatCompletionMessageParam

from tests.support.clients import async_sdk
from tests.support.servers import free_port

ADMIN_KEY = "admin-key-for-tests-0123456789"
PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/local/bin", "/usr/bin")
# Five words: the budget tests' token counts (and so their costs) are reckoned on this message.
MESSAGE: list[ChatCompletionMessageParam] = [{"role": "user", "content": "one two three four five"}]


class Admin:
    """The admin API over real HTTP."""

    def __init__(self, base_url: str, key: str = ADMIN_KEY) -> None:
        self.client = httpx.Client(
            base_url=base_url, headers={"authorization": f"Bearer {key}"}, timeout=30
        )

    def create(self, **fields: Any) -> dict[str, Any]:
        fields.setdefault("name", "test")
        response = self.client.post("/admin/keys", json=fields)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def usage(self, **query: str) -> dict[str, Any]:
        response = self.client.get("/admin/usage", params=query)
        assert response.status_code == 200, response.text
        usage: dict[str, Any] = response.json()
        return usage

    def wait_requests(self, count: int, **query: str) -> dict[str, Any]:
        """The usage once ``count`` requests are in it (a request's row is written just after
        its response): polled, bounded to 10 s."""
        deadline = time.monotonic() + 10
        while True:
            usage = self.usage(**query)
            if usage["total"]["requests"] >= count or time.monotonic() > deadline:
                return usage
            time.sleep(0.05)


def ledger_rows(db: Path, key_id: str) -> list[dict[str, Any]]:
    """A key's rows in an SQLite ledger, oldest first, as column -> value."""
    with contextlib.closing(sqlite3.connect(db)) as connection:
        connection.row_factory = sqlite3.Row
        query = "SELECT * FROM usage_events WHERE key_id = ? ORDER BY ts"
        return [dict(row) for row in connection.execute(query, [key_id])]


async def stream_chat(url: str, key: str, **extra: Any) -> tuple[str, Any]:
    """One streamed chat (``slow/echo`` and :data:`MESSAGE` unless given), read to its end:
    ("ok", its usage) or (the refusal's error code, its headers)."""
    client = async_sdk(url, key)
    try:
        stream = await client.chat.completions.create(
            model=extra.pop("model", "slow/echo"),
            messages=extra.pop("messages", MESSAGE),
            stream=True,
            stream_options={"include_usage": True},
            **extra,
        )
        usage = None
        async for chunk in stream:
            usage = chunk.usage or usage
        return "ok", usage
    except openai.APIStatusError as exc:
        return str(exc.code), exc.response.headers
    finally:
        await client.close()


def _which(name: str, dirs: tuple[str, ...] = ()) -> str | None:
    for folder in dirs:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


def redis_available() -> bool:
    return _which("redis-server") is not None


def postgres_available() -> bool:
    return _which("initdb", PG_BIN_DIRS) is not None and _which("pg_ctl", PG_BIN_DIRS) is not None


def _wait_port(port: int, proc: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class RedisServer:
    """A ``redis-server`` of our own: no persistence, loopback only."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = _which("redis-server")
        assert binary is not None
        self.proc = subprocess.Popen(
            [
                binary,
                *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir),
                *("--save", "", "--appendonly", "no", "--protected-mode", "yes"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_port(self.port, self.proc)

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and nothing answers (a hung Redis)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def dump(self) -> bytes:
        """Every key and value in the server, as ``redis-cli --raw`` prints them."""
        cli = _which("redis-cli")
        assert cli is not None
        keys = subprocess.run(
            [cli, "-p", str(self.port), "--raw", "KEYS", "*"],
            capture_output=True,
            timeout=10,
            check=True,
        ).stdout
        out = [keys]
        for key in keys.split():
            out.append(
                subprocess.run(
                    [cli, "-p", str(self.port), "--raw", "DUMP", key.decode()],
                    capture_output=True,
                    timeout=10,
                    check=False,
                ).stdout
            )
        return b"\n".join(out)


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A PostgreSQL cluster in a temporary directory; yields its URL (database ``gateway``).

    Run as an unprivileged user when the tests run as root (PostgreSQL refuses root)."""
    initdb = _which("initdb", PG_BIN_DIRS)
    pg_ctl = _which("pg_ctl", PG_BIN_DIRS)
    assert initdb is not None and pg_ctl is not None
    port = free_port()
    base = tempfile.mkdtemp(prefix="pg-")
    data = os.path.join(base, "data")
    as_user: list[str] = []
    if os.getuid() == 0:
        import pwd

        user = "nobody"
        pwd.getpwnam(user)
        os.chmod(base, 0o777)
        as_user = ["runuser", "-u", user, "--"]
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    subprocess.run(
        [*as_user, initdb, "-D", data, "-U", "gateway", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
        timeout=120,
        env=env,
    )
    log = os.path.join(base, "log")
    subprocess.run(
        [
            *as_user,
            pg_ctl,
            "-D",
            data,
            "-l",
            log,
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        ],
        check=True,
        capture_output=True,
        timeout=90,
        env=env,
    )
    try:
        _wait_port(port, None)
        createdb = _which("createdb", PG_BIN_DIRS)
        assert createdb is not None
        subprocess.run(
            [createdb, "-h", "127.0.0.1", "-p", str(port), "-U", "gateway", "gateway"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield f"postgresql://gateway@127.0.0.1:{port}/gateway"
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", data, "-m", "immediate", "-w", "-t", "30", "stop"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(base, ignore_errors=True)
