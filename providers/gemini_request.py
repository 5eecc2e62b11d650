"""OpenAI chat and embedding requests -> Gemini ``generateContent`` / ``batchEmbedContents`` bodies.

Pure functions, no I/O; the parameters (tools, generation, thinking) are mapped in
:mod:`providers.gemini_params`. What a Gemini request cannot express is refused with
:class:`~providers.gemini_errors.UnsupportedRequest` (a 400 naming the field) rather than
dropped in silence: an image at an http(s) URL (the gateway does not fetch URLs for a client:
SSRF), a tool that is not a function, a tool result that answers no earlier tool call. Fields
with no Gemini counterpart that change nothing a client relies on (``user``, ``store``,
``metadata``, ``logit_bias``, ``parallel_tool_calls``, ``logprobs``...) are ignored.

System and developer messages, wherever they stand, form the one ``systemInstruction``.
Neighbouring turns of one role are merged: the results of parallel calls must share a turn.

Thought signatures: Gemini puts an opaque ``thoughtSignature`` on (the first) ``functionCall``
part of a reply, and Gemini 3 refuses a conversation whose replayed calls lack it. The gateway
hands it to chat clients as ``tool_calls[i].extra_content.google.thought_signature`` (the field
Google's own OpenAI-compatible endpoint uses), and :func:`chat_request` puts it back on the
``functionCall`` part when a client replays that assistant message.
"""

from __future__ import annotations

import mimetypes
import re
from typing import Any

import orjson

from providers.errors import UnsupportedRequest
from providers.gemini_params import generation_config, tools_config

# Ids the gateway makes up for calls the upstream gave none (gemini_response.new_call_id):
# never sent upstream, since Gemini did not issue them.
GENERATED_ID = re.compile(r"call_[0-9a-f]{24}")
# URIs Gemini reads itself: its Files API, Cloud Storage and YouTube. Anything else would need
# the gateway to fetch it for the client.
_FILE_URIS = re.compile(
    r"(gs://|https://generativelanguage\.googleapis\.com/|"
    r"https://(www\.)?youtube\.com/watch\?|https://youtu\.be/)"
)
_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)((?:;[\w.+-]+=[^;,]*)*);base64,(.*)", re.S)
EMBED_BATCH = 100  # batchEmbedContents takes at most 100 requests


def chat_request(body: dict[str, Any], *, model: str, include_thoughts: bool) -> dict[str, Any]:
    """A ``GenerateContentRequest`` body for an OpenAI chat ``body`` (without ``model``)."""
    system, contents = _contents(body.get("messages"))
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if tools:
        declarations, config = tools_config(tools, choice)
        if declarations:
            out["tools"] = [{"functionDeclarations": declarations}]
        if config:
            out["toolConfig"] = {"functionCallingConfig": config}
    generation = generation_config(body, model=model, include_thoughts=include_thoughts)
    if generation:
        out["generationConfig"] = generation
    return out


def embed_requests(model: str, texts: list[str], body: dict[str, Any]) -> list[dict[str, Any]]:
    """``batchEmbedContents`` bodies for ``texts``, at most :data:`EMBED_BATCH` texts each."""
    name = model if model.startswith(("models/", "tunedModels/")) else "models/" + model
    extra: dict[str, Any] = {}
    dimensions = body.get("dimensions")
    if dimensions is not None:
        if type(dimensions) is not int or dimensions < 1:
            raise UnsupportedRequest("dimensions must be a positive integer")
        extra["outputDimensionality"] = dimensions
    requests = [{"model": name, "content": {"parts": [{"text": t}]}, **extra} for t in texts]
    return [
        {"requests": requests[i : i + EMBED_BATCH]} for i in range(0, len(requests), EMBED_BATCH)
    ]


def _contents(messages: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """System parts, and the conversation as Gemini contents (same-role neighbours merged:
    the responses to parallel calls must share one turn)."""
    if type(messages) is not list:
        raise UnsupportedRequest("messages must be an array")
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id -> function name, of the calls seen so far
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if type(message) is not dict:
            raise UnsupportedRequest(f"{where} must be an object")
        role = message.get("role")
        if role in ("system", "developer"):
            # Gemini has one system instruction: every system message joins it, in order.
            system.extend(_parts(message.get("content"), where))
            continue
        if role == "user":
            role, parts = "user", _parts(message.get("content"), where)
        elif role == "assistant":
            role, parts = "model", _model_parts(message, where, names)
        elif role in ("tool", "function"):
            role, parts = "user", [_function_response(message, where, names)]
        else:
            raise UnsupportedRequest(f"{where}.role {role!r} is not supported by Gemini")
        if not parts:
            continue  # Gemini refuses a turn without parts; an empty message says nothing
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return system, contents


def _parts(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if type(content) is str:
        return [{"text": content}] if content else []
    if type(content) is not list:
        raise UnsupportedRequest(f"{where}.content must be a string or an array of parts")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        pwhere = f"{where}.content[{j}]"
        kind = part.get("type") if type(part) is dict else None
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if type(text) is not str:
                raise UnsupportedRequest(f"{pwhere}.{kind} must be a string")
            if text:
                parts.append({"text": text})
        elif kind == "image_url":
            parts.append(_image(part.get("image_url"), pwhere))
        elif kind == "input_audio":
            audio = part.get("input_audio")
            data = audio.get("data") if type(audio) is dict else None
            fmt = audio.get("format") if type(audio) is dict else None
            if type(data) is not str or type(fmt) is not str:
                raise UnsupportedRequest(f"{pwhere}.input_audio needs data and format")
            parts.append({"inlineData": {"mimeType": f"audio/{fmt}", "data": data}})
        elif kind == "file":
            file = part.get("file")
            data_url = file.get("file_data") if type(file) is dict else None
            if type(data_url) is not str:
                raise UnsupportedRequest(
                    f"{pwhere}.file: Gemini needs the file inline, as file_data (a data: URL)"
                )
            parts.append(_inline(data_url, f"{pwhere}.file.file_data"))
        else:
            raise UnsupportedRequest(f"{pwhere}: content of type {kind!r} is not supported")
    return parts


def _image(value: Any, where: str) -> dict[str, Any]:
    url = value.get("url") if type(value) is dict else value
    if type(url) is not str:
        raise UnsupportedRequest(f"{where}.image_url.url must be a string")
    if url.startswith("data:"):
        return _inline(url, f"{where}.image_url.url")
    if _FILE_URIS.match(url):
        file: dict[str, Any] = {"fileUri": url}
        mime, _ = mimetypes.guess_type(url.split("?", 1)[0])
        if mime:
            file["mimeType"] = mime
        return {"fileData": file}
    raise UnsupportedRequest(
        f"{where}.image_url.url: Gemini cannot read images at arbitrary URLs and the gateway "
        "does not fetch them; send the image as a data: URL"
    )


def _inline(data_url: str, where: str) -> dict[str, Any]:
    match = _DATA_URL.fullmatch(data_url)
    if match is None:
        raise UnsupportedRequest(f"{where} must be a base64 data: URL")
    return {"inlineData": {"mimeType": match.group(1), "data": match.group(3)}}


def _model_parts(message: dict[str, Any], where: str, names: dict[str, str]) -> list[Any]:
    parts = _parts(message.get("content"), where)
    calls = message.get("tool_calls")
    if calls is None and type(message.get("function_call")) is dict:
        calls = [{"function": message["function_call"]}]  # the legacy single call
    if calls is None:
        return parts
    if type(calls) is not list:
        raise UnsupportedRequest(f"{where}.tool_calls must be an array")
    for k, call in enumerate(calls):
        cwhere = f"{where}.tool_calls[{k}]"
        function = call.get("function") if type(call) is dict else None
        name = function.get("name") if type(function) is dict else None
        if type(name) is not str or not name:
            raise UnsupportedRequest(f"{cwhere}.function.name must be a non-empty string")
        assert type(call) is dict and type(function) is dict
        part: dict[str, Any] = {"functionCall": {"name": name, "args": _args(function, cwhere)}}
        call_id = call.get("id")
        if type(call_id) is str and call_id:
            names[call_id] = name
            if not GENERATED_ID.fullmatch(call_id):
                part["functionCall"]["id"] = call_id
        signature = _signature(call, cwhere)
        if signature is not None:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _args(function: dict[str, Any], where: str) -> dict[str, Any]:
    arguments = function.get("arguments")
    if arguments is None or arguments == "":
        return {}
    if type(arguments) is not str:
        raise UnsupportedRequest(f"{where}.function.arguments must be a string of JSON")
    try:
        args = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        raise UnsupportedRequest(f"{where}.function.arguments is not valid JSON") from None
    if type(args) is not dict:
        raise UnsupportedRequest(f"{where}.function.arguments must be a JSON object")
    return args


def _signature(call: dict[str, Any], where: str) -> str | None:
    """``extra_content.google.thought_signature`` of a replayed tool call, if any."""
    extra = call.get("extra_content")
    google = extra.get("google") if type(extra) is dict else None
    signature = google.get("thought_signature") if type(google) is dict else None
    if signature is not None and type(signature) is not str:
        raise UnsupportedRequest(f"{where}.extra_content.google.thought_signature must be a string")
    return signature


def _function_response(
    message: dict[str, Any], where: str, names: dict[str, str]
) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if message.get("role") == "function":  # legacy: named, no id
        name = message.get("name")
        if type(name) is not str or not name:
            raise UnsupportedRequest(f"{where}.name must name the function")
    elif type(call_id) is not str or call_id not in names:
        raise UnsupportedRequest(
            f"{where}.tool_call_id must be the id of a tool call in an earlier assistant message"
        )
    else:
        name = names[call_id]
    text = "".join(p["text"] for p in _parts(message.get("content"), where) if "text" in p)
    # Gemini wants an object: a JSON object result is one, anything else is wrapped.
    try:
        result = orjson.loads(text)
    except orjson.JSONDecodeError:
        result = None
    if message.get("is_error") is True:
        # A failed tool (the Messages surface's mark of a tool_result's is_error): Gemini
        # reads a response's "error" key as the function's error.
        outcome: dict[str, Any] = {"error": result if type(result) is dict else text}
    else:
        outcome = result if type(result) is dict else {"output": text}
    response: dict[str, Any] = {"name": name, "response": outcome}
    if type(call_id) is str and call_id and not GENERATED_ID.fullmatch(call_id):
        response["id"] = call_id
    return {"functionResponse": response}
