"""An incremental Server-Sent Events reader for upstream streams.

It follows the WHATWG event-stream rules that matter for LLM APIs: LF, CRLF and bare CR line
endings (also when a CRLF is split across reads), events split across reads, multi-line
``data`` joined with ``\\n``, comments and other fields ignored, ``data:`` with or without a
space after the colon.

Memory is bounded: a line that spans reads, or the data of one event, longer than
``max_event_bytes`` raises :class:`SSEError` instead of growing without end. (A line that
arrives whole in one read costs no more than that read, and is only checked if it is data.)
"""

from __future__ import annotations


class SSEError(Exception):
    """The stream holds a line or an event larger than the decoder accepts."""


class SSEDecoder:
    """Feed bytes in, get the ``data`` payload of each completed event out."""

    __slots__ = ("_data", "_data_size", "_limit", "_pending", "_pending_size", "_skip_lf")

    def __init__(self, *, max_event_bytes: int = 16 * 1024 * 1024) -> None:
        self._limit = max_event_bytes
        # The start of an unfinished line, in the pieces it came in: joined once, when its
        # end arrives, rather than copied again on every read (quadratic for a long line).
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._data: list[bytes] = []  # the data lines of the event in progress
        self._data_size = -1  # their size joined by "\n"s: one fewer than lines
        self._skip_lf = False

    def feed(self, chunk: bytes) -> list[bytes]:
        """Return the data of every event completed by ``chunk``, in order.

        Raises :class:`SSEError` when a line or an event grows past ``max_event_bytes``.
        """
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[0] == 10:  # the LF of a CRLF split across reads
                chunk = chunk[1:]
        # 13 is CR: an int operand is a memchr; a bytes operand first fails as an int, and
        # that raises and clears a TypeError on every read.
        if 13 in chunk:
            if chunk.endswith(b"\r"):
                # Possibly the first half of a CRLF: the LF, if any, is skipped next time.
                self._skip_lf = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        pending = self._pending
        if pending:
            end = chunk.find(b"\n")
            if end < 0:
                if chunk:
                    self._pend(chunk)
                return []
            if self._pending_size + end > self._limit:
                raise SSEError(f"an upstream line is longer than {self._limit} bytes")
            if len(pending) == 1:
                chunk = pending[0] + chunk
            else:
                pending.append(chunk)
                chunk = b"".join(pending)
            pending.clear()
            self._pending_size = 0
        events: list[bytes] = []
        start = 0
        data = self._data
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                break
            line = chunk[start:end]
            start = end + 1
            if not line:
                if data:
                    events.append(b"\n".join(data))
                    data.clear()
                    self._data_size = -1
                continue
            if line.startswith(b"data:"):
                value = line[6:] if line.startswith(b" ", 5) else line[5:]
                data.append(value)
                self._data_size += len(value) + 1
                if self._data_size > self._limit:
                    raise SSEError(f"an upstream event is larger than {self._limit} bytes")
            # Comments (":...") and other fields (event, id, retry) carry nothing we use.
        if start < len(chunk):  # the start of a line (perhaps the whole chunk)
            rest = chunk[start:]
            pending.append(rest)
            self._pending_size = size = len(rest)
            if size > self._limit:
                raise SSEError(f"an upstream line is longer than {self._limit} bytes")
        return events

    def _pend(self, piece: bytes) -> None:
        self._pending.append(piece)
        self._pending_size += len(piece)
        if self._pending_size > self._limit:
            raise SSEError(f"an upstream line is longer than {self._limit} bytes")

    def flush(self) -> list[bytes]:
        """At end of stream: an event left without its blank line still counts if complete."""
        return self.feed(b"\n\n") if self._pending or self._data else []
