"""Log lines as text or, with ``GATEWAY_LOG_FORMAT=json``, one JSON object per line.

Every record becomes ``{"time", "level", "logger", "message"}``; a request's access and failure
lines add the request's fields (:func:`gateway.observe.call_fields`): ids, route, model,
deployment, status, error and its cause, attempts, timings and tokens. Never a key, a prompt
or a body: a :class:`gateway.observe.Call` holds none.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FIELDS_ATTRIBUTE = "gateway_fields"  # where a record carries its request's fields


class _SecondCache(logging.Formatter):
    """``formatTime`` with its seconds formatted once a second, not once a record: an access
    line per request paid a ``localtime`` and a ``strftime`` for a string that changes once
    a second. The same output (the time zone and the clock are read per whole second)."""

    seconds_format = "%Y-%m-%d %H:%M:%S"  # logging's default_time_format and _msec_format
    msec_format = "%s,%03d"
    _cached: tuple[int, str] = (-1, "")  # a second and its text, swapped as one (threads)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached = self._cached
        if cached[0] != second:
            text = time.strftime(self.seconds_format, self.converter(second))
            cached = self._cached = (second, text)
        return self.msec_format % (cached[1], record.msecs)


class TextFormatter(_SecondCache):
    """``TEXT_FORMAT``, its time formatted once a second."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)


class JsonFormatter(_SecondCache):
    """One JSON object per record, with the request's fields when the record has them."""

    seconds_format = "%Y-%m-%dT%H:%M:%S"
    msec_format = "%s.%03dZ"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS_ATTRIBUTE, None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()

    converter = time.gmtime  # type: ignore[assignment]


def configure(level: str, *, json: bool) -> None:
    """Root logging for the gateway's process (each worker calls it too)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    # No log line of the gateway names its thread or process: the record need not look them
    # up (each os.getpid() is a system call, and an access line is made per request).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    # JSON replaces what is there (the text handler set up before the settings were read);
    # text leaves a root handler alone, as logging.basicConfig does.
    logging.basicConfig(level=level.upper(), handlers=[handler], force=json)
    for noisy in ("httpx", "httpx2"):  # one line per call (httpx2: the openai SDK the UI uses)
        logging.getLogger(noisy).setLevel(logging.WARNING)
