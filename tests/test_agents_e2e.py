"""Claude Code and Codex CLI, the real ones, do a task through a real gateway (issue 10).

A gateway process serves two providers: the ``scripted`` plugin (examples/llm-gateway-scripted)
and an ``openai`` provider in front of a stand-in upstream on 127.0.0.1
(``tests/support/agent_recorder.py``). ``claude -p`` (over ``POST /v1/messages``) and ``codex
exec`` (over ``POST /v1/responses``) each do one task with a shell tool round trip — the model
asks for a command, the CLI runs it and sends the output back, the model answers with it — and
meet an upstream failure mid-stream, which they must report as an error, never as an answer.

The CLIs come from ``bash tests/setup-agents.sh`` (npm, into ``.agents/``); without them those
tests skip saying so. The replay tests at the end need no CLI: they send the requests the CLIs
were recorded sending (``tests/fixtures/agents/``) through the same gateway. Every CLI runs with
a temporary HOME, CODEX_HOME and TMPDIR, removed afterwards, and a timeout.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from providers.testing import (
    check_messages_stream,
    check_responses_stream,
    parse_messages_sse,
    parse_responses_sse,
)
from tests.support.agent_clis import (
    claude_env,
    codex_env,
    missing_clis,
    run_claude,
    run_codex,
)
from tests.support.agent_recorder import AgentRecorder
from tests.support.servers import GATEWAY, free_port, serve_in_thread, spawn

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "agents"
SCRIPTED_SOURCE = ROOT / "examples" / "llm-gateway-scripted"
KEY = "sk-gateway-e2e-0123456789"

# What the scripted model does: one tool call per CLI (each CLI names and shapes its shell tool
# its own way), an answer to the tool's output, and a failure after half an answer.
SCRIPTED_MARKER = "scripted-marker-5c1e"
SCRIPTED_COMMAND = f"echo {SCRIPTED_MARKER} > marker.txt && cat marker.txt"
SCRIPTED_ANSWER = f"The scripted model read {SCRIPTED_MARKER} from the tool."
HALF_ANSWER = "A half answer that must never pass for a whole one"  # the upstream's too
TITLE = '{"title": "Marker file"}'
PATIENT_ANSWER = "Slowly but surely."  # three pieces, 0.5 s apart: keep-alives between them
SCRIPT = [
    {"match": "^<session>", "content": TITLE},  # Claude Code's background call naming a session
    {"match": "E2E-PATIENT", "content": PATIENT_ANSWER, "delay_ms": 500},
    {"match": "E2E-FAIL", "content": HALF_ANSWER, "error": 503},
    {"match": SCRIPTED_MARKER, "content": SCRIPTED_ANSWER},
    {
        "match": "E2E-CLAUDE",
        "tool_calls": [
            {
                "name": "Bash",
                "arguments": {"command": SCRIPTED_COMMAND, "description": "Write the marker"},
            }
        ],
    },
    {
        "match": "E2E-CODEX",
        "tool_calls": [{"name": "exec_command", "arguments": {"cmd": SCRIPTED_COMMAND}}],
    },
]
# Claude Code's and Codex's default model names, mapped to the scripted model, as a user would.
# Claude Code's default model (when ANTHROPIC_MODEL is not set) goes to the upstream.
ALIASES = {
    "claude-sonnet-4-6": "bot/agent",
    "claude-haiku-4-5": "bot/agent",
    "gpt-5-codex": "bot/agent",
    "claude-opus-5-5": "up/coder",
}
CLIENT_MODEL = {"claude": "claude-sonnet-4-6", "codex": "gpt-5-codex"}

# What the stand-in upstream does: a call of whichever shell tool the request offers, then an
# answer quoting the tool's output; for model "broken", half a stream and then nothing.
UPSTREAM_MARKER = "upstream-marker-9d27"
UPSTREAM_COMMAND = f"echo {UPSTREAM_MARKER} > marker.txt && cat marker.txt"
UPSTREAM_TEXT = "The upstream saw the tool run."
SHELL_TOOL = {"claude": "Bash", "codex": "exec_command"}


@dataclass(frozen=True)
class Stack:
    gateway: str  # base URL, no /v1
    upstream: AgentRecorder


def _scripted_site(where: Path) -> Path:
    """The scripted plugin, importable from its source, with the entry point an install gives
    (``tests/test_plugins.py`` installs it with pip; here only the agents are under test)."""
    info = where / "llm_gateway_scripted-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: llm-gateway-scripted\nVersion: 0.1.0\n"
    )
    (info / "entry_points.txt").write_text(
        "[llm_gateway.providers]\nscripted = llm_gateway_scripted:SPEC\n"
    )
    return where


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    where = tmp_path_factory.mktemp("agents-gateway")
    script = where / "script.json"
    script.write_text(json.dumps(SCRIPT))
    recorder = AgentRecorder(command=UPSTREAM_COMMAND, text=UPSTREAM_TEXT)
    with serve_in_thread(recorder) as upstream:
        env_file = where / "gateway.env"
        env_file.write_text(
            "GATEWAY_PROVIDERS__UP__TYPE=openai\n"
            f"GATEWAY_PROVIDERS__UP__BASE_URL={upstream}/v1\n"
            'GATEWAY_PROVIDERS__UP__MODELS=["coder", "broken"]\n'
            "GATEWAY_PROVIDERS__BOT__TYPE=scripted\n"
            f"GATEWAY_PROVIDERS__BOT__SCRIPT={script}\n"
            'GATEWAY_PROVIDERS__BOT__MODELS=["agent"]\n'
            f'GATEWAY_API_KEYS=["{KEY}"]\n'
            f"GATEWAY_ALIASES={json.dumps(ALIASES)}\n"
            # One attempt per request, and no breaker carrying one test's failures into the next.
            "GATEWAY_MAX_RETRIES=0\n"
            "GATEWAY_BREAKER_THRESHOLD=0\n"
            # Keep-alive frames in any pause over 0.2 s: the CLIs must read past them.
            "GATEWAY_STREAM_KEEPALIVE=0.2\n"
        )
        site = _scripted_site(where / "site")
        port = free_port()
        with spawn(
            [GATEWAY, "--no-ui", "--env-file", str(env_file), "--port", str(port)],
            env={"PYTHONPATH": f"{site}:{SCRIPTED_SOURCE}"},
            ready_url=f"http://127.0.0.1:{port}/health",
            cwd=where,
        ) as server:
            yield Stack(server.base_url, recorder)
        assert "Traceback" not in server.output()


@dataclass(frozen=True)
class Run:
    result: subprocess.CompletedProcess[str]
    work: Path
    marker: str | None  # marker.txt in the work directory, if the tool wrote it

    @property
    def printed(self) -> str:
        return self.result.stdout + self.result.stderr


# Where the CLIs would leave state if they escaped their temporary HOME and TMPDIR.
_STATE = [(Path("/tmp"), "claude-*"), (Path("/tmp"), "cc-socks"), (Path("/tmp"), "codex-*")]
_STATE += [(Path.home(), ".claude*"), (Path.home(), ".codex")]


def _state() -> set[Path]:
    return {path for where, pattern in _STATE for path in where.glob(pattern)}


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A home and work directory for one CLI run, removed afterwards (pytest would keep a
    tmp_path); and the run left nothing in the real HOME or /tmp."""
    before = _state()
    with tempfile.TemporaryDirectory(prefix="agent-e2e-") as name:
        yield Path(name)
    assert _state() <= before, "a CLI left state outside its temporary directories"


def run_agent(
    client: str,
    prompt: str,
    model: str | None,
    stack: Stack,
    scratch: Path,
    **claude_options: Any,
) -> Run:
    home, work = scratch / "home", scratch / "work"
    work.mkdir(parents=True)
    if client == "claude":
        env = claude_env(
            home,
            stack.gateway,
            token=KEY,
            model=model,
            small_model="claude-haiku-4-5",
            **claude_options,
        )
        result = run_claude(prompt, cwd=work, env=env)
    else:
        assert model is not None
        env = codex_env(home, stack.gateway + "/v1", key=KEY, model=model)
        result = run_codex(prompt, cwd=work, env=env)
    marker = work / "marker.txt"
    return Run(result, work, marker.read_text().strip() if marker.exists() else None)


def _chat_requests(recorder: AgentRecorder, start: int, model: str) -> list[dict[str, Any]]:
    return [
        e["body"]
        for e in recorder.exchanges[start:]
        if e["path"] == "/v1/chat/completions" and e["body"].get("model") == model
    ]


clis = pytest.mark.skipif(missing_clis() is not None, reason=str(missing_clis()))
both = pytest.mark.parametrize("client", ["claude", "codex"])


# --- the CLIs, end to end --------------------------------------------------------------------


@clis
@both
def test_a_tool_round_trip_through_the_scripted_provider(
    client: str, stack: Stack, scratch: Path
) -> None:
    token = "E2E-CLAUDE" if client == "claude" else "E2E-CODEX"
    run = run_agent(
        client, f"{token}: write the marker file.", CLIENT_MODEL[client], stack, scratch
    )
    assert run.result.returncode == 0, run.printed
    assert run.marker == SCRIPTED_MARKER, run.printed  # the CLI ran the command the model asked
    # The scripted model answers this only when the command's output reached it.
    assert SCRIPTED_ANSWER in run.result.stdout, run.printed


@clis
@pytest.mark.parametrize(
    ("client", "model"),
    [("claude", "up/coder"), ("claude", None), ("codex", "up/coder")],
    ids=["claude", "claude-default-model-aliased", "codex"],
)
def test_a_tool_round_trip_through_an_openai_compatible_upstream(
    client: str, model: str | None, stack: Stack, scratch: Path
) -> None:
    """Claude Code with no ANTHROPIC_MODEL asks for its default model, which an alias maps."""
    start = len(stack.upstream.exchanges)
    run = run_agent(client, "Write the marker file with the shell.", model, stack, scratch)
    assert run.result.returncode == 0, run.printed
    assert run.marker == UPSTREAM_MARKER, run.printed
    asked, answered = _chat_requests(stack.upstream, start, "coder")
    assert SHELL_TOOL[client] in [tool["function"]["name"] for tool in asked["tools"]]
    # The second request carries the call and the command's output, as chat messages.
    call, result = answered["messages"][-2:]
    assert call["role"] == "assistant"
    assert call["tool_calls"][0]["function"]["name"] == SHELL_TOOL[client]
    assert result["role"] == "tool" and result["tool_call_id"] == call["tool_calls"][0]["id"]
    assert UPSTREAM_MARKER in json.dumps(result["content"])
    assert f"{UPSTREAM_TEXT} The command printed:" in run.result.stdout, run.printed
    assert UPSTREAM_MARKER in run.result.stdout.split("The command printed:", 1)[1]


@clis
def test_claude_code_authenticates_with_x_api_key_too(stack: Stack, scratch: Path) -> None:
    run = run_agent(
        "claude", "E2E-CLAUDE: the marker.", "claude-sonnet-4-6", stack, scratch, header="x-api-key"
    )
    assert run.result.returncode == 0, run.printed
    assert run.marker == SCRIPTED_MARKER and SCRIPTED_ANSWER in run.result.stdout


def _assert_failed_visibly(run: Run) -> None:
    assert run.result.returncode != 0, run.printed
    assert "error" in run.printed.lower(), run.printed
    # What was streamed before the failure is never printed as the answer (Codex shows it as
    # progress on stderr; its answer, on stdout, stays empty).
    assert "a half answer" not in run.result.stdout.lower(), run.printed


@clis
@both
def test_keepalives_in_a_slow_answer_do_not_disturb_the_clis(
    client: str, stack: Stack, scratch: Path
) -> None:
    """Anthropic's ping events (Claude Code) and SSE comments (Codex) between the pieces."""
    run = run_agent(client, "E2E-PATIENT: take your time.", CLIENT_MODEL[client], stack, scratch)
    assert run.result.returncode == 0, run.printed
    assert PATIENT_ANSWER in run.result.stdout, run.printed


def test_the_slow_answer_carries_keepalives_on_both_surfaces(stack: Stack) -> None:
    """What the test above feeds the CLIs: the frames are there."""
    headers = {"authorization": f"Bearer {KEY}"}
    messages = httpx.post(
        f"{stack.gateway}/v1/messages",
        json={
            "model": CLIENT_MODEL["claude"],
            "max_tokens": 100,
            "stream": True,
            "messages": [{"role": "user", "content": "E2E-PATIENT"}],
        },
        headers=headers,
        timeout=30,
    )
    responses = httpx.post(
        f"{stack.gateway}/v1/responses",
        json={"model": CLIENT_MODEL["codex"], "stream": True, "input": "E2E-PATIENT"},
        headers=headers,
        timeout=30,
    )
    assert messages.text.count("event: ping\n") >= 3, messages.text
    assert responses.text.count(": keep-alive\n") >= 3, responses.text
    said = check_messages_stream(parse_messages_sse(messages.text))  # ping is in its grammar
    assert said.text == PATIENT_ANSWER and said.stop_reason == "end_turn"
    answered = check_responses_stream(parse_responses_sse(responses.text))
    assert answered.text == PATIENT_ANSWER and answered.status == "completed"


@clis
@both
def test_an_upstream_failing_mid_stream_is_an_error(
    client: str, stack: Stack, scratch: Path
) -> None:
    start = len(stack.upstream.exchanges)
    run = run_agent(client, "Write the marker file with the shell.", "up/broken", stack, scratch)
    _assert_failed_visibly(run)
    assert _chat_requests(stack.upstream, start, "broken"), "the upstream was never asked"
    assert run.marker is None


@clis
@both
def test_the_scripted_model_failing_mid_stream_is_an_error(
    client: str, stack: Stack, scratch: Path
) -> None:
    run = run_agent(
        client, "E2E-FAIL: write the marker file.", CLIENT_MODEL[client], stack, scratch
    )
    _assert_failed_visibly(run)
    assert "failed (HTTP 503)" in run.printed, run.printed  # the gateway's words for it


@clis
def test_claude_code_falling_back_to_a_whole_request_still_fails(
    stack: Stack, scratch: Path
) -> None:
    """By default Claude Code retries a failed stream as one non-streamed request; the upstream
    fails that one too (half a JSON body), and the gateway says so with a 502."""
    start = len(stack.upstream.exchanges)
    run = run_agent(
        "claude",
        "Write the marker file with the shell.",
        "up/broken",
        stack,
        scratch,
        streaming_fallback=True,
    )
    requests = _chat_requests(stack.upstream, start, "broken")
    _assert_failed_visibly(run)
    assert [bool(r.get("stream")) for r in requests] == [True, False], run.printed
    assert "502" in run.printed, run.printed


@clis
@both
def test_a_wrong_key_is_refused_and_said_so(client: str, stack: Stack, scratch: Path) -> None:
    home, work = scratch / "home", scratch / "work"
    work.mkdir(parents=True)
    wrong = "sk-not-a-gateway-key-42"
    if client == "claude":
        env = claude_env(
            home, stack.gateway, token=wrong, model="claude-sonnet-4-6", small_model="x"
        )
        result = run_claude("E2E-CLAUDE: the marker.", cwd=work, env=env)
    else:
        env = codex_env(home, stack.gateway + "/v1", key=wrong, model="gpt-5-codex")
        result = run_codex("E2E-CODEX: the marker.", cwd=work, env=env)
    printed = result.stdout + result.stderr
    assert result.returncode != 0, printed
    assert "401" in printed, printed
    assert not (work / "marker.txt").exists()


# --- what the CLIs send, replayed through the gateway (no CLI needed) --------------------------


def _fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def _replay(stack: Stack, name: str, model: str | None = "up/coder") -> httpx.Response:
    """POST the recorded request, headers included (not the host or length), for ``model``
    (None: the model it names)."""
    fixture = _fixture(name)
    headers = {
        k: v
        for k, v in fixture["headers"].items()
        if k not in {"host", "content-length", "accept-encoding", "connection"}
    }
    headers["authorization"] = f"Bearer {KEY}"
    body = {**fixture["body"], "model": model or fixture["body"]["model"]}
    url = f"{stack.gateway}{fixture['path']}" + (f"?{fixture['query']}" if fixture["query"] else "")
    with httpx.Client(timeout=30, trust_env=False) as client:
        return client.post(url, headers=headers, json=body)


@pytest.mark.parametrize(
    ("name", "stop", "block"),
    [
        ("claude_code_messages_tool_call", "tool_use", "tool_use"),
        ("claude_code_messages_tool_result", "end_turn", "text"),
        ("claude_code_default_model_tool_call", "tool_use", "tool_use"),
        ("claude_code_default_model_tool_result", "end_turn", "text"),
    ],
)
def test_claude_code_requests_as_recorded_stream_through_the_gateway(
    name: str, stop: str, block: str, stack: Stack
) -> None:
    start = len(stack.upstream.exchanges)
    response = _replay(stack, name)
    assert response.status_code == 200, response.text
    events = parse_messages_sse(response.text)
    kinds = [event["type"] for event in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop", kinds
    assert "error" not in kinds
    starts = [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"]
    assert block in starts
    deltas = [e for e in events if e["type"] == "message_delta"]
    assert deltas and deltas[-1]["delta"]["stop_reason"] == stop
    (sent,) = _chat_requests(stack.upstream, start, "coder")
    if name.endswith("tool_result"):  # the tool's output reached the upstream
        assert sent["messages"][-1]["role"] == "tool"
        assert "marker-from-tool" in json.dumps(sent["messages"][-1]["content"])


def test_claude_code_small_model_call_as_recorded_reaches_its_alias(stack: Stack) -> None:
    """The background call names a session with ANTHROPIC_DEFAULT_HAIKU_MODEL's model,
    ``claude-haiku-4-5`` here, which ``GATEWAY_ALIASES`` sends to the scripted model."""
    response = _replay(stack, "claude_code_small_model_title", model=None)
    assert response.status_code == 200, response.text
    events = parse_messages_sse(response.text)
    assert events[0]["message"]["model"] == "claude-haiku-4-5"
    text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    assert json.loads(text) == json.loads(TITLE)
    assert events[-1]["type"] == "message_stop"


@pytest.mark.parametrize("name", ["claude_code_count_tokens", "claude_code_count_tokens_tools"])
def test_claude_code_token_counts_as_recorded_are_answered(name: str, stack: Stack) -> None:
    response = _replay(stack, name)
    assert response.status_code == 200, response.text
    count = response.json()["input_tokens"]
    assert isinstance(count, int) and count > 0


@pytest.mark.parametrize(
    ("name", "item"),
    [("codex_responses_tool_call", "function_call"), ("codex_responses_tool_result", "message")],
)
def test_codex_requests_as_recorded_stream_through_the_gateway(
    name: str, item: str, stack: Stack
) -> None:
    start = len(stack.upstream.exchanges)
    response = _replay(stack, name)
    assert response.status_code == 200, response.text
    events = parse_responses_sse(response.text)
    kinds = [event["type"] for event in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
    done = [e["item"]["type"] for e in events if e["type"] == "response.output_item.done"]
    assert item in done
    (sent,) = _chat_requests(stack.upstream, start, "coder")
    if item == "function_call":
        assert "exec_command" in [tool["function"]["name"] for tool in sent["tools"]]
    else:
        assert sent["messages"][-1]["role"] == "tool"
        assert "marker-from-tool" in json.dumps(sent["messages"][-1]["content"])
