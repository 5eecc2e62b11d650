"""A lean HTTP/1.1 client for bench/reliability.py: raw asyncio streams, one keep-alive
connection per virtual client, chunked or Content-Length bodies, SSE ``data:`` events.

It does as little as a client can, so the figures measure the gateway, and it lets the caller
close the connection at an exact moment (after N events, or after a delay) and know when.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

PATH = "/v1/chat/completions"


def chat_body(model: str, text: str, *, stream: bool) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
    }
    return json.dumps(body).encode()


@dataclass
class Outcome:
    """What one request got. ``kind`` is ``done`` | ``error_event`` | ``closed_by_us`` |
    ``json`` (a whole non-stream answer) | ``truncated`` | ``conn_error`` | ``timeout``."""

    status: int = 0
    kind: str = "truncated"
    events: list[bytes] = field(default_factory=list)
    error_code: str | None = None
    body: bytes = b""
    closed_at: float | None = None  # time.monotonic() when we closed the connection


class Conn:
    """One TCP connection to the gateway; reusable while the server keeps it alive."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    @property
    def usable(self) -> bool:
        return self.writer is not None and not self.writer.is_closing()

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> float:
        """Close now (FIN; RST if unread data is pending, as any client's close would)."""
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None
        return time.monotonic()

    async def request(
        self,
        body: bytes,
        *,
        close_after_events: int | None = None,
        close_after_s: float | None = None,
        limit_s: float = 30.0,
    ) -> Outcome:
        """POST ``body``; close the connection after ``close_after_events`` SSE events, or
        ``close_after_s`` seconds without a complete answer (``closed_by_us``)."""
        out = Outcome()
        try:
            if not self.usable:
                await self._connect()
            assert self.reader is not None and self.writer is not None
            head = (
                f"POST {PATH} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            self.writer.write(head.encode() + body)
            limit = close_after_s if close_after_s is not None else limit_s
            try:
                await asyncio.wait_for(self._read(out, close_after_events), limit)
            except TimeoutError:
                if close_after_s is None:
                    out.kind = "timeout"
                    self.close()
                else:
                    out.kind, out.closed_at = "closed_by_us", self.close()
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            out.kind = "conn_error"
            out.body = repr(exc).encode()[:200]
            self.close()
        return out

    async def _read(self, out: Outcome, close_after_events: int | None) -> None:
        assert self.reader is not None
        reader = self.reader
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        out.status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        keep_alive = headers.get("connection", "").lower() != "close"
        if headers.get("transfer-encoding", "").lower() != "chunked":
            out.body = await reader.readexactly(int(headers.get("content-length", "0")))
            out.kind = "json"
            if not keep_alive:
                self.close()
            return
        buf = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            buf += data[:-2]
            while (end := buf.find(b"\n\n")) >= 0:
                block, buf = buf[:end], buf[end + 2 :]
                for raw in block.split(b"\n"):
                    if raw.startswith(b"data:"):
                        self._event(out, raw[5:].strip())
                if close_after_events is not None and len(out.events) >= close_after_events:
                    out.kind, out.closed_at = "closed_by_us", self.close()
                    return
        if not keep_alive:
            self.close()

    @staticmethod
    def _event(out: Outcome, data: bytes) -> None:
        out.events.append(data)
        if data == b"[DONE]":
            out.kind = "done"
            return
        with contextlib.suppress(ValueError):
            obj = json.loads(data)
            if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
                out.kind, out.error_code = "error_event", obj["error"].get("code")
