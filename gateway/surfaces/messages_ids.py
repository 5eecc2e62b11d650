"""What the Messages surface writes into signatures and tool ids so that it can read it back.

An Anthropic client keeps nothing but the blocks it was sent, and sends them back as they were.
Two things must survive that trip although Anthropic's blocks have no field for them:

* who made a thinking block. A signature minted by Anthropic is passed as it is (it is checked
  by Anthropic when replayed: bug #10); any other provider's thinking gets the signature
  ``llmgw:<provider>:<its own signature, if any>``, so that it goes back to that provider only,
  and never to Anthropic, which would refuse it (openai-agents-python#1704).
* Gemini's thought signature on a function call (bug #10; Gemini 3 refuses a replayed call
  without it). It rides in the tool_use id, ``gsig<n>_<signature, base64url>_<id>``, the
  stateless way peers chose (litellm#16895): a tool_result's ``tool_use_id`` carries it too,
  and both are stripped on the way in.
"""

from __future__ import annotations

import base64
import binascii
import re

__all__ = ["GATEWAY_TAG", "join_tool_id", "split_signature", "split_tool_id", "tag_signature"]

GATEWAY_TAG = "llmgw:"
_SIGNED_ID = re.compile(r"gsig(\d{1,6})_")


def tag_signature(provider: str, signature: str) -> str:
    """The signature of a thinking block made by ``provider`` (not an anthropic one)."""
    return f"{GATEWAY_TAG}{provider}:{signature}"


def split_signature(signature: str) -> tuple[str | None, str]:
    """(the provider that made it, its own signature); None: Anthropic's, or unsigned."""
    if not signature.startswith(GATEWAY_TAG):
        return None, signature
    provider, _, own = signature[len(GATEWAY_TAG) :].partition(":")
    return provider, own


def join_tool_id(call_id: str, signature: str | None) -> str:
    """The tool_use id for a call with Gemini's thought ``signature`` (None: the id as is)."""
    if not signature:
        return call_id
    encoded = base64.urlsafe_b64encode(signature.encode()).decode().rstrip("=")
    return f"gsig{len(encoded)}_{encoded}_{call_id}"


def split_tool_id(tool_id: str) -> tuple[str, str | None]:
    """(the upstream's call id, Gemini's thought signature or None) of a tool_use id."""
    match = _SIGNED_ID.match(tool_id)
    if match is None:
        return tool_id, None
    start = match.end()
    end = start + int(match.group(1))
    if tool_id[end : end + 1] != "_":
        return tool_id, None
    encoded = tool_id[start:end]
    try:
        signature = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, ValueError):
        return tool_id, None
    return tool_id[end + 1 :], signature
