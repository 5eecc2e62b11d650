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


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the request's fields when the record has them."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
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
    handler.setFormatter(JsonFormatter() if json else logging.Formatter(TEXT_FORMAT))
    # JSON replaces what is there (the text handler set up before the settings were read);
    # text leaves a root handler alone, as logging.basicConfig does.
    logging.basicConfig(level=level.upper(), handlers=[handler], force=json)
    for noisy in ("httpx", "httpx2"):  # one line per call (httpx2: the openai SDK the UI uses)
        logging.getLogger(noisy).setLevel(logging.WARNING)
