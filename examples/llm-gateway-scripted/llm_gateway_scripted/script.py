"""The script: a JSON file holding a list of turns, read and checked once, at start.

Each turn may have ``match`` (a regular expression searched for in the text of the
conversation's last message; no ``match`` matches anything) and says what to answer: any of
``reasoning``, ``content``, ``tool_calls`` (``[{"name": ..., "arguments": {...}}]``) and
``error`` (an HTTP status), paced by ``delay_ms`` between chunks.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

_FIELDS = "match, reasoning, content, tool_calls, error, delay_ms"


class ScriptedToolCall(BaseModel):
    """A tool call the model makes: the tool's name and its arguments (a JSON object)."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[StrictStr, Field(min_length=1)]
    arguments: dict[str, Any] = Field(default_factory=dict)


class Turn(BaseModel):
    """One answer of the script, and when it is given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: re.Pattern[str] | None = None
    reasoning: StrictStr | None = None
    content: StrictStr | None = None
    tool_calls: Annotated[list[ScriptedToolCall], Field(min_length=1)] | None = None
    error: Annotated[StrictInt, Field(ge=400, le=599)] | None = None
    delay_ms: Annotated[float, Field(ge=0, le=600_000, allow_inf_nan=False)] = 0.0

    @field_validator("match", mode="before")
    @classmethod
    def _compile(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value  # None, or a type error pydantic words
        try:
            return re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc})") from None

    @model_validator(mode="after")
    def _answers(self) -> Turn:
        if (self.reasoning, self.content, self.tool_calls, self.error) == (None,) * 4:
            raise ValueError("gives none of reasoning, content, tool_calls and error")
        return self

    def matches(self, text: str) -> bool:
        return self.match is None or self.match.search(text) is not None


@dataclass(frozen=True, slots=True)
class Script:
    """A script file and its turns, in order."""

    path: Path
    turns: tuple[Turn, ...]

    def answer(self, text: str) -> Turn | None:
        """The first turn that matches ``text``."""
        return next((turn for turn in self.turns if turn.matches(text)), None)


def load_script(value: Any) -> Script:
    """Read and check the script at ``value`` (a path); ValueError saying what is wrong, and
    for a turn which one (counted from 1) and which of its fields."""
    if isinstance(value, Script):
        return value
    if not isinstance(value, str | Path) or not str(value):
        raise ValueError("must be the path of a JSON file")
    path = Path(value)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except OSError as exc:
        raise ValueError(f"cannot read the file ({type(exc).__name__})") from None
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise ValueError("must hold a JSON list of turns")
    if not data:
        raise ValueError("holds no turns")
    return Script(path, tuple(_turn(n, item) for n, item in enumerate(data, start=1)))


def _turn(n: int, item: Any) -> Turn:
    if not isinstance(item, dict):
        raise ValueError(f"turn {n}: must be a JSON object ({_FIELDS})")
    try:
        return Turn.model_validate(item)
    except ValidationError as exc:
        error = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = f"not a field of a turn ({_FIELDS})"
        raise ValueError(f"turn {n}: {where + ': ' if where else ''}{message}") from None
