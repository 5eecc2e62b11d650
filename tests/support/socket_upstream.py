"""An upstream written on bare sockets, for what an ASGI server will not do on purpose: read a
request and hang up without a word, or answer with a body delimited by closing the connection.

Each accepted connection reads one request (head and Content-Length body) at a time and hands
it to ``answer``, which returns the raw bytes to send back, or None to close at once. Every
request read is counted, so a test can see how often one client request reached the upstream.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator

__all__ = ["SocketUpstream", "close_delimited_json", "serve_socket_upstream"]

Answer = Callable[[bytes, bytes], bytes | None]  # (head, body) -> response bytes, or None


def close_delimited_json(payload: object) -> bytes:
    """An HTTP/1.0-style answer: no Content-Length, no chunking, the body ends at EOF."""
    body = json.dumps(payload).encode()
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n" + body


class SocketUpstream:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[bytes] = []  # the bodies, in the order they were read
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.base_url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1"

    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by close()
                return
            thread = threading.Thread(target=self._connection, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _connection(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the client hung up, or the test is over
            self._exchanges(conn)

    def _exchanges(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        buffer = b""
        with conn:
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                while len(buffer) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                body, buffer = buffer[:length], buffer[length:]
                with self._lock:
                    self.requests.append(body)
                reply = self.answer(head, body)
                if reply is None:
                    return  # hang up without a word
                conn.sendall(reply)
                if b"connection: close" in reply.split(b"\r\n\r\n", 1)[0].lower():
                    return

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        for thread in self._threads:
            thread.join(timeout=5)


@contextlib.contextmanager
def serve_socket_upstream(answer: Answer) -> Iterator[SocketUpstream]:
    upstream = SocketUpstream(answer)
    thread = threading.Thread(target=upstream.serve, daemon=True)
    thread.start()
    try:
        yield upstream
    finally:
        upstream.close()
        thread.join(timeout=5)
