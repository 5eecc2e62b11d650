"""Random identifiers (request ids, completion and message ids) without a system call each.

``os.urandom`` is a ``getrandom`` system call, and a request makes two or three ids (strace:
two calls a chat completion). Here the bytes come from ``os.urandom`` 4 KiB at a time and are
handed out 16 at a time: as random as before, one call per 256 ids. A forked child starts on fresh
bytes (it would otherwise hand out its parent's next ids).
"""

from __future__ import annotations

import os

_CHUNK = 4096
_bytes = b""
_at = _CHUNK


def random_hex(size: int = 16) -> str:
    """``size`` random bytes as hex (``os.urandom(size).hex()``, cheaper)."""
    global _bytes, _at
    at = _at
    if at + size > len(_bytes):
        _bytes = os.urandom(max(_CHUNK, size))
        at = 0
    _at = at + size
    return _bytes[at : at + size].hex()


def _forget() -> None:
    global _bytes, _at
    _bytes, _at = b"", _CHUNK


os.register_at_fork(after_in_child=_forget)
