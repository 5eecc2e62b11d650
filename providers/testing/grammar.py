"""The grammar of the normalized stream, checked over a whole list of chunks.

:func:`check_stream` raises ``AssertionError`` naming the chunk and the rule a stream breaks,
and otherwise returns what the stream said, joined per choice (:class:`StreamSummary`), so a
test can go on to assert on the text, the reasoning and the tool calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields

from providers.base import Chunk, Delta, ToolCallDelta, Usage

FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
USAGE_SOURCES = frozenset({"provider", "estimated", "partial"})


@dataclass(slots=True)
class ToolCall:
    """One tool call, its argument pieces joined."""

    id: str
    name: str
    arguments: str = ""


@dataclass(slots=True)
class ChoiceSummary:
    """What one choice said, joined over the stream."""

    text: str = ""
    reasoning: str = ""
    refusal: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: str | None = None


@dataclass(slots=True)
class StreamSummary:
    """The result of a stream that passed :func:`check_stream`."""

    choices: list[ChoiceSummary]
    usage: Usage | None

    @property
    def text(self) -> str:
        """Choice 0's text."""
        return self.choices[0].text

    @property
    def reasoning(self) -> str:
        return self.choices[0].reasoning

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self.choices[0].tool_calls

    @property
    def finish_reason(self) -> str | None:
        return self.choices[0].finish_reason


def check_stream(
    chunks: Sequence[object], *, require_usage: bool = False, reasoning_first: bool = True
) -> StreamSummary:
    """Check that ``chunks`` form one well-made normalized stream; return what it said.

    The rules: every item is a :class:`~providers.base.Chunk` of :class:`Delta` objects; the
    choices are 0, 1, ... with none missing; per choice, tool-call indices start at 0 and each
    new one is the next, a call's first delta carries its ``id`` and ``name`` (later ones may
    repeat them, not change them), nothing follows the choice's finish, which comes exactly once
    and is one of OpenAI's words, ``tool_calls`` exactly when tool calls were sent (or the
    answer was cut: ``length``, ``content_filter``); with ``reasoning_first`` no reasoning
    follows text or a tool call (Anthropic's Messages grammar needs it first); usage counts are
    non-negative integers, reasoning within output and cached within input. With
    ``require_usage`` the stream must report usage.
    """
    states: dict[int, ChoiceSummary] = {}
    answered: set[int] = set()  # choices that sent text or a tool call
    usage: Usage | None = None
    for n, chunk in enumerate(chunks):
        where = f"chunk {n}"
        _expect(isinstance(chunk, Chunk), f"{where} is a {type(chunk).__name__}, not a Chunk")
        assert isinstance(chunk, Chunk)
        _expect(isinstance(chunk.deltas, list), f"{where}: deltas is not a list")
        for delta in chunk.deltas:
            _expect(isinstance(delta, Delta), f"{where}: a {type(delta).__name__} in deltas")
            choice = delta.choice
            _expect(
                type(choice) is int and choice >= 0,
                f"{where}: choice {choice!r} is not a non-negative int",
            )
            state = states.setdefault(choice, ChoiceSummary())
            at = f"{where}, choice {choice}"
            _expect(
                state.finish_reason is None,
                f"{at}: a delta after the choice finished ({state.finish_reason!r})",
            )
            _check_texts(delta, at)
            if delta.reasoning or delta.reasoning_signature or delta.redacted_reasoning:
                _expect(
                    not reasoning_first or choice not in answered,
                    f"{at}: reasoning after text or a tool call",
                )
                state.reasoning += delta.reasoning or ""
            if delta.text:
                answered.add(choice)
                state.text += delta.text
            state.refusal += delta.refusal or ""
            for call in delta.tool_calls or ():
                _tool_call(state, call, at)
                answered.add(choice)
            if delta.finish_reason is not None:
                _finish(state, delta, at)
        if chunk.usage is not None:
            _check_usage(chunk.usage, where)
            usage = chunk.usage
    _expect(bool(states), "the stream has no delta at all")
    _expect(
        sorted(states) == list(range(len(states))),
        f"choices {sorted(states)} are not 0, 1, ... without gaps",
    )
    for choice, state in sorted(states.items()):
        _expect(state.finish_reason is not None, f"choice {choice} never finished")
    _expect(not require_usage or usage is not None, "the stream reported no usage")
    return StreamSummary([states[c] for c in sorted(states)], usage)


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _check_texts(delta: Delta, at: str) -> None:
    for name in ("text", "reasoning", "reasoning_signature", "redacted_reasoning", "refusal"):
        value = getattr(delta, name)
        _expect(value is None or isinstance(value, str), f"{at}: {name} is not a str")
    for name in ("finish_reason", "stop_reason"):
        value = getattr(delta, name)
        _expect(value is None or isinstance(value, str), f"{at}: {name} is not a str")


def _tool_call(state: ChoiceSummary, call: object, at: str) -> None:
    _expect(isinstance(call, ToolCallDelta), f"{at}: a {type(call).__name__} in tool_calls")
    assert isinstance(call, ToolCallDelta)
    index = call.index
    calls = state.tool_calls
    _expect(type(index) is int, f"{at}: tool call index {index!r} is not an int")
    _expect(
        0 <= index <= len(calls),
        f"{at}: tool call index {index} does not follow {len(calls) - 1} "
        "(indices start at 0 and each new call takes the next one)",
    )
    _expect(isinstance(call.arguments, str), f"{at}: tool call {index} arguments is not a str")
    if index == len(calls):
        _expect(
            bool(call.id) and isinstance(call.id, str),
            f"{at}: tool call {index} starts without an id",
        )
        _expect(
            bool(call.name) and isinstance(call.name, str),
            f"{at}: tool call {index} starts without a name",
        )
        assert call.id is not None and call.name is not None
        calls.append(ToolCall(call.id, call.name))
    known = calls[index]
    _expect(call.id in (None, known.id), f"{at}: tool call {index} changes its id to {call.id!r}")
    _expect(
        call.name in (None, known.name),
        f"{at}: tool call {index} changes its name to {call.name!r}",
    )
    known.arguments += call.arguments


def _finish(state: ChoiceSummary, delta: Delta, at: str) -> None:
    reason = delta.finish_reason
    _expect(reason in FINISH_REASONS, f"{at}: finish_reason {reason!r} is not OpenAI's word")
    if state.tool_calls:
        _expect(
            reason in ("tool_calls", "length", "content_filter"),
            f"{at}: finish_reason {reason!r} after tool calls (expected 'tool_calls')",
        )
    else:
        _expect(reason != "tool_calls", f"{at}: finish_reason 'tool_calls' without a tool call")
    state.finish_reason = reason
    state.stop_reason = delta.stop_reason


def _check_usage(usage: object, where: str) -> None:
    _expect(isinstance(usage, Usage), f"{where}: usage is a {type(usage).__name__}, not Usage")
    assert isinstance(usage, Usage)
    for f in fields(Usage):
        value = getattr(usage, f.name)
        if f.name == "source":
            _expect(value in USAGE_SOURCES, f"{where}: usage source {value!r} is unknown")
        else:
            _expect(
                type(value) is int and value >= 0,
                f"{where}: usage {f.name} {value!r} is not a non-negative int",
            )
    _expect(
        usage.reasoning_tokens <= usage.output_tokens,
        f"{where}: usage reasoning_tokens {usage.reasoning_tokens} > "
        f"output_tokens {usage.output_tokens}",
    )
    _expect(
        usage.cached_tokens <= usage.input_tokens,
        f"{where}: usage cached_tokens {usage.cached_tokens} > input_tokens {usage.input_tokens}",
    )
