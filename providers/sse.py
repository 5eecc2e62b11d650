"""An incremental Server-Sent Events reader for upstream streams.

It follows the WHATWG event-stream rules that matter for LLM APIs: LF, CRLF and bare CR line
endings (also when a CRLF is split across reads), events split across reads, multi-line
``data`` joined with ``\\n``, comments and other fields ignored, ``data:`` with or without a
space after the colon.
"""

from __future__ import annotations


class SSEDecoder:
    """Feed bytes in, get the ``data`` payload of each completed event out."""

    __slots__ = ("_buffer", "_data", "_skip_lf")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []
        self._skip_lf = False

    def feed(self, chunk: bytes) -> list[bytes]:
        """Return the data of every event completed by ``chunk``, in order."""
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):
                # Possibly the first half of a CRLF: the LF, if any, is skipped next time.
                self._skip_lf = True
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events: list[bytes] = []
        start = 0
        data = self._data
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            line = buffer[start:end]
            start = end + 1
            if not line:
                if data:
                    events.append(b"\n".join(data))
                    data.clear()
                continue
            if line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
            # Comments (":...") and other fields (event, id, retry) carry nothing we use.
        self._buffer = buffer[start:]
        return events

    def flush(self) -> list[bytes]:
        """At end of stream: an event left without its blank line still counts if complete."""
        events = self.feed(b"\n\n") if self._buffer or self._data else []
        return events
