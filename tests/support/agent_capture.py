"""Record what Claude Code and Codex CLI really send, into ``tests/fixtures/agents/``.

    .venv/bin/python -m tests.support.agent_capture        # after bash tests/setup-agents.sh

Each CLI does one task with a shell tool round trip against :class:`AgentRecorder` on
127.0.0.1: ``claude -p`` and ``codex exec`` in a temporary home. Claude Code's background call
to its small model (the session title) and its ``count_tokens`` calls come only from an
interactive session, which runs under tmux when tmux is installed (a prompt, then ``/context``).
Every fixture is one request: method, path, query, headers (secrets left out, the port made
``PORT``) and the JSON body, for the gateway's surfaces to be checked against.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.agent_clis import (
    CLAUDE,
    claude_env,
    codex_env,
    missing_clis,
    run_claude,
    run_codex,
)
from tests.support.agent_recorder import AgentRecorder
from tests.support.servers import serve_in_thread

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "agents"
PROMPT = "Run the shell command that writes marker.txt, then say what it printed."
COMMAND = "echo marker-from-tool > marker.txt; cat marker.txt"


def _fixture(exchange: dict[str, Any], port: int, client: str, how: str) -> dict[str, Any]:
    headers = dict(exchange["headers"])
    if "host" in headers:
        headers["host"] = headers["host"].replace(str(port), "PORT")
    return {"client": client, "captured": how, **exchange, "headers": headers}


def _wait(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def _interactive_claude(recorder: AgentRecorder, url: str, scratch: Path) -> None:
    """A prompt, then ``/context`` (which counts tokens), in a tmux session of its own."""
    home, work = scratch / "claude-tui-home", scratch / "claude-tui-work"
    home.mkdir()
    work.mkdir()
    env = claude_env(
        home, url, token="sk-capture", model="claude-sonnet-4-6", small_model="claude-haiku-4-5"
    )
    # The title call to the small model is "nonessential traffic": let it happen here.
    del env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"]
    (home / ".claude.json").write_text(
        json.dumps(
            {
                "hasCompletedOnboarding": True,
                "theme": "dark",
                "projects": {str(work): {"hasTrustDialogAccepted": True}},
            }
        )
    )
    session = f"agent-capture-{int(time.time())}"
    command = ["env", "-i", *(f"{k}={v}" for k, v in env.items()), "TERM=xterm-256color"]
    command += ["timeout", "--foreground", "300", str(CLAUDE), "--allowedTools", "Bash"]
    tmux = ["tmux", "-L", session]  # a server of its own: other tmux sessions stay untouched
    start = [*tmux, "new-session", "-d", "-s", session, "-x", "200", "-y", "50", "-c", str(work)]
    subprocess.run([*start, shlex.join(command)], check=True, timeout=10)

    def keys(*typed: str) -> None:
        for text in typed:
            subprocess.run([*tmux, "send-keys", "-t", session, text], check=True, timeout=10)
            time.sleep(0.7)

    def messages() -> int:
        return sum(e["path"].endswith("/messages") for e in recorder.exchanges)

    try:
        time.sleep(5)
        before = messages()
        keys(PROMPT, "Enter")
        if not _wait(lambda: messages() >= before + 3, 60):
            print("interactive claude: the prompt did not finish", file=sys.stderr)
        keys("/context", "Enter")
        if not _wait(
            lambda: any(e["path"].endswith("count_tokens") for e in recorder.exchanges), 30
        ):
            print("interactive claude: /context counted no tokens", file=sys.stderr)
        time.sleep(3)
        keys("Escape", "/exit", "Enter")
        time.sleep(2)
    finally:
        subprocess.run([*tmux, "kill-server"], timeout=10, check=False)


def main() -> int:
    reason = missing_clis()
    if reason:
        print(reason, file=sys.stderr)
        return 1
    pins = json.loads((ROOT / "tests/agents/package.json").read_text())["dependencies"]
    claude_client = f"claude-code {pins['@anthropic-ai/claude-code']}"
    codex_client = f"codex-cli {pins['@openai/codex']}"
    fixtures: dict[str, dict[str, Any]] = {}
    recorder = AgentRecorder(command=COMMAND, text="Done.")
    with (
        tempfile.TemporaryDirectory(prefix="agent-capture-") as name,
        serve_in_thread(recorder) as url,
    ):
        scratch = Path(name)
        port = int(url.rsplit(":", 1)[1])

        home, work = scratch / "claude-home", scratch / "claude-work"
        home.mkdir()
        work.mkdir()
        env = claude_env(
            home, url, token="sk-capture", model="claude-sonnet-4-6", small_model="claude-haiku-4-5"
        )
        result = run_claude(PROMPT, cwd=work, env=env)
        print("claude -p:", result.returncode, result.stdout.strip()[:200])
        how = "claude -p PROMPT --allowedTools Bash"
        sent = [e for e in recorder.exchanges if e["method"] != "HEAD"]
        names = ["claude_code_messages_tool_call", "claude_code_messages_tool_result"]
        for fixture_name, exchange in zip(names, sent, strict=False):
            fixtures[fixture_name] = _fixture(exchange, port, claude_client, how)
        start = len(recorder.exchanges)
        home, work = scratch / "claude-default-home", scratch / "claude-default-work"
        home.mkdir()
        work.mkdir()
        env = claude_env(home, url, token="sk-capture", model=None, small_model="claude-haiku-4-5")
        result = run_claude(PROMPT, cwd=work, env=env)
        print("claude -p (its default model):", result.returncode, result.stdout.strip()[:200])
        how = "claude -p PROMPT --allowedTools Bash, no ANTHROPIC_MODEL"
        sent = [e for e in recorder.exchanges[start:] if e["method"] != "HEAD"]
        names = ["claude_code_default_model_tool_call", "claude_code_default_model_tool_result"]
        for fixture_name, exchange in zip(names, sent, strict=False):
            fixtures[fixture_name] = _fixture(exchange, port, claude_client, how)
        hello = next((e for e in recorder.exchanges if e["method"] == "HEAD"), None)
        if hello:
            fixtures["claude_code_head_api_hello"] = _fixture(hello, port, claude_client, how)

        if shutil.which("tmux"):
            start = len(recorder.exchanges)
            _interactive_claude(recorder, url, scratch)
            how = "claude (interactive, under tmux): a prompt, then /context"
            later = recorder.exchanges[start:]
            small = [e for e in later if (e["body"] or {}).get("model") == "claude-haiku-4-5"]
            if small:
                fixtures["claude_code_small_model_title"] = _fixture(
                    small[0], port, claude_client, how
                )
            counts = [e for e in later if e["path"].endswith("/count_tokens")]
            if counts:
                fixtures["claude_code_count_tokens"] = _fixture(counts[0], port, claude_client, how)
            with_tools = [e for e in counts if (e["body"] or {}).get("tools")]
            if with_tools:
                fixtures["claude_code_count_tokens_tools"] = _fixture(
                    with_tools[0], port, claude_client, how
                )
        else:
            print("no tmux: the small-model and count_tokens fixtures are kept as they are")

        start = len(recorder.exchanges)
        home, work = scratch / "codex-home", scratch / "codex-work"
        home.mkdir()
        work.mkdir()
        env = codex_env(home, url + "/v1", key="sk-capture", model="gpt-5-codex")
        result = run_codex(PROMPT, cwd=work, env=env)
        print("codex exec:", result.returncode, result.stdout.strip()[:200])
        how = "codex exec --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox PROMPT"
        sent = recorder.exchanges[start:]
        names = ["codex_responses_tool_call", "codex_responses_tool_result"]
        for fixture_name, exchange in zip(names, sent, strict=False):
            fixtures[fixture_name] = _fixture(exchange, port, codex_client, how)

    OUT.mkdir(parents=True, exist_ok=True)
    for fixture_name, fixture in fixtures.items():
        path = OUT / f"{fixture_name}.json"
        path.write_text(json.dumps(fixture, indent=1, ensure_ascii=False) + "\n")
        print("wrote", path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
