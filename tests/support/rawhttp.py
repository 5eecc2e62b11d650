"""HTTP/1.1 by hand over a socket: exactly the bytes a test wants, no client library filtering.

Every read is bounded in bytes and time.
"""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["RawResponse", "address", "exchange", "parse"]


@dataclass(frozen=True)
class RawResponse:
    status: int
    head: bytes  # the status line and headers, exactly as received
    headers: list[tuple[str, str]]  # names lower-cased, in order
    body: bytes  # de-chunked if the response was chunked

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


def address(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


def parse(data: bytes) -> RawResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    response = RawResponse(int(status_line.split()[1]), head, headers, body)
    if response.header("transfer-encoding") == "chunked":
        return RawResponse(response.status, head, headers, _dechunk(body))
    return response


def exchange(
    base_url: str, request: bytes, *, timeout: float = 10.0, limit: int = 4 << 20
) -> RawResponse:
    """Send ``request`` as is and read until the server closes (the request should say
    ``connection: close``), ``limit`` bytes or ``timeout`` seconds; parse the first response."""
    deadline = time.monotonic() + timeout
    with socket.create_connection(address(base_url), timeout=timeout) as sock:
        # The server may answer and close before it has read everything.
        with contextlib.suppress(OSError):
            sock.sendall(request)
        data = b""
        while len(data) < limit and time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            data += chunk
    assert data, f"no response to {request[:80]!r}"
    return parse(data)
