"""The Studio's conversations as data: what is stored, shown and sent to the model.

The browser tests show these working on the page; here every rule is checked on its own,
quickly, including the ones a page rarely reaches (a malformed store, an image that is gone).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from gradio.utils import get_upload_folder
from PIL import Image

from webui import conversations as conv
from webui.progress import Progress, ToolCall


def test_a_first_message_starts_a_conversation_named_after_it() -> None:
    store = conv.new_store()
    first = conv.start(store)
    conv.add_user(first, "  Tell me   about " + "x" * 60, [])
    assert store["active"] == first["key"]
    assert first["label"] == ("Tell me about " + "x" * 60)[: conv.LABEL_CHARS] + "…"
    conv.add_user(first, "and more", [])
    assert first["label"].startswith("Tell me about")  # named once, by the first message
    store["active"] = ""
    second = conv.start(store)
    assert [c["key"] for c in store["conversations"]] == [second["key"], first["key"]]


def test_rename_and_delete() -> None:
    store = conv.new_store()
    one = conv.start(store)
    assert conv.rename(store, one["key"], "  a   new\nname ")
    assert one["label"] == "a new name"
    assert not conv.rename(store, one["key"], "   ")  # a blank name is refused
    assert not conv.rename(store, "nope", "x")
    conv.delete(store, one["key"])
    assert store == conv.new_store()


@pytest.mark.parametrize(
    "saved",
    [None, "x", {"conversations": "x"}, {"conversations": [{"key": 1}]}, {"active": "k"}],
)
def test_a_malformed_store_from_the_browser_starts_afresh(saved: object) -> None:
    assert conv.valid_store(saved) == conv.new_store()


def test_a_reply_left_streaming_in_the_browser_is_marked_stopped() -> None:
    store = conv.new_store()
    conversation = conv.start(store)
    conv.add_user(conversation, "hi", [])
    conv.add_reply(conversation, "m")
    restored = conv.valid_store(store)
    [_, reply] = restored["conversations"][0]["messages"]
    assert reply["status"] == "done" and reply["footer"] == conv.STOPPED
    assert restored["active"] == conversation["key"]


def test_a_reply_renders_thinking_then_tools_then_text_with_header_and_footer() -> None:
    conversation = {"key": "c", "label": "x", "messages": []}
    conv.add_user(conversation, "hi", [])
    reply = conv.add_reply(conversation, "m")
    progress = Progress(model="prov/model", reasoning="hmm", text="")
    progress.first_token = progress.started
    conv.take(reply, progress)
    thinking = conv.render(conversation)[1]
    assert thinking["status"] == "pending" and not thinking["loading"]
    assert thinking["content"][0]["options"] == {"title": "Thinking…", "status": "pending"}

    progress.text, progress.reasoning_ended = "the answer", progress.started + 2.5
    progress.tool_calls = {0: ToolCall(id="c0", name="get_weather", arguments='{"city":"Paris"}')}
    progress.ended, progress.finish_reason = time.monotonic(), "stop"
    progress.prompt_tokens, progress.completion_tokens = 3, 4
    conv.take(reply, progress)
    shown = conv.render(conversation)[1]
    think, tool, text = shown["content"]
    assert think["options"] == {"title": "Thought for 2500 ms", "status": "done"}
    assert tool["options"]["title"] == "🛠 get_weather"
    assert '"city": "Paris"' in tool["content"]
    assert text == {"type": "text", "content": "the answer"}
    assert shown["header"] == "prov/model" and shown["status"] == "done"
    assert shown["footer"].endswith("3+4 tokens · finished")
    assert "TTFT" in shown["footer"]


def test_images_are_sent_as_image_parts_and_shown_while_they_exist() -> None:
    folder = Path(get_upload_folder())
    folder.mkdir(parents=True, exist_ok=True)
    picture = folder / f"studio-test-{time.monotonic_ns()}.png"
    Image.new("RGB", (2, 2)).save(picture, format="PNG")
    try:
        conversation = {"key": "c", "label": "x", "messages": []}
        conv.add_user(conversation, "what is it", [str(picture)])
        [sent] = conv.to_openai(conversation)
        assert sent["role"] == "user" and isinstance(sent["content"], list)
        kinds = [part["type"] for part in sent["content"]]
        assert kinds == ["text", "image_url"]
        assert conv.render(conversation)[0]["content"][0] == {
            "type": "file",
            "content": [str(picture)],
        }
    finally:
        picture.unlink()
    # gone (a server restart cleans the folder): shown as a note, and the text alone is sent
    assert conv.to_openai(conversation) == [{"role": "user", "content": "what is it"}]
    assert "no longer on the server" in conv.render(conversation)[0]["content"][0]["content"]


def test_what_the_model_is_sent() -> None:
    conversation = {"key": "c", "label": "x", "messages": []}
    conv.add_user(conversation, "one", [])
    answered = conv.add_reply(conversation, "m")
    answered.update(text="two", reasoning="secret thoughts", status="done")
    conv.add_user(conversation, "three", [])
    failed = conv.add_reply(conversation, "m")  # failed before its first word
    failed.update(status="done", footer="error")
    conv.add_user(conversation, "four", [])
    assert conv.to_openai(conversation, system_prompt="be brief") == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
        {"role": "user", "content": "four"},
    ]


def test_edited_text_from_the_component() -> None:
    edited = [{"type": "file", "content": ["/x.png"]}, {"type": "text", "content": "new"}]
    assert conv.edited_text(edited) == "new"
    assert conv.edited_text("plain") == "plain"
    assert conv.edited_text(None) == ""
