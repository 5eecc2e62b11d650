"""The ``encrypted_content`` of the Responses surface's reasoning items: what an upstream gave
that only it can take back, stamped with the deployment that produced it.

The gateway stores nothing (``store`` is refused), so whatever a later turn needs must travel
with the client: a reasoning item's text with its signature (Anthropic's thinking block),
redacted thinking, and provider data riding on tool calls (Gemini's thought signatures, keyed
by ``call_id``). Codex and the agents SDK send reasoning items back as they got them, so the
item is the carrier.

The stamp is what keeps a replay safe: a signature minted by one upstream is an error
(``invalid_encrypted_content``, openai/codex#9045) or worse at any other, so a reasoning item
is replayed only to the deployment named in it and dropped everywhere else, as are items the
gateway did not make (OpenAI's own encrypted reasoning). The content is not secret (the client
saw the text already) and not signed: a forged stamp only sends the forger's own bytes to an
upstream that checks them.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

import orjson

PREFIX = "llmgw.r1."
# A token larger than this is not ours (the largest part, a thinking text, is far smaller).
MAX_TOKEN_CHARS = 4 << 20


@dataclass(slots=True)
class Reasoning:
    """What one reasoning item carries back to the deployment ``origin``."""

    origin: str
    text: str = ""
    signature: str = ""
    redacted: str = ""
    call_extras: dict[str, dict[str, Any]] = field(default_factory=dict)  # by call_id

    def empty(self) -> bool:
        return not (self.text or self.signature or self.redacted or self.call_extras)


def encode(reasoning: Reasoning) -> str:
    """The item's ``encrypted_content``: a prefixed, base64url JSON object."""
    payload: dict[str, Any] = {"o": reasoning.origin}
    if reasoning.text:
        payload["t"] = reasoning.text
    if reasoning.signature:
        payload["s"] = reasoning.signature
    if reasoning.redacted:
        payload["r"] = reasoning.redacted
    if reasoning.call_extras:
        payload["x"] = reasoning.call_extras
    return PREFIX + base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")


def decode(token: object) -> Reasoning | None:
    """The reasoning a token of :func:`encode` carries; None for anything else (another
    gateway's or OpenAI's encrypted content, or garbage), which the caller drops."""
    if not isinstance(token, str) or not token.startswith(PREFIX):
        return None
    if len(token) > MAX_TOKEN_CHARS:
        return None
    body = token[len(PREFIX) :]
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("o"), str):
        return None
    strings = [payload.get(k, "") for k in ("t", "s", "r")]
    extras = payload.get("x", {})
    if not all(isinstance(s, str) for s in strings) or not isinstance(extras, dict):
        return None
    if not all(isinstance(k, str) and isinstance(v, dict) for k, v in extras.items()):
        return None
    text, signature, redacted = strings
    return Reasoning(payload["o"], text, signature, redacted, extras)
